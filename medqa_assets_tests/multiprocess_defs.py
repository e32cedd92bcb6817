"""The platform's definitions, unchanged, on Dagster's multiprocess executor.

What ``MEDQA_EXECUTOR=multiprocess`` selects (checked in ``test_executors``), as a module of its
own: a test process has usually imported ``medqa_assets.definitions`` already, with the default
executor, and step processes import this module by name.
"""

import dagster as dg

from medqa_assets import definitions as base

defs = dg.Definitions(
    assets=base.defs.assets,
    jobs=base.defs.jobs,
    sensors=base.defs.sensors,
    resources=base.defs.resources,
    loggers=base.defs.loggers,
    executor=dg.multi_or_in_process_executor,
)

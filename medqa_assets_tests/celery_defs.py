"""The platform's definitions, unchanged, on dagster-celery's executor (used by the Celery tests).

Same assets, jobs, sensor and resources as ``medqa_assets.definitions``; only the executor
differs, and its broker comes from the run config (``execution.config``), so the job code does
not know which executor runs it. Workers import this module by name
(``medqa_assets_tests.celery_defs``), so the repository root must be on their ``PYTHONPATH``.
"""

import dagster as dg
from dagster_celery import celery_executor

from medqa_assets import definitions as base

defs = dg.Definitions(
    assets=base.defs.assets,
    jobs=base.defs.jobs,
    sensors=base.defs.sensors,
    resources=base.defs.resources,
    executor=celery_executor,
)

"""Everything Dagster loads: assets, checks, jobs, sensors and resources of every stage."""

import dagster as dg

from medqa_assets.console import COMPACT_LOGGING_RUN_CONFIG, compact_console_logger, exit_on_user_error
from medqa_assets.executors import executor_from_env
from medqa_assets.medquad.assets import medquad_clean, medquad_raw
from medqa_assets.resources import build_resources
from medqa_assets.retraining.assets import (
    consumed_logs_sensor,
    raw_logs,
    raw_logs_sensor,
    raw_retention,
    raw_retention_schedule,
    retraining_data,
    retraining_etl,
    retraining_housekeeping,
)
from medqa_assets.settings import ConfigurationError, Settings
from medqa_assets.splitting.assets import build_splitting_assets

# A bad setting stops loading with one line naming the variable (MEDQA_VERBOSE=1 for the traceback).
with exit_on_user_error(ConfigurationError):
    settings = Settings.from_env()
    executor = executor_from_env()
offline_assets = [medquad_raw, medquad_clean, *build_splitting_assets(settings)]

offline_etl = dg.define_asset_job(
    "offline_etl",
    selection=dg.AssetSelection.assets(*offline_assets),
    description="MedQuAD from its source to validated splits and production sets, in one run.",
    config=COMPACT_LOGGING_RUN_CONFIG,
)

defs = dg.Definitions(
    assets=[*offline_assets, raw_logs, retraining_data],
    jobs=[offline_etl, retraining_etl, retraining_housekeeping, raw_retention],
    sensors=[raw_logs_sensor, consumed_logs_sensor],
    schedules=[raw_retention_schedule],
    resources=build_resources(),
    executor=executor,
    loggers={"console": compact_console_logger},
)

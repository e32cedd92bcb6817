"""Everything Dagster loads: assets, checks, jobs, sensors and resources of every stage."""

from __future__ import annotations

import dagster as dg

from medqa_assets.medquad.assets import medquad_clean, medquad_raw
from medqa_assets.resources import build_resources
from medqa_assets.settings import Settings
from medqa_assets.splitting.assets import build_splitting_assets

settings = Settings.from_env()
offline_assets = [medquad_raw, medquad_clean, *build_splitting_assets(settings)]

offline_etl = dg.define_asset_job(
    "offline_etl",
    selection=dg.AssetSelection.assets(*offline_assets),
    description="MedQuAD from its source to validated splits and production sets, in one run.",
)

defs = dg.Definitions(
    assets=offline_assets,
    jobs=[offline_etl],
    resources=build_resources(),
)

"""Dagster resources, configured from the environment in one place.

No secret is a config field: credentials stay in the environment and reach the S3 client
only, so they never show in the Dagster UI, run config or event metadata.
"""

import contextlib
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pandas as pd

from medqa_assets.lineage import MlflowLineageResource
from medqa_assets.settings import Settings
from medqa_assets.storage.layout import MEDQUAD_CLEAN, MEDQUAD_RAW, object_key_for_asset
from medqa_assets.storage.object_store import ObjectStore, StoreError


class ObjectStoreResource(dg.ConfigurableResource):
    """The object store named by ``MEDQA_STORE_URL`` (local directory or ``s3://``)."""

    store_url: str | None = None  # overrides MEDQA_STORE_URL, e.g. in tests

    def get_store(self) -> ObjectStore:
        settings = Settings.from_env()
        if self.store_url:
            settings = Settings(**{**settings.__dict__, "store_url": self.store_url})
        return ObjectStore.from_settings(settings)


_PARQUET_KEYS = {MEDQUAD_RAW, MEDQUAD_CLEAN}


class ObjectStoreIOManager(dg.ConfigurableIOManager):
    """Stores each offline asset at its contract key: Parquet for MedQuAD, JSON Lines for splits."""

    store: ObjectStoreResource

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        store = self.store.get_store()
        key = object_key_for_asset(list(context.asset_key.path))
        with store_failures():
            data = store.write_parquet(key, obj) if key in _PARQUET_KEYS else store.write_jsonl(key, obj)
        context.add_output_metadata({"uri": dg.MetadataValue.path(store.uri(key)), "bytes": len(data)})

    def load_input(self, context: dg.InputContext) -> Any:
        store = self.store.get_store()
        key = object_key_for_asset(list(context.asset_key.path))
        with store_failures():
            if not store.exists(key):
                raise dg.Failure(
                    f"{context.asset_key.to_user_string()} is not in the store at {store.uri(key)}; materialize it "
                    "first (job offline_etl) or check MEDQA_STORE_URL"
                )
            return store.read_parquet(key) if key in _PARQUET_KEYS else store.read_jsonl(key)


@contextlib.contextmanager
def store_failures() -> Iterator[None]:
    """Report store problems as one clear Dagster failure (the message names the setting)."""
    try:
        yield
    except StoreError as error:
        raise dg.Failure(str(error)) from error


def build_resources() -> dict[str, Any]:
    store = ObjectStoreResource()
    return {"store": store, "io_manager": ObjectStoreIOManager(store=store), "mlflow": MlflowLineageResource()}

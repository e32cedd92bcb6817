"""Dagster resources, configured from the environment in one place.

No secret is a config field: credentials stay in the environment and reach the S3 client
only, so they never show in the Dagster UI, run config or event metadata.
"""

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self

import dagster as dg
import pandas as pd
from pydantic import PrivateAttr

from medqa_assets.lineage import MlflowLineageResource
from medqa_assets.settings import Settings
from medqa_assets.storage.layout import MEDQUAD_CLEAN, MEDQUAD_RAW, object_key_for_asset
from medqa_assets.storage.object_store import ObjectStore, StoreError, frame_to_jsonl


class ObjectStoreResource(dg.ConfigurableResource):
    """The object store named by ``MEDQA_STORE_URL`` (local directory or ``s3://``)."""

    store_url: str | None = None  # overrides MEDQA_STORE_URL, e.g. in tests

    def get_store(self) -> ObjectStore:
        settings = Settings.from_env()
        if self.store_url:
            settings = Settings(**{**settings.__dict__, "store_url": self.store_url})
        return ObjectStore.from_settings(settings)


_PARQUET_KEYS = {MEDQUAD_RAW, MEDQUAD_CLEAN}


@dataclass(frozen=True)
class JsonLinesFrame:
    """An asset output for :class:`ObjectStoreIOManager`: a frame with its JSON Lines, serialized
    once, so the bytes whose sha256 the asset reports are the bytes the manager stores."""

    frame: pd.DataFrame
    data: bytes

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Self:
        return cls(frame, frame_to_jsonl(frame))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class ObjectStoreIOManager(dg.ConfigurableIOManager):
    """Stores each offline asset at its contract key: Parquet for MedQuAD, JSON Lines for splits.

    A step running in the same process as the step that stored its input (the default in-process
    executor) gets the stored frame itself rather than reading back what was just written; a step
    in another process (multiprocess, Celery) reads the store. Each run initializes the manager
    afresh, so a frame never outlives its run.
    """

    store: ObjectStoreResource
    _stored_frames: dict[str, pd.DataFrame] = PrivateAttr(default_factory=dict)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._stored_frames = {}

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._stored_frames.clear()

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | JsonLinesFrame) -> None:
        store = self.store.get_store()
        key = object_key_for_asset(list(context.asset_key.path))
        frame = obj.frame if isinstance(obj, JsonLinesFrame) else obj
        with store_failures():
            if key in _PARQUET_KEYS:
                data = store.write_parquet(key, frame)
            elif isinstance(obj, JsonLinesFrame):
                data = obj.data
                store.write_bytes(key, data)
            else:
                data = store.write_jsonl(key, frame)
        self._stored_frames[key] = frame
        context.add_output_metadata({"uri": dg.MetadataValue.path(store.uri(key)), "bytes": len(data)})

    def load_input(self, context: dg.InputContext) -> Any:
        key = object_key_for_asset(list(context.asset_key.path))
        stored = self._stored_frames.pop(key, None)
        if stored is not None:
            return stored
        store = self.store.get_store()
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

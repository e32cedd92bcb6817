"""The offline graph's stored outputs, pinned byte for byte on the bundled default source.

The digests were computed by the code at git revision 5be0ee1 (before splits were serialized
once and frames handed from step to step in memory), so a speed-up that changes a byte of a split,
a production set or the split metadata fails here.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import dagster as dg
import pytest

from medqa_assets.lineage import MlflowLineageResource
from medqa_assets.medquad.assets import medquad_clean, medquad_raw
from medqa_assets.resources import build_resources
from medqa_assets.settings import Settings
from medqa_assets.splitting.assets import build_splitting_assets
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

PINNED_SHA256 = {
    "data/dataset-split/training/training.json": "ebbe3244ddc25a6a254b375fc53c30b5b727d96a2585a340549f66e7912e6eac",
    "data/dataset-split/validation/validation.json": "43852a7200a4c126a32351487fd2b4e89406c83d9e8f13efba65332e1b3cf587",
    "data/dataset-split/evaluation/testing.json": "3bdcc534d0a7afc5de6ff3f04112884483962490cce88db154941d0d796ceb0d",
    "data/production/sets/set1.json": "2245317b4e2908b9db4bf3889bf51278cfda743a08fc087ebfc68a9527987a05",
    "data/production/sets/set2.json": "be75a54ea46ad478286fc4f5d25e1b8d4d9889ccbd1c919b24c49010e46eb019",
    "data/production/sets/set3.json": "e06ce9f89658cabe5167b564def19a43f341c965ef869423f350a1361432c315",
    "data/production/sets/set4.json": "59d4545c5f63d11a59f0cbe283fa83e5a92ee4860720a95377c6e53d09238ef3",
    "data/production/sets/set5.json": "dfa79700d9c138eff9bff8b46959fc3bb5c1f4f2ee44e270671a131b777d4340",
}
# data/dataset-split/metadata.json without its "created" timestamp, as ObjectStore.write_json writes it
PINNED_METADATA_SHA256 = "264fbdf39a295118edd0a215527b1c449f268dd5f060ae8c6497e62e26e7ccfe"
PRODUCTION_SET_KEYS = [key for key in PINNED_SHA256 if key.startswith(layout.PRODUCTION_SETS_PREFIX)]


@pytest.fixture
def bundled_source(local_store_env, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    """The default source (no MEDQA_MEDQUAD_SOURCE) and five production sets, on a local store."""
    monkeypatch.delenv("MEDQA_MEDQUAD_SOURCE", raising=False)
    monkeypatch.delenv("MEDQA_PRODUCTION_SETS", raising=False)
    return ObjectStore.from_settings()


def offline_assets() -> list[dg.AssetsDefinition]:
    return [medquad_raw, medquad_clean, *build_splitting_assets(Settings.from_env())]


def materialize(selection: dg.AssetSelection | None = None) -> None:
    resources = {**build_resources(), "mlflow": MlflowLineageResource(enabled=False)}
    assert dg.materialize(offline_assets(), resources=resources, selection=selection).success


def digests(store: ObjectStore, keys: list[str]) -> dict[str, str]:
    return {key: hashlib.sha256(store.read_bytes(key)).hexdigest() for key in keys}


def test_outputs_match_the_pinned_bytes_without_reading_back(
    bundled_source: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    read_bytes = ObjectStore.read_bytes

    def counted_read(store: ObjectStore, key: str) -> bytes:
        reads.append(key)
        return read_bytes(store, key)

    monkeypatch.setattr(ObjectStore, "read_bytes", counted_read)
    materialize()
    assert reads == []  # in one process every step got its input from the step before, not the store
    monkeypatch.undo()

    store = bundled_source
    assert digests(store, list(PINNED_SHA256)) == PINNED_SHA256
    metadata = store.read_json(layout.SPLIT_METADATA)
    assert {name: entry["sha256"] for name, entry in metadata["files"].items()} == {
        name: PINNED_SHA256[key] for name, key in layout.SPLIT_KEYS.items()
    }
    del metadata["created"]
    as_written = json.dumps(metadata, indent=2, sort_keys=True, default=str).encode()
    assert hashlib.sha256(as_written).hexdigest() == PINNED_METADATA_SHA256


def test_a_step_in_a_later_run_reads_its_input_from_the_store(bundled_source: ObjectStore) -> None:
    """What a step in another process (multiprocess or Celery executor) sees: the stored split."""
    materialize()
    for key in PRODUCTION_SET_KEYS:
        bundled_source.delete(key)
    materialize(selection=dg.AssetSelection.groups("production_sets"))
    assert digests(bundled_source, PRODUCTION_SET_KEYS) == {key: PINNED_SHA256[key] for key in PRODUCTION_SET_KEYS}


def test_the_offline_graph_does_not_import_mlflow_until_lineage_is_recorded() -> None:
    """Importing MLflow costs about 2 s: only recording lineage (``lineage.enabled``) may pay it."""
    code = (
        "import sys, medqa_assets.definitions, medqa_assets.splitting.assets, medqa_assets.lineage; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"

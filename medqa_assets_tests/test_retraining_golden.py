"""The retraining output is byte-identical to what the transform wrote before it was rewritten for
speed (git revision 5be0ee1), for a batch that exercises every branch: shapes, damage, white space,
timestamps, statuses, personal data, sizes, duplicates, a second version with appends and copies.

On a mismatch, set MEDQA_GOLDEN_DUMP=<dir> to keep this tree's outputs for a diff against the old ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from medqa_assets.retraining import build, reading
from medqa_assets.storage.object_store import ObjectStore
from medqa_assets_tests.golden_logs import build_golden_versions

EXPECTED = json.loads((Path(__file__).parent / "data" / "retraining_golden.json").read_text())["sha256"]


@pytest.mark.parametrize("piece_bytes", [None, 4096], ids=["whole-files", "in-pieces"])
def test_output_is_byte_identical_to_the_code_before_the_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece_bytes: int | None
) -> None:
    if piece_bytes:  # large JSON Lines snapshots are read in line-aligned pieces
        monkeypatch.setattr(reading, "PIECE_BYTES", piece_bytes)
    outputs = build_golden_versions(ObjectStore(str(tmp_path / "store")))
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in outputs.items()}
    if dump := os.environ.get("MEDQA_GOLDEN_DUMP"):
        for name, data in outputs.items():
            target = Path(dump, name.replace("/", "__"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    assert sorted(digests) == sorted(EXPECTED)
    assert [name for name in sorted(EXPECTED) if digests[name] != EXPECTED[name]] == []


def test_worker_processes_and_small_chunks_write_the_same_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks transformed in worker processes, many of them, merge into the same bytes: the
    de-duplication across chunks keeps the first of each pair in manifest order. (Quarantined
    records are listed chunk by chunk with their position within it, so they are compared as a
    set without it.)"""
    monkeypatch.setattr(build, "INLINE_BYTES", 0)
    monkeypatch.setenv(build.WORKERS_VAR, "2")
    with monkeypatch.context() as patch:
        patch.setattr(build, "CHUNK_BYTES", 8 * 1024)
        patch.setattr(build.chunked, "__defaults__", (8 * 1024,))
        chunked = build_golden_versions(ObjectStore(str(tmp_path / "chunked")))
    pooled = build_golden_versions(ObjectStore(str(tmp_path / "pooled")))
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in pooled.items()}
    assert [name for name in sorted(EXPECTED) if digests[name] != EXPECTED[name]] == []
    for name, data in pooled.items():
        if name.endswith("records.jsonl"):
            pooled_records = sorted(json.dumps({**json.loads(line), "index": None}) for line in data.splitlines())
            chunked_records = sorted(
                json.dumps({**json.loads(line), "index": None}) for line in chunked[name].splitlines()
            )
            assert pooled_records == chunked_records
        else:
            assert chunked[name] == data, name

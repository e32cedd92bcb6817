"""Building one retraining version from its manifest: the I/O around the pure transforms.

Steps, each safe to repeat after a crash at any point:
1. transform every manifest file (chunks in parallel worker processes), verifying sha256;
2. write ``retraining_data.json`` (streamed, atomic), the quarantined records and ``metadata.json``;
3. move the raw files to the archive (unparseable ones to quarantine, with a reason file);
4. advance ``version_tracker.txt``; 5. close the claim.
A re-run finds each file wherever step 3 left it and produces byte-identical output.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from typing import Any

import orjson

from medqa_assets.retraining.quality import answer_quality
from medqa_assets.retraining.transforms import (
    BatchAccumulator,
    ChunkResult,
    FileOutcome,
    dropped_fields,
    transform_files,
)
from medqa_assets.retraining.versioning import (
    advance_tracker,
    archived_key,
    close_claim,
    locate,
    quarantined_file_key,
)
from medqa_assets.settings import Settings
from medqa_assets.storage.layout import (
    production_set_key,
    quarantine_prefix,
    retraining_data_key,
    retraining_metadata_key,
    version_number,
)
from medqa_assets.storage.object_store import ObjectStore

CHUNK_BYTES = 16 * 1024 * 1024
INLINE_BYTES = 8 * 1024 * 1024  # below this a pool costs more than it saves
WORKERS_VAR = "MEDQA_RETRAINING_WORKERS"
MOVE_THREADS = 16


class ManifestMismatch(RuntimeError):
    """A claimed file is gone or changed since its version was claimed."""


@dataclass(frozen=True)
class StoreSpec:
    """What a worker process needs to open the same store (credentials come from its environment)."""

    url: str
    endpoint_url: str | None

    def open(self) -> ObjectStore:
        settings = Settings.from_env()
        return ObjectStore(
            self.url,
            endpoint_url=self.endpoint_url,
            key=settings.aws_access_key_id,
            secret=settings.aws_secret_access_key,
        )


def _read_verified(store: ObjectStore, version: str, entry: dict[str, Any]) -> tuple[str, bytes]:
    try:  # the usual case first: one GET, no existence probes
        data = store.read_bytes(entry["key"])
    except FileNotFoundError:
        location = locate(store, version, entry["key"])  # after a partial finish it may have moved
        if location is None:
            raise ManifestMismatch(f"{entry['key']} of {version} is in neither raw, archive nor quarantine") from None
        data = store.read_bytes(location)
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ManifestMismatch(f"{entry['key']} of {version} changed after it was claimed (sha256 differs)")
    return entry["key"], data


def process_chunk(spec: StoreSpec, version: str, entries: list[dict[str, Any]]) -> ChunkResult:
    """Worker entry point: read, verify and transform one chunk of manifest files."""
    store = spec.open()
    return transform_files([_read_verified(store, version, entry) for entry in entries])


def chunked(entries: list[dict[str, Any]], chunk_bytes: int = CHUNK_BYTES) -> list[list[dict[str, Any]]]:
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for entry in entries:
        if chunks[-1] and size + entry["size"] > chunk_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += entry["size"]
    return [chunk for chunk in chunks if chunk]


def worker_count() -> int:
    raw = os.environ.get(WORKERS_VAR, "").strip()
    return max(1, int(raw)) if raw.isdigit() else max(1, os.cpu_count() or 1)


def _chunk_results(store: ObjectStore, version: str, entries: list[dict[str, Any]]) -> Iterator[ChunkResult]:
    """Chunk results in manifest order, from a process pool when the batch is large."""
    spec = StoreSpec(store.url if not store.is_s3 else f"s3://{store.root}", store.endpoint_url)
    chunks = chunked(entries)
    workers = min(worker_count(), len(chunks))
    if workers <= 1 or sum(e["size"] for e in entries) < INLINE_BYTES:
        for chunk in chunks:
            yield process_chunk(spec, version, chunk)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        futures = [pool.submit(process_chunk, spec, version, chunk) for chunk in chunks]
        for future in futures:
            yield future.result()


def _reference_answers(store: ObjectStore, set_names: set[str]) -> dict[tuple[str, str], str]:
    references = {}
    for name in sorted(set_names):
        try:
            frame = store.read_jsonl(production_set_key(name), columns=["row_id", "answer"])
        except FileNotFoundError:
            continue
        references.update({(name, str(r)): a for r, a in zip(frame["row_id"], frame["answer"], strict=True)})
    return references


def build_version(
    store: ObjectStore, version: str, manifest: dict[str, Any], log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Build, finish and publish ``version``; returns its metadata. Idempotent."""
    entries = manifest["files"]
    accumulator = BatchAccumulator()
    rejections: Counter = Counter()
    pii: Counter = Counter()
    fields_seen: set[str] = set()
    quarantined_records: list[bytes] = []
    outcomes = []
    evaluation_rows: list[tuple[str, str, str]] = []
    ts_min = ts_max = None
    output_key = retraining_data_key(version)
    digest = hashlib.sha256()
    size = 0
    with store.open_write(output_key) as output:
        for done, chunk in enumerate(_chunk_results(store, version, entries), start=1):
            lines, positions = accumulator.unique_lines(chunk)
            data = b"".join(lines)
            output.write(data)
            digest.update(data)
            size += len(data)
            kept_positions = {p: i for i, p in enumerate(positions)}
            evaluation_rows += [(s, r, a) for p, s, r, a in chunk.evaluation_rows if p in kept_positions]
            rejections.update(chunk.rejections)
            pii.update(chunk.pii)
            fields_seen |= chunk.fields_seen
            quarantined_records += [orjson.dumps(r) + b"\n" for r in chunk.rejected]
            outcomes += chunk.files
            ts_min = min(filter(None, [ts_min, chunk.ts_min]), default=None)
            ts_max = max(filter(None, [ts_max, chunk.ts_max]), default=None)
            log(f"{version}: chunk {done} done, {accumulator.records_out} records out so far")

    if quarantined_records:
        store.write_bytes(quarantine_prefix(version) + "records.jsonl", b"".join(quarantined_records))
    references = _reference_answers(store, {s for s, _, _ in evaluation_rows})
    pairs = [(answer, references[(s, r)]) for s, r, answer in evaluation_rows if (s, r) in references]
    sha_by_key = {e["key"]: e for e in entries}
    records_in = sum(o.records for o in outcomes)
    metadata = {
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "records_in": records_in,
        "records_out": accumulator.records_out,
        "quarantined": sum(rejections.values()),
        "duplicates_removed": accumulator.duplicates,
        "rejections": dict(sorted(rejections.items())),
        "pii_redactions": dict(sorted(pii.items())),
        "source_files": [
            {
                "key": o.key,
                "name": os.path.basename(o.key),
                "size": sha_by_key[o.key]["size"],
                "sha256": sha_by_key[o.key]["sha256"],
                "records": o.records,
                "status": "quarantined" if o.unparseable_reason else "archived",
                "reason": o.unparseable_reason,
            }
            for o in outcomes
        ],
        "files_quarantined": sum(1 for o in outcomes if o.unparseable_reason),
        "output": {"key": output_key, "sha256": digest.hexdigest(), "rows": accumulator.records_out, "bytes": size},
        "fields_dropped": dropped_fields(fields_seen),
        "answer_quality": answer_quality(pairs),
        "timestamps": {"min": ts_min, "max": ts_max},
        "accounting": "records_in = records_out + quarantined + duplicates_removed",
    }
    assert records_in == metadata["records_out"] + metadata["quarantined"] + metadata["duplicates_removed"]
    store.write_json(retraining_metadata_key(version), metadata)

    def retire(outcome: FileOutcome) -> None:
        if outcome.unparseable_reason:
            target = quarantined_file_key(version, outcome.key)
            store.write_json(target + ".reason.json", {"reason": outcome.unparseable_reason, "detail": outcome.detail})
        else:
            target = archived_key(version, outcome.key)
        store.move(outcome.key, target)

    # Every file must be retired before the tracker moves; on S3 a move is two requests, so overlap them.
    with ThreadPoolExecutor(max_workers=MOVE_THREADS if store.is_s3 else 1) as pool:
        list(pool.map(retire, outcomes))
    tracker = advance_tracker(store, version_number(version))
    close_claim(store, version)  # last: an open claim marks a version whose finish must be repeated
    log(f"{version}: {records_in} in, {accumulator.records_out} out; tracker at {tracker}")
    return metadata

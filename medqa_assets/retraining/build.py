"""Building one retraining version from its manifest: the I/O around the pure transforms.

Steps, each safe to repeat after a crash at any point:
1. transform every snapshot the manifest lists (chunks in parallel worker processes, large
   JSON Lines files in pieces so memory stays bounded), verifying sha256;
2. write ``retraining_data.json`` (streamed, atomic), the quarantined records and ``metadata.json``;
3. move unusable snapshots from the archive to quarantine, with a reason file;
4. record in the ledger what each raw file gave; advance ``version_tracker.txt`` (compare-and-set,
   only forward, only for a version with rows); close the claim;
5. retire raw files that were consumed completely and left alone long enough.
A re-run finds each snapshot wherever step 3 left it and produces byte-identical output.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import numpy as np
import orjson

from medqa_assets.evaluation.versions import evaluate_version
from medqa_assets.retraining.control import (
    completed_claim_key,
    published_versions,
)
from medqa_assets.retraining.publish import publish, quarantine_snapshots
from medqa_assets.retraining.reading import (
    UNREADABLE_FILE,
    WorkItem,
    batches,
    read_items,
    work_items,
)
from medqa_assets.retraining.transforms import (
    DEFAULT_NON_ANSWERS,
    BatchAccumulator,
    ChunkResult,
    FileOutcome,
    dropped_fields,
    selected_lines,
    sorted_identities,
    transform_files,
)
from medqa_assets.settings import Settings
from medqa_assets.storage.layout import (
    identities_key,
    quarantine_prefix,
    quarantined_file_key,
    retraining_data_key,
    retraining_metadata_key,
    version_number,
)
from medqa_assets.storage.object_store import ObjectStore

CHUNK_BYTES = 16 * 1024 * 1024
PROGRESS_EVERY_SECONDS = 10.0  # a progress line at most this often: each is an event in Dagster's log
INLINE_BYTES = 8 * 1024 * 1024  # below this a pool costs more than it saves
WORKERS_VAR = "MEDQA_RETRAINING_WORKERS"


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


def transform_chunk(store: ObjectStore, items: list[WorkItem], non_answers: tuple[str, ...]) -> ChunkResult:
    """Read, verify and transform one chunk of snapshots or pieces."""
    files = [(item.key, data, item.end is not None) for item, data in read_items(store, items)]
    return transform_files(files, non_answers)


def process_chunk(spec: StoreSpec, items: list[WorkItem], non_answers: tuple[str, ...]) -> ChunkResult:
    """Worker entry point: :func:`transform_chunk` on the worker's own connection to the store."""
    return transform_chunk(spec.open(), items, non_answers)


def chunked(items: list[WorkItem], chunk_bytes: int = CHUNK_BYTES) -> list[list[WorkItem]]:
    """Consecutive items of about ``chunk_bytes`` per chunk, the unit a worker transforms."""
    return list(batches(items, chunk_bytes))


def worker_count() -> int:
    raw = os.environ.get(WORKERS_VAR, "").strip()
    return max(1, int(raw)) if raw.isdigit() else max(1, os.cpu_count() or 1)


def _chunk_results(
    store: ObjectStore, chunks: list[list[WorkItem]], workers_started: Callable[[], None]
) -> Iterator[ChunkResult]:
    """Chunk results in manifest order, from a process pool when the batch is large.
    ``workers_started`` is called once no more processes will be forked."""
    spec = StoreSpec(store.url if not store.is_s3 else f"s3://{store.root}", store.endpoint_url)
    configured = Settings.from_env().non_answer_texts
    non_answers = DEFAULT_NON_ANSWERS if configured is None else configured
    workers = min(worker_count(), len(chunks))
    if workers <= 1 or sum(item.nbytes for chunk in chunks for item in chunk) < INLINE_BYTES:
        workers_started()
        for chunk in chunks:
            yield transform_chunk(store, chunk, non_answers)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        pending: deque[Future[ChunkResult]] = deque()
        for index, chunk in enumerate(chunks):  # a bounded window: finished chunks never pile up in memory
            pending.append(pool.submit(process_chunk, spec, chunk, non_answers))
            if index == 0:  # the first submission forks every worker
                workers_started()
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _merge_outcomes(outcomes: list[FileOutcome]) -> dict[str, FileOutcome]:
    """One outcome per raw file (a large file was transformed in pieces)."""
    merged: dict[str, FileOutcome] = {}
    for outcome in outcomes:
        known = merged.setdefault(outcome.key, FileOutcome(key=outcome.key))
        known.records += outcome.records
        known.unparseable_reason = known.unparseable_reason or outcome.unparseable_reason
        known.detail = known.detail or outcome.detail
    return merged


def earlier_identities(store: ObjectStore, version: str) -> np.ndarray:
    """Identities of every record the versions before ``version`` accounted for (all of them:
    16 bytes per record, on disk and in memory while a version is built), sorted."""
    number = version_number(version)
    parts = []
    for name in published_versions(store):
        if version_number(name) >= number:
            continue
        try:
            parts.append(store.read_bytes(identities_key(name)))
        except FileNotFoundError:
            continue
    return sorted_identities(b"".join(parts))


def is_published(store: ObjectStore, version: str) -> bool:
    return store.exists(completed_claim_key(version)) and store.exists(retraining_metadata_key(version))


def build_version(
    store: ObjectStore,
    version: str,
    manifest: dict[str, Any],
    log: Callable[[str], None] = print,
    workers_started: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Build, finish and publish ``version``; returns its metadata. Idempotent.

    ``workers_started`` is called once no more worker processes will be forked (threads may start)."""
    if is_published(store, version):
        log(f"{version} is already published; nothing to do")
        return store.read_json(retraining_metadata_key(version))
    entries = manifest["files"]
    items = work_items(store, version, entries)
    accumulator = BatchAccumulator(published=earlier_identities(store, version))
    rejections: Counter = Counter()
    pii: Counter = Counter()
    fields_seen: set[str] = set()
    quarantined_records: list[bytes] = []
    outcomes: list[FileOutcome] = []
    evaluation_rows: list[tuple[str, str, str]] = []  # (set, row id, answer) of every fresh record
    kept_row_ids: list[str] = []
    question_parts: list[np.ndarray] = []
    ts_min = ts_max = None
    output_key = retraining_data_key(version)
    digest = hashlib.sha256()
    size = 0
    with store.open_write(output_key) as output:
        chunks = chunked(items)
        next_report = time.monotonic() + PROGRESS_EVERY_SECONDS
        for done, chunk in enumerate(_chunk_results(store, chunks, workers_started), start=1):
            positions = accumulator.unique_positions(chunk)
            data = selected_lines(chunk, positions)
            output.write(data)
            digest.update(data)
            size += len(data)
            if chunk.evaluation_rows:
                kept = np.zeros(len(chunk.line_ends), dtype=bool)
                kept[positions] = True
                evaluation_rows += [(s, r, a) for p, s, r, a in chunk.evaluation_rows if accumulator.fresh[p]]
                kept_row_ids += [r for p, _, r, _ in chunk.evaluation_rows if kept[p]]
            question_parts.append(chunk.questions[positions])
            new_rejected = accumulator.new_rejected(chunk)
            rejections.update(r["reason"] for r in new_rejected)
            rejections[UNREADABLE_FILE] += chunk.rejections.get(UNREADABLE_FILE, 0)
            pii.update(chunk.pii)
            fields_seen |= chunk.fields_seen
            quarantined_records += [orjson.dumps(r) + b"\n" for r in new_rejected]
            outcomes += chunk.files
            ts_min = min(filter(None, [ts_min, chunk.ts_min]), default=None)
            ts_max = max(filter(None, [ts_max, chunk.ts_max]), default=None)
            if time.monotonic() >= next_report or done == len(chunks):
                log(f"{version}: {done} of {len(chunks)} chunks done, {accumulator.records_out} records out so far")
                next_report = time.monotonic() + PROGRESS_EVERY_SECONDS

    if quarantined_records:
        store.write_bytes(quarantine_prefix(version) + "records.jsonl", b"".join(quarantined_records))
    questions = np.concatenate(question_parts) if question_parts else np.empty(0, dtype=np.uint64)
    evaluation = evaluate_version(store, version, evaluation_rows, questions, kept_row_ids, log)
    by_key = _merge_outcomes(outcomes)
    records_in = sum(o.records for o in by_key.values())
    metadata = {
        "version": version,
        "created": manifest.get("created"),
        "records_in": records_in,
        "records_out": accumulator.records_out,
        "has_rows": accumulator.records_out > 0,  # False: archived, but version_tracker.txt does not move to it
        "quarantined": sum(rejections.values()),
        "duplicates_removed": accumulator.duplicates,
        "already_published": accumulator.already_published,
        "rejections": dict(sorted((k, v) for k, v in rejections.items() if v)),
        "pii_redactions": dict(sorted(pii.items())),
        "source_files": [_source_file(entry, by_key.get(entry["key"])) for entry in entries],
        "files_quarantined": sum(1 for o in by_key.values() if o.unparseable_reason),
        "missing_files": [e["key"] for e in entries if e["status"] == "missing"],
        "output": {"key": output_key, "sha256": digest.hexdigest(), "rows": accumulator.records_out, "bytes": size},
        "fields_dropped": dropped_fields(fields_seen),
        "answer_quality": evaluation.answer_quality,
        "contamination": evaluation.contamination,
        "timestamps": {"min": ts_min, "max": ts_max},
        "accounting": "records_in = records_out + quarantined + duplicates_removed + already_published",
    }
    assert records_in == (
        metadata["records_out"]
        + metadata["quarantined"]
        + metadata["duplicates_removed"]
        + metadata["already_published"]
    )
    store.write_bytes(identities_key(version), accumulator.identities_bytes())
    quarantine_snapshots(
        store,
        [
            (
                entry["archive_key"],
                quarantined_file_key(version, entry["key"]),
                {"reason": o.unparseable_reason, "detail": o.detail},
            )
            for entry in entries
            if entry["status"] == "snapshot" and (o := by_key.get(entry["key"])) is not None and o.unparseable_reason
        ],
    )
    store.write_json(retraining_metadata_key(version), metadata)
    publish(store, version, entries, metadata["records_out"], log)
    return metadata


def _source_file(entry: dict[str, Any], outcome: FileOutcome | None) -> dict[str, Any]:
    status = entry["status"]
    if status == "snapshot":
        status = "quarantined" if outcome and outcome.unparseable_reason else "archived"
    return {
        "key": entry["key"],
        "name": os.path.basename(entry["key"]),
        "bytes": [entry.get("start", 0), entry.get("end", 0)],
        "size": entry.get("size", 0),
        "sha256": entry.get("sha256"),
        "records": outcome.records if outcome else 0,
        "status": status,
        "reason": (outcome.unparseable_reason if outcome else None) or entry.get("reason"),
    }

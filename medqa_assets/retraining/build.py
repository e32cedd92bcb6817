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
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import numpy as np
import orjson

from medqa_assets.evaluation.versions import evaluate_version
from medqa_assets.retraining.control import (
    Consumed,
    advance_tracker,
    close_claim,
    completed_claim_key,
    published_versions,
    read_ledger,
    update_ledger,
)
from medqa_assets.retraining.transforms import (
    DEFAULT_NON_ANSWERS,
    BatchAccumulator,
    ChunkResult,
    FileOutcome,
    dropped_fields,
    sorted_identities,
    transform_files,
)
from medqa_assets.settings import Settings
from medqa_assets.storage.layout import (
    archive_prefix,
    identities_key,
    quarantine_prefix,
    quarantined_file_key,
    retraining_data_key,
    retraining_metadata_key,
    version_number,
)
from medqa_assets.storage.object_store import ObjectStore

CHUNK_BYTES = 16 * 1024 * 1024
INLINE_BYTES = 8 * 1024 * 1024  # below this a pool costs more than it saves
WORKERS_VAR = "MEDQA_RETRAINING_WORKERS"


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


PIECE_BYTES = 32 * 1024 * 1024  # a JSON Lines snapshot larger than this is transformed in pieces
UNREADABLE_FILE = "unreadable_file"


@dataclass(frozen=True)
class WorkItem:
    """One manifest snapshot, or a line-aligned piece ``[start, end)`` of a large JSON Lines one."""

    key: str  # the raw key the records came from
    snapshot: str  # the archive key of the snapshot
    sha256: str
    size: int
    start: int = 0
    end: int | None = None  # None: the whole snapshot, verified by sha256

    @property
    def nbytes(self) -> int:
        return (self.end if self.end is not None else self.size) - self.start


def snapshot_locations(store: ObjectStore, version: str, entries: list[dict[str, Any]]) -> dict[str, str]:
    """Raw key -> where its snapshot is now: in the archive, or already moved to quarantine by an
    earlier attempt. Two listings for the whole version, not a lookup per file."""
    present = {info.key for info in store.list(archive_prefix(version))}
    present |= {info.key for info in store.list(quarantine_prefix(version) + "files/")}
    locations = {}
    for entry in entries:
        if entry.get("status") != "snapshot":
            continue
        moved = quarantined_file_key(version, entry["key"])
        location = entry["archive_key"] if entry["archive_key"] in present else moved if moved in present else None
        if location is None:
            raise ManifestMismatch(f"the snapshot of {entry['key']} for {version} is in neither archive nor quarantine")
        locations[entry["key"]] = location
    return locations


def work_items(store: ObjectStore, version: str, entries: list[dict[str, Any]]) -> list[WorkItem]:
    items = []
    locations = snapshot_locations(store, version, entries)
    for entry in entries:
        if entry["key"] not in locations:
            continue
        item = WorkItem(entry["key"], locations[entry["key"]], entry["sha256"], entry["size"])
        if item.size <= PIECE_BYTES or store.read_range(item.snapshot, 0, 64).lstrip()[:1] == b"[":
            items.append(item)
            continue
        items += [
            WorkItem(item.key, item.snapshot, item.sha256, item.size, start, min(start + PIECE_BYTES, item.size))
            for start in range(0, item.size, PIECE_BYTES)
        ]
    return items


def _read_piece(store: ObjectStore, item: WorkItem) -> bytes:
    """The lines that start inside ``[start, end)`` of a JSON Lines snapshot."""
    end = item.end if item.end is not None else item.size
    data = store.read_range(item.snapshot, max(0, item.start - 1), end)
    if item.start > 0:
        newline = data.find(b"\n")  # the byte before start is included: a line starting at start is kept
        data = data[newline + 1 :] if newline >= 0 else b""
    position = end
    while data and not data.endswith(b"\n") and position < item.size:  # finish the last line
        block = store.read_range(item.snapshot, position, min(position + 1024 * 1024, item.size))
        newline = block.find(b"\n")
        data += block[: newline + 1] if newline >= 0 else block
        position += len(block)
        if newline >= 0:
            break
    return data


def _read_verified(store: ObjectStore, item: WorkItem) -> bytes:
    if item.end is not None:
        return _read_piece(store, item)
    data = store.read_bytes(item.snapshot)
    if hashlib.sha256(data).hexdigest() != item.sha256:
        raise ManifestMismatch(f"the snapshot of {item.key} ({item.snapshot}) changed after it was taken")
    return data


def process_chunk(spec: StoreSpec, items: list[WorkItem], non_answers: tuple[str, ...]) -> ChunkResult:
    """Worker entry point: read, verify and transform one chunk of snapshots or pieces."""
    store = spec.open()
    files = [(item.key, _read_verified(store, item), item.end is not None) for item in items]
    return transform_files(files, non_answers)


def chunked(items: list[WorkItem], chunk_bytes: int = CHUNK_BYTES) -> list[list[WorkItem]]:
    chunks: list[list[WorkItem]] = [[]]
    size = 0
    for item in items:
        if chunks[-1] and size + item.nbytes > chunk_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += item.nbytes
    return [chunk for chunk in chunks if chunk]


def worker_count() -> int:
    raw = os.environ.get(WORKERS_VAR, "").strip()
    return max(1, int(raw)) if raw.isdigit() else max(1, os.cpu_count() or 1)


def _chunk_results(store: ObjectStore, items: list[WorkItem]) -> Iterator[ChunkResult]:
    """Chunk results in manifest order, from a process pool when the batch is large."""
    spec = StoreSpec(store.url if not store.is_s3 else f"s3://{store.root}", store.endpoint_url)
    configured = Settings.from_env().non_answer_texts
    non_answers = DEFAULT_NON_ANSWERS if configured is None else configured
    chunks = chunked(items)
    workers = min(worker_count(), len(chunks))
    if workers <= 1 or sum(item.nbytes for item in items) < INLINE_BYTES:
        for chunk in chunks:
            yield process_chunk(spec, chunk, non_answers)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        futures = [pool.submit(process_chunk, spec, chunk, non_answers) for chunk in chunks]
        for future in futures:
            yield future.result()


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
    store: ObjectStore, version: str, manifest: dict[str, Any], log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Build, finish and publish ``version``; returns its metadata. Idempotent."""
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
        for done, chunk in enumerate(_chunk_results(store, items), start=1):
            lines, positions = accumulator.unique_lines(chunk)
            data = b"".join(lines)
            output.write(data)
            digest.update(data)
            size += len(data)
            kept_positions = set(positions)
            evaluation_rows += [(s, r, a) for p, s, r, a in chunk.evaluation_rows if accumulator.fresh[p]]
            kept_row_ids += [r for p, _, r, _ in chunk.evaluation_rows if p in kept_positions]
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
            log(f"{version}: chunk {done} done, {accumulator.records_out} records out so far")

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
    for entry in entries:  # unusable snapshots go to quarantine, with the reason (never their content)
        outcome = by_key.get(entry["key"])
        if entry["status"] == "snapshot" and outcome is not None and outcome.unparseable_reason:
            target = quarantined_file_key(version, entry["key"])
            store.write_json(target + ".reason.json", {"reason": outcome.unparseable_reason, "detail": outcome.detail})
            store.move(entry["archive_key"], target)
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


def publish(
    store: ObjectStore, version: str, entries: list[dict[str, Any]], rows: int, log: Callable[[str], None]
) -> None:
    """Record consumption, move the tracker, close the claim, retire what is fully consumed."""
    consumed = {
        entry["key"]: Consumed(
            end=entry["end"],
            token=entry.get("token"),
            head_sha256=entry.get("head_sha256") or "",
            tail_sha256=entry.get("tail_sha256") or "",
            version=version,
            consumed_at=float(entry.get("mtime") or 0.0),
        )
        for entry in entries
        if entry["status"] in ("snapshot", "nothing_new") and entry.get("head_sha256")
    }
    update_ledger(store, upserts=consumed)
    if rows:
        tracker = advance_tracker(store, version_number(version))
    else:
        tracker = None
        log(f"{version} has no rows: published for the record, but the tracker does not move to it")
    close_claim(store, version)  # after the ledger: a closed claim's files must be known as consumed
    retired = retire(store, Settings.from_env().retire_after_seconds)
    log(
        f"{version}: published; tracker at {tracker if tracker is not None else 'unchanged'}; "
        f"{retired} raw file(s) retired"
    )


def retire(store: ObjectStore, retire_after_seconds: float, now: float | None = None) -> int:
    """Delete raw files that versions consumed completely and that nobody wrote for a while.

    A file is deleted only if it is still exactly what was consumed (conditional delete), so a
    writer that appended meanwhile keeps its file and its new bytes for the next version.
    """
    now = time.time() if now is None else now
    removals = set()
    retired = 0
    for key, entry in read_ledger(store).items():
        try:
            info = store.info(key)
        except FileNotFoundError:
            removals.add(key)
            continue
        if info.etag != entry.token or info.size != entry.end:
            continue  # changed since: the next version takes the rest
        if info.mtime is not None and now - info.mtime < retire_after_seconds:
            continue
        if entry.token and store.delete_if(key, entry.token):
            removals.add(key)
            retired += 1
    if removals:
        update_ledger(store, removals=removals)
    return retired

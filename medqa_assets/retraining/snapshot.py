"""Version N's first step: take its claim and snapshot the claimed bytes into the archive.

What a version claimed is what it processes: each claimed raw file is copied, by byte range,
to ``production_data_archive/vN/<its path below raw/>`` and the build reads only those copies.
A file that grows after the snapshot keeps its new bytes for a later version; one replaced
after it is taken again whole later; one deleted before it is reported as missing while the
rest of the version is published. The raw file itself is only removed once it has been
consumed completely and left alone for ``MEDQA_RETIRE_AFTER_SECONDS`` (see ``publish.retire``).
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from medqa_assets.retraining.control import (
    FINGERPRINT_BYTES,
    Consumed,
    DecidedFile,
    Decision,
    MalformedControl,
    read_claim,
    read_control_state,
    read_ledger,
    take_claim,
)
from medqa_assets.storage.layout import (
    ARCHIVE_PREFIX,
    CONTROL_PREFIX,
    QUARANTINE_PREFIX,
    RAW_LOGS_PREFIX,
    TRANSFORMED_PREFIX,
    archive_prefix,
    archived_key,
    claim_key,
    manifest_key,
    quarantine_prefix,
    version_number,
)
from medqa_assets.storage.object_store import ConcurrentUpdate, ObjectInfo, ObjectStore

TAIL_LOOKBACK_BYTES = 1024 * 1024
SNAPSHOT_ATTEMPTS = 5
SNAPSHOT_THREADS = 16
TEMP_FILE_AGE_S = 3600.0


class VersionRefused(RuntimeError):
    """This run must not build the version; the message says why and what to do."""


def sweep_leftovers(store: ObjectStore, version: str) -> int:
    """Temporary files and unfinished uploads that killed runs left behind (older than an hour)."""
    prefixes = [CONTROL_PREFIX, TRANSFORMED_PREFIX, archive_prefix(version), quarantine_prefix(version)]
    if store.is_s3:  # unfinished multipart uploads are listed per prefix, cheaply
        prefixes = [CONTROL_PREFIX, TRANSFORMED_PREFIX, ARCHIVE_PREFIX, QUARANTINE_PREFIX]
    return sum(store.sweep_temporary_files(prefix, TEMP_FILE_AGE_S) for prefix in prefixes)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprints(store: ObjectStore, key: str, end: int) -> tuple[str, str]:
    """sha256 of the first and of the last ``FINGERPRINT_BYTES`` of bytes ``[0, end)``."""
    head = store.read_range(key, 0, min(end, FINGERPRINT_BYTES)) if end else b""
    tail = store.read_range(key, max(0, end - FINGERPRINT_BYTES), end) if end else b""
    return _sha256(head), _sha256(tail)


def _consumed_prefix_intact(store: ObjectStore, key: str, size: int, consumed: Consumed | None) -> bool:
    """True if the file still starts with the bytes an earlier version consumed (it was appended to)."""
    if consumed is None or size < consumed.end or consumed.end == 0:
        return False
    if store.read_range(key, 0, min(size, 64)).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        # A JSON array is rewritten, never appended to (its "]" moves). Its first bytes can still
        # match: a snapshot that raced a rewrite copied the first bytes of the newer, longer array.
        # Read it whole; records taken before count as already_published.
        return False
    return fingerprints(store, key, consumed.end) == (consumed.head_sha256, consumed.tail_sha256)


def _complete_end(store: ObjectStore, key: str, start: int, size: int) -> int:
    """Where to stop in a file that is still being written: after its last complete line."""
    window_start = max(start, size - TAIL_LOOKBACK_BYTES)
    tail = store.read_range(key, window_start, size)
    if tail[-1:] in (b"\n", b"]", b"}"):
        return size
    newline = tail.rfind(b"\n")
    return window_start + newline + 1 if newline >= 0 else start


def snapshot_file(
    store: ObjectStore,
    version: str,
    decided: DecidedFile,
    consumed: Consumed | None,
    settle_seconds: float,
    now: float | None = None,
    listed: ObjectInfo | None = None,
) -> dict[str, Any]:
    """Copy what is new in one claimed file to the archive; returns its manifest entry.

    ``listed``: the file as an S3 listing just saw it, for the first attempt instead of a lookup
    (the copy reads only the version with that ETag); a later attempt looks the file up again."""
    key = decided.key
    for _ in range(SNAPSHOT_ATTEMPTS):
        now_s = time.time() if now is None else now
        try:
            info, listed = listed or store.info(key), None
            start = consumed.end if _consumed_prefix_intact(store, key, info.size, consumed) else 0
            end = info.size
            still_written = info.mtime is not None and now_s - info.mtime < settle_seconds
            if end > start and still_written:
                end = _complete_end(store, key, start, end)
            entry: dict[str, Any] = {
                "key": key,
                "start": start,
                "end": end,
                "token": info.etag,
                "mtime": info.mtime,
            }
            if end == start and (start > 0 or info.size > 0):  # nothing new, or only a line being written
                head, tail = fingerprints(store, key, end) if end else (None, None)
                return {**entry, "status": "nothing_new", "size": 0, "head_sha256": head, "tail_sha256": tail}
            copied = store.copy_range(
                key,
                archived_key(version, key),
                start,
                end,
                token=info.etag,
                size=info.size,
                edge_bytes=FINGERPRINT_BYTES,
            )
            # fingerprints of the raw file's [0, end): from the bytes copied when they are all of it
            head, tail = (_sha256(copied.head), _sha256(copied.tail)) if start == 0 else fingerprints(store, key, end)
        except FileNotFoundError:
            return {"key": key, "status": "missing", "size": 0}
        except ConcurrentUpdate:
            continue  # replaced or truncated mid-copy: look again
        return {
            **entry,
            "status": "snapshot",
            "archive_key": archived_key(version, key),
            "size": copied.size,
            "sha256": copied.sha256,
            "head_sha256": head,
            "tail_sha256": tail,
        }
    # rewritten faster than it can be copied: left for a later version (no ledger entry, not missing)
    return {"key": key, "status": "busy", "size": 0, "reason": "kept changing while it was copied"}


def prepare_version(
    store: ObjectStore,
    version: str,
    decision: Decision | None,
    settle_seconds: float,
    log: Any = print,
) -> dict[str, Any]:
    """Take version N's claim and snapshot its files; returns the manifest. Idempotent: a re-run
    keeps the manifest (and so the creation time and bytes) of the first complete attempt."""
    removed = sweep_leftovers(store, version)
    if removed:
        log(f"{version}: removed {removed} temporary file(s) left by killed runs")
    try:
        return store.read_json(manifest_key(version))
    except FileNotFoundError:
        pass
    try:
        claim = read_claim(store, version)
    except MalformedControl as error:
        raise VersionRefused(f"the claim of {version} is malformed ({error}); it is not trusted") from None
    if claim is None:
        if decision is None:
            raise VersionRefused(
                f"{version} was not decided by raw_logs_sensor: retraining versions come from the sensor "
                "(or `medqa tick`), not from partitions added by hand; delete the partition and let the sensor run"
            )
        if decision.version != version:
            raise VersionRefused(f"the run's decision is for {decision.version}, not for {version}")
        if not take_claim(store, decision):
            raise VersionRefused(f"{version} was claimed by another tick's decision at the same time; this run stops")
        _withdraw_if_overlapping(store, decision)
        claim = decision
    elif decision is not None and decision.decision_id != claim.decision_id:
        raise VersionRefused(f"{version} was claimed by another tick's decision; this run stops")
    ledger = read_ledger(store)
    # S3: one listing instead of a lookup per file (each copy reads only the version listed)
    listing = {info.key: info for info in store.list(RAW_LOGS_PREFIX)} if store.is_s3 else {}
    # files are independent: on S3 each is several round trips, so overlap them
    with ThreadPoolExecutor(max_workers=SNAPSHOT_THREADS if store.is_s3 else 1) as pool:
        files = list(
            pool.map(
                lambda f: snapshot_file(
                    store, version, f, ledger.get(f.key), settle_seconds, listed=listing.get(f.key)
                ),
                claim.files,
            )
        )
    manifest = {
        "version": version,
        "decision_id": claim.decision_id,
        "created": claim.decided_at,
        "files": files,
        "missing": [f["key"] for f in files if f["status"] == "missing"],
    }
    store.write_json(manifest_key(version), manifest)
    return manifest


def _withdraw_if_overlapping(store: ObjectStore, mine: Decision) -> None:
    """Two sensors (a daemon and a `medqa tick`) may decide at once: the lower version keeps a
    file both named, the higher one withdraws its claim and stops."""
    number = version_number(mine.version)
    keys = set(mine.keys)
    for name, other in read_control_state(store).claims.items():
        if version_number(name) < number and keys & set(other.keys):
            store.delete(claim_key(mine.version))
            raise VersionRefused(f"{name}, claimed at the same time, already holds files of {mine.version}; stopping")

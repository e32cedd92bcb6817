"""Claims, versions and the tracker: how raw log files become exactly-once retraining versions.

A version starts as a *claim* ``retraining_data_raw/_claims/vN.json`` created with an
exclusive write, which both reserves the number N and lists the files that belong to it. A file
named by an open claim is never pending again. When the version is complete its files are moved
to the archive (or quarantine), the claim moves next to the version's output, and only then
does ``version_tracker.txt`` advance.

Only pending files and open claims are listed, never the archive, so a tick costs in proportion
to the work waiting, not to history.
"""

from __future__ import annotations

import contextlib
import posixpath
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from medqa_assets.storage.layout import (
    CLAIMS_PREFIX,
    RAW_LOGS_PREFIX,
    TRANSFORMED_PREFIX,
    VERSION_TRACKER,
    archive_prefix,
    claim_key,
    is_version_name,
    quarantine_prefix,
    version_name,
    version_number,
)
from medqa_assets.storage.object_store import ObjectInfo, ObjectStore

CLAIM_ATTEMPTS = 5


@dataclass(frozen=True)
class Claim:
    version: str
    files: list[dict[str, Any]]  # each {"key", "size"}
    created: str

    @property
    def keys(self) -> list[str]:
        return [f["key"] for f in self.files]


def read_tracker(store: ObjectStore) -> int:
    """The newest complete version number (0 when there is none)."""
    try:
        text = store.read_text(VERSION_TRACKER).strip()
    except FileNotFoundError:
        return 0
    return int(text) if text.isdigit() else 0


def advance_tracker(store: ObjectStore, number: int) -> int:
    """Move the tracker to ``number`` unless it is already at or past it (versions can finish out of order)."""
    current = read_tracker(store)
    if number > current:
        store.write_bytes(VERSION_TRACKER, f"{number}\n".encode())
        return number
    return current


def open_claims(store: ObjectStore, raw_listing: list[ObjectInfo] | None = None) -> dict[str, Claim]:
    listing = raw_listing if raw_listing is not None else store.list(CLAIMS_PREFIX)
    claims = {}
    for info in listing:
        if not info.key.startswith(CLAIMS_PREFIX) or not info.key.endswith(".json"):
            continue
        name = posixpath.basename(info.key)[: -len(".json")]
        if not is_version_name(name):
            continue
        with contextlib.suppress(FileNotFoundError):  # completed between listing and reading
            body = store.read_json(info.key)
            claims[name] = Claim(version=name, files=body["files"], created=body.get("created", ""))
    return claims


def pending_files(
    raw_listing: list[ObjectInfo], claims: dict[str, Claim], settle_seconds: float, now: float | None = None
) -> list[ObjectInfo]:
    """Raw log files that no claim names and that have not changed for ``settle_seconds``."""
    now = time.time() if now is None else now
    claimed = {key for claim in claims.values() for key in claim.keys}
    return [
        info
        for info in raw_listing
        if not info.key.startswith(CLAIMS_PREFIX)
        and info.key not in claimed
        and (info.mtime is None or now - info.mtime >= settle_seconds)
    ]


def highest_version(store: ObjectStore, claims: dict[str, Claim], known_versions: list[str] = ()) -> int:
    names = [*claims, *known_versions, *(d for d in store.list_dirs(TRANSFORMED_PREFIX) if is_version_name(d))]
    return max([read_tracker(store), *(version_number(n) for n in names)])


def claim_pending(
    store: ObjectStore, settle_seconds: float, known_versions: list[str] = (), max_files: int | None = None
) -> Claim | None:
    """Reserve the next version for every settled pending file; ``None`` if nothing is pending.

    Safe against concurrent callers: the claim is created exclusively, and a caller that loses
    the race (or finds its files claimed by a lower version) withdraws and looks again.
    """
    for _ in range(CLAIM_ATTEMPTS):
        listing = store.list(RAW_LOGS_PREFIX)
        claims = open_claims(store, listing)
        pending = pending_files(listing, claims, settle_seconds)
        if max_files:
            pending = pending[:max_files]
        if not pending:
            return None
        number = highest_version(store, claims, known_versions) + 1
        claim = Claim(
            version=version_name(number),
            files=[{"key": info.key, "size": info.size} for info in pending],
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        try:
            store.write_json(
                claim_key(claim.version),
                {"version": claim.version, "files": claim.files, "created": claim.created},
                exclusive=True,
            )
        except FileExistsError:
            continue
        if _lost_race(store, claim):
            store.delete(claim_key(claim.version))
            continue
        return claim
    return None


def _lost_race(store: ObjectStore, mine: Claim) -> bool:
    """True if a lower-numbered claim created concurrently names one of my files."""
    mine_keys = set(mine.keys)
    mine_number = version_number(mine.version)
    return any(
        version_number(name) < mine_number and mine_keys & set(other.keys) for name, other in open_claims(store).items()
    )


def read_claim(store: ObjectStore, version: str) -> Claim | None:
    """The claim of a version, open or already completed."""
    for key in (claim_key(version), f"{TRANSFORMED_PREFIX}{version}/claim.json"):
        with contextlib.suppress(FileNotFoundError):
            body = store.read_json(key)
            return Claim(version=version, files=body["files"], created=body.get("created", ""))
    return None


def archived_key(version: str, raw_key: str) -> str:
    return archive_prefix(version) + posixpath.basename(raw_key)


def quarantined_file_key(version: str, raw_key: str) -> str:
    return quarantine_prefix(version) + "files/" + posixpath.basename(raw_key)


def locate(store: ObjectStore, version: str, raw_key: str) -> str | None:
    """Where a claimed file is now: still raw, archived, or quarantined (after a partial finish)."""
    for key in (raw_key, archived_key(version, raw_key), quarantined_file_key(version, raw_key)):
        if store.exists(key):
            return key
    return None


def close_claim(store: ObjectStore, version: str) -> None:
    """Keep the claim next to the version's output and remove the open one (idempotent)."""
    open_key = claim_key(version)
    if store.exists(open_key):
        store.write_bytes(f"{TRANSFORMED_PREFIX}{version}/claim.json", store.read_bytes(open_key))
        store.delete(open_key)


def raw_log_listing(store: ObjectStore) -> list[ObjectInfo]:
    return store.list(RAW_LOGS_PREFIX)

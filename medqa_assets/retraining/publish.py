"""Publishing a built version: ledger, tracker, claim; and retiring raw files consumed completely."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from medqa_assets.retraining.control import (
    Consumed,
    advance_tracker,
    close_claim,
    read_ledger,
    update_ledger,
)
from medqa_assets.settings import Settings
from medqa_assets.storage.layout import version_number
from medqa_assets.storage.object_store import ObjectStore


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
    writer that appended meanwhile keeps its file and its new bytes for the next version. The
    ledger says when each file was last written as consumed; a later write would be later still,
    so a file written too recently is passed over without asking the store, and an old enough one
    is deleted without a lookup first: only a delete that did not happen costs one.
    """
    now = time.time() if now is None else now
    removals = set()
    retired = 0
    for key, entry in read_ledger(store).items():
        if now - entry.consumed_at < retire_after_seconds:
            continue
        if entry.token and store.delete_if(key, entry.token):
            removals.add(key)
            retired += 1
        elif not store.exists(key):
            removals.add(key)
        # else: changed since it was consumed, the next version takes the rest
    if removals:
        update_ledger(store, removals=removals)
    return retired


def quarantine_snapshots(store: ObjectStore, moves: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Unusable snapshots go from the archive to quarantine, each with a reason file (never their
    content). ``moves``: (archive key, quarantine key, reason). Safe to repeat: a moved file stays moved."""
    for _, target, reason in moves:
        store.write_json(target + ".reason.json", reason)
    store.move_many([(archive_key, target) for archive_key, target, _ in moves])

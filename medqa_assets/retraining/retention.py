"""Raw inputs are kept for a bounded time: snapshots of production logs under
``production_data_archive/vN/`` and whole files quarantined as unusable
(``retraining_data_quarantine/vN/files/``) hold personal data as the apps logged it.

After ``MEDQA_RAW_RETENTION_DAYS`` they are deleted, for published versions only (a version still
being built needs its snapshots). What lineage needs stays: the manifest under
``retraining_data_transformed/vN/`` keeps every file's name, byte range, size and sha256, and
``retention.json`` beside it records what was deleted and when.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medqa_assets.retraining.build import is_published
from medqa_assets.retraining.control import published_versions
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectInfo, ObjectStore

SECONDS_PER_DAY = 86_400


def retention_key(version: str) -> str:
    return f"{layout.TRANSFORMED_PREFIX}{version}/retention.json"


def raw_inputs(store: ObjectStore, version: str) -> list[ObjectInfo]:
    """The raw inputs version N keeps: its snapshots and its quarantined whole files."""
    quarantined = [
        item
        for item in store.list(layout.quarantine_prefix(version) + "files/")
        if not item.key.endswith(".reason.json")  # the reason is the platform's own text, not log content
    ]
    return store.list(layout.archive_prefix(version)) + quarantined


@dataclass
class RetentionReport:
    deleted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # version -> [{key, size}]

    @property
    def files(self) -> int:
        return sum(len(items) for items in self.deleted.values())

    @property
    def bytes(self) -> int:
        return sum(item["size"] for items in self.deleted.values() for item in items)


def delete_expired_raw_inputs(
    store: ObjectStore,
    retention_days: int,
    now: float | None = None,
    log: Callable[[str], None] = print,
) -> RetentionReport:
    """Delete raw inputs of published versions older than ``retention_days`` (by their own time)."""
    now = time.time() if now is None else now
    cutoff = now - retention_days * SECONDS_PER_DAY
    report = RetentionReport()
    for version in published_versions(store):
        if not is_published(store, version):
            continue  # still being built (or failed): its snapshots are its input
        expired = [item for item in raw_inputs(store, version) if item.mtime is not None and item.mtime < cutoff]
        if not expired:
            continue
        store.delete_many([item.key for item in expired])
        entries = [{"key": item.key, "size": item.size} for item in expired]
        report.deleted[version] = entries
        key = retention_key(version)
        previous = store.read_json(key) if store.exists(key) else {"deleted": []}
        store.write_json(
            key,
            {
                "retention_days": retention_days,
                "last_run": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                "deleted": previous.get("deleted", []) + [{**e, "deleted_at": int(now)} for e in entries],
                "note": "raw inputs past retention; the manifest keeps each file's name, size and sha256",
            },
        )
        log(f"{version}: deleted {len(entries)} raw input file(s) older than {retention_days} days")
    return report

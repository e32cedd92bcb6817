"""Where a version's snapshots are and how their bytes are read (verified, or a line-aligned piece)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from medqa_assets.storage.layout import archive_prefix, quarantine_prefix, quarantined_file_key
from medqa_assets.storage.object_store import ObjectStore


class ManifestMismatch(RuntimeError):
    """A claimed file is gone or changed since its version was claimed."""


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


def read_verified(store: ObjectStore, item: WorkItem) -> bytes:
    if item.end is not None:
        return _read_piece(store, item)
    data = store.read_bytes(item.snapshot)
    if hashlib.sha256(data).hexdigest() != item.sha256:
        raise ManifestMismatch(f"the snapshot of {item.key} ({item.snapshot}) changed after it was taken")
    return data


def read_items(store: ObjectStore, items: list[WorkItem]) -> Iterator[tuple[WorkItem, bytes]]:
    """Every item's verified bytes, in order."""
    for item in items:
        yield item, read_verified(store, item)

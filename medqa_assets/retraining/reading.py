"""Where a version's snapshots are and how their bytes are read (verified, or a line-aligned piece)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from medqa_assets.storage.layout import archive_prefix, quarantine_prefix, quarantined_file_key
from medqa_assets.storage.object_store import ObjectStore


class ManifestMismatch(RuntimeError):
    """A claimed file is gone or changed since its version was claimed."""


PIECE_BYTES = 32 * 1024 * 1024  # a JSON Lines snapshot larger than this is transformed in pieces
PREFETCH_BYTES = 32 * 1024 * 1024  # S3: fetched at once, and one more such batch ahead
LINE_SLACK_BYTES = 64 * 1024  # read past a piece's end: its last line usually ends in there
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


def _piece_range(item: WorkItem) -> tuple[int, int]:
    """The bytes to fetch for a piece: from the byte before ``start`` (is a line starting there?)
    to a little past ``end``, where its last line most likely ends."""
    end = item.end if item.end is not None else item.size
    return max(0, item.start - 1), min(end + LINE_SLACK_BYTES, item.size)


def _cut_piece(store: ObjectStore, item: WorkItem, data: bytes) -> bytes:
    """The lines that start inside ``[start, end)`` of a JSON Lines snapshot, from the bytes of
    :func:`_piece_range` (read further only when the last line is longer than the slack)."""
    end = item.end if item.end is not None else item.size
    offset, fetched_end = _piece_range(item)
    first = 0
    if item.start > 0:  # a line starting at start is kept: the byte before it is a newline
        newline = data.find(b"\n", 0, end - offset)
        if newline < 0:
            return b""
        first = newline + 1
    if first >= end - offset:
        return b""
    newline = data.find(b"\n", end - 1 - offset)  # the end of the last line starting before end
    if newline >= 0:
        return data[first : newline + 1]
    piece = [data[first:]]
    position = fetched_end
    while position < item.size:  # a last line longer than the slack: finish it
        block = store.read_range(item.snapshot, position, min(position + 1024 * 1024, item.size))
        newline = block.find(b"\n")
        piece.append(block[: newline + 1] if newline >= 0 else block)
        position += len(block)
        if newline >= 0:
            break
    return b"".join(piece)


def _request(item: WorkItem) -> tuple[str, int | None, int | None]:
    return (item.snapshot, None, None) if item.end is None else (item.snapshot, *_piece_range(item))


def _verified(store: ObjectStore, item: WorkItem, data: bytes) -> bytes:
    if item.end is not None:
        return _cut_piece(store, item, data)
    if hashlib.sha256(data).hexdigest() != item.sha256:
        raise ManifestMismatch(f"the snapshot of {item.key} ({item.snapshot}) changed after it was taken")
    return data


def read_verified(store: ObjectStore, item: WorkItem) -> bytes:
    """One item's bytes: a whole snapshot checked against its sha256, or a piece's lines."""
    return _verified(store, item, store.read_many([_request(item)])[0])


def batches(items: list[WorkItem], window_bytes: int) -> Iterator[list[WorkItem]]:
    """Consecutive items of about ``window_bytes`` together (an item larger than that alone)."""
    batch: list[WorkItem] = []
    size = 0
    for item in items:
        if batch and size + item.nbytes > window_bytes:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item.nbytes
    if batch:
        yield batch


def read_items(store: ObjectStore, items: list[WorkItem]) -> Iterator[tuple[WorkItem, bytes]]:
    """Every item's verified bytes, in order.

    On S3 each request waits a round trip, so items are fetched in batches of about
    ``PREFETCH_BYTES`` (side by side within a batch), the next batch while the caller works on
    this one: at most two batches in memory. Locally: one plain read after the other.
    """
    if not store.is_s3:
        for item in items:
            yield item, read_verified(store, item)
        return
    windows = list(batches(items, PREFETCH_BYTES))

    def fetch(batch: list[WorkItem]) -> list[bytes]:
        return store.read_many([_request(item) for item in batch])

    if not windows:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as prefetch:
        following = prefetch.submit(fetch, windows[0])
        for index, batch in enumerate(windows):
            data = following.result()
            if index + 1 < len(windows):
                following = prefetch.submit(fetch, windows[index + 1])
            for item, raw in zip(batch, data, strict=True):
                yield item, _verified(store, item, raw)

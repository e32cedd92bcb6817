"""The S3 fast paths of retraining against a real SeaweedFS: background part uploads, prefetched
reads, batched moves and deletes, copies without probes; each as safe as the slow path it replaced."""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from medqa_assets.retraining import reading
from medqa_assets.retraining.control import Consumed, update_ledger
from medqa_assets.retraining.publish import quarantine_snapshots, retire
from medqa_assets.retraining.reading import ManifestMismatch, WorkItem, read_items
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import UPLOAD_PART_BYTES, ConcurrentUpdate, ObjectStore


@pytest.fixture
def store(s3_store_env: object) -> ObjectStore:
    return ObjectStore.from_settings()


@pytest.fixture
def sent(store: ObjectStore) -> Iterator[Counter]:
    """The S3 operations the store sends (``HeadObject``, ``CopyObject``, ...), counted by botocore's
    own event hook on the client, whichever s3fs call path sends them."""
    store.exists("warm-up")  # the client exists once a first request went out
    seen: Counter = Counter()

    def count(model: object, **_: object) -> None:
        seen[model.name] += 1  # type: ignore[attr-defined]

    events = store.fs.s3.meta.events
    events.register("before-call.s3", count)
    seen.clear()
    try:
        yield seen
    finally:
        events.unregister("before-call.s3", count)


class Boom(RuntimeError):
    pass


def _uploads(store: ObjectStore, key: str) -> list[dict]:
    bucket, _, name = store.path(key).partition("/")
    listing = store.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=name)
    return [upload for upload in listing.get("Uploads", []) if upload["Key"] == name]


def _uploaded_parts(store: ObjectStore, key: str) -> int:
    bucket, _, name = store.path(key).partition("/")
    return sum(
        len(store.fs.call_s3("list_parts", Bucket=bucket, Key=name, UploadId=u["UploadId"]).get("Parts", []))
        for u in _uploads(store, key)
    )


def test_parts_upload_while_the_caller_writes_and_an_error_keeps_the_previous_object(store: ObjectStore) -> None:
    key = "out/retraining_data.json"
    store.write_bytes(key, b"the previous version\n")
    with pytest.raises(Boom), store.open_write(key) as output:
        for _ in range(2):
            output.write(os.urandom(UPLOAD_PART_BYTES))
        deadline = time.monotonic() + 30
        while _uploaded_parts(store, key) < 1:  # the stream is still open: parts went out on their own
            assert time.monotonic() < deadline, "no part was uploaded before the stream was closed"
            time.sleep(0.05)
        raise Boom
    assert store.read_bytes(key) == b"the previous version\n"
    assert _uploads(store, key) == []  # aborted: no parts left behind on the server


def test_a_multipart_stream_arrives_whole_and_in_order(store: ObjectStore) -> None:
    data = os.urandom(2 * UPLOAD_PART_BYTES + 12345)
    with store.open_write("out/big.bin") as output:
        for first in range(0, len(data), 3_000_000):  # writes that do not line up with parts
            output.write(data[first : first + 3_000_000])
    assert store.read_bytes("out/big.bin") == data
    with store.open_write("out/small.bin") as output:  # below one part: a single PUT
        output.write(b"small")
    assert store.read_bytes("out/small.bin") == b"small"
    assert _uploads(store, "out/big.bin") == []


def _snapshots(store: ObjectStore, count: int) -> list[WorkItem]:
    items = []
    for index in range(count):
        data = b"".join(b'{"question": "q%d-%d", "answer": "a"}\n' % (index, line) for line in range(50 + index))
        key = f"data/production/production_data_archive/v1/log-{index:03d}.jsonl"
        store.write_bytes(key, data)
        items.append(WorkItem(f"raw/log-{index:03d}.jsonl", key, hashlib.sha256(data).hexdigest(), len(data)))
    return items


def test_prefetched_reads_arrive_verified_in_order_and_the_next_batch_is_fetched_meanwhile(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = _snapshots(store, 12)
    monkeypatch.setattr(reading, "PREFETCH_BYTES", 3 * items[0].size)  # about three files per batch
    events: list[tuple[str, str]] = []
    original = ObjectStore.read_many

    def recording(self: ObjectStore, requests: list[tuple[str, int | None, int | None]]) -> list[bytes]:
        events.append(("fetch", requests[0][0]))
        return original(self, requests)

    monkeypatch.setattr(ObjectStore, "read_many", recording)
    got = []
    for item, data in read_items(store, items):
        events.append(("use", item.snapshot))
        got.append((item, data))
        time.sleep(0.02)  # the caller's work, during which the next batch comes in
    fetches = [position for position, (kind, _) in enumerate(events) if kind == "fetch"]
    assert [item for item, _ in got] == items
    assert [data for _, data in got] == [store.read_bytes(item.snapshot) for item in items]
    assert 3 <= len(fetches) < len(items)  # batches, not one request after the other
    second = events[fetches[1]][1]
    first_batch = items[: [i.snapshot for i in items].index(second)]
    assert fetches[1] < events.index(("use", first_batch[-1].snapshot))  # fetched ahead of the caller


def test_a_snapshot_changed_after_it_was_taken_stops_the_reads_in_order(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = _snapshots(store, 8)
    monkeypatch.setattr(reading, "PREFETCH_BYTES", 3 * items[0].size)
    store.write_bytes(items[5].snapshot, b'{"question": "forged", "answer": "x"}\n')
    seen = []
    with pytest.raises(ManifestMismatch, match="log-005"):
        for item, _ in read_items(store, items):
            seen.append(item)
    assert seen == items[:5]


def test_pieces_of_a_large_jsonl_snapshot_are_whole_lines_that_cover_it(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [b'{"n": %d, "pad": "%s"}\n' % (n, b"x" * (n * 37 % 300)) for n in range(400)]
    lines[200] = b'{"n": 200, "pad": "' + b"y" * 5000 + b'"}\n'  # longer than the slack read past a piece
    data = b"".join(lines)
    key = "data/production/production_data_archive/v1/big.jsonl"
    store.write_bytes(key, data)
    monkeypatch.setattr(reading, "PIECE_BYTES", 4000)
    monkeypatch.setattr(reading, "LINE_SLACK_BYTES", 500)
    monkeypatch.setattr(reading, "PREFETCH_BYTES", 9000)
    entry = {
        "key": layout.RAW_LOGS_PREFIX + "big.jsonl",
        "status": "snapshot",
        "archive_key": key,
        "sha256": "-",
        "size": len(data),
    }
    items = reading.work_items(store, "v1", [entry])
    assert len(items) > 10 and all(item.end is not None for item in items)
    pieces = [piece for _, piece in read_items(store, items)]
    assert b"".join(pieces) == data
    assert all(piece.endswith(b"\n") for piece in pieces if piece)
    assert pieces == [reading.read_verified(store, item) for item in items]  # local path, same cut


def _put(store: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        store.write_bytes(key, key.encode())


def test_moves_are_copies_and_one_batched_delete_and_safe_to_repeat(store: ObjectStore, sent: Counter) -> None:
    sources = [f"archive/v1/f{i}.json" for i in range(6)]
    targets = [f"quarantine/v1/files/f{i}.json" for i in range(6)]
    _put(store, sources)
    sent.clear()
    store.move_many(list(zip(sources[:2], targets[:2], strict=True)))  # a run killed after these two
    assert sent == {"CopyObject": 2, "DeleteObjects": 1}  # no existence probes
    store.move_many(list(zip(sources, targets, strict=True)))  # its re-run: two sources are gone already
    store.move_many(list(zip(sources, targets, strict=True)))  # and again: nothing left to move
    assert [store.read_bytes(t) for t in targets] == [s.encode() for s in sources]
    assert not any(store.exists(s) for s in sources)
    with pytest.raises(FileNotFoundError):
        store.move_many([("archive/v1/never.json", "quarantine/v1/files/never.json")])


def test_quarantine_moves_every_snapshot_with_its_reason(store: ObjectStore, sent: Counter) -> None:
    sources = [f"archive/v1/bad{i}.json" for i in range(4)]
    targets = [f"quarantine/v1/files/bad{i}.json" for i in range(4)]
    _put(store, sources)
    moves = [(s, t, {"reason": "not_json"}) for s, t in zip(sources, targets, strict=True)]
    sent.clear()
    quarantine_snapshots(store, moves)
    assert sent["DeleteObjects"] == 1 and sent["DeleteObject"] == sent["HeadObject"] == 0
    quarantine_snapshots(store, moves)  # a re-run after a crash
    assert all(store.read_json(t + ".reason.json") == {"reason": "not_json"} for t in targets)
    assert all(store.exists(t) and not store.exists(s) for s, t in zip(sources, targets, strict=True))


def test_delete_many_batches_and_ignores_absent_keys(
    store: ObjectStore, sent: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medqa_assets.storage.object_store as object_store

    monkeypatch.setattr(object_store, "DELETE_BATCH", 2)
    keys = [f"old/{i}.jsonl" for i in range(3)]
    _put(store, keys)
    sent.clear()
    store.delete_many([*keys, "old/never-there.jsonl"])
    assert sent == {"DeleteObjects": 2}
    assert store.list("old/") == []


def _consumed(store: ObjectStore, key: str, age_s: float) -> Consumed:
    info = store.info(key)
    return Consumed(
        end=info.size, token=info.etag, head_sha256="h", tail_sha256="t", version="v1", consumed_at=time.time() - age_s
    )


def test_retiring_asks_the_store_only_about_files_old_enough(store: ObjectStore, sent: Counter) -> None:
    fresh, old, appended = (f"{layout.RAW_LOGS_PREFIX}{n}.jsonl" for n in ("fresh", "old", "appended"))
    _put(store, [fresh, old, appended])
    update_ledger(
        store,
        upserts={
            fresh: _consumed(store, fresh, 0),
            old: _consumed(store, old, 3600),
            appended: _consumed(store, appended, 3600),
        },
    )
    store.write_bytes(appended, b"more lines since it was consumed")
    sent.clear()
    assert retire(store, retire_after_seconds=600) == 1
    # one conditional delete each for the old files, one lookup for the delete that did not happen
    # (changed, or gone?), one for the ledger's compare-and-set; none at all for the fresh file
    assert sent["DeleteObject"] == 2 and sent["HeadObject"] == 1 + 1
    assert store.exists(fresh) and store.exists(appended) and not store.exists(old)


def test_copies_read_only_the_version_that_was_looked_up(store: ObjectStore, sent: Counter) -> None:
    data = b"".join(b"line %d\n" % n for n in range(2000))
    store.write_bytes("raw/a.jsonl", data)
    token = store.info("raw/a.jsonl").etag
    sent.clear()
    copied = store.copy_range("raw/a.jsonl", "archive/a.jsonl", 100, len(data), token=token, edge_bytes=64)
    assert sent == {"GetObject": 1, "PutObject": 1}  # no HEAD: the token came from the caller
    assert store.read_bytes("archive/a.jsonl") == data[100:]
    assert (copied.sha256, copied.size) == (hashlib.sha256(data[100:]).hexdigest(), len(data) - 100)
    assert (copied.head, copied.tail) == (data[100:164], data[-64:])
    sent.clear()
    whole = store.copy_range("raw/a.jsonl", "archive/w.jsonl", 0, len(data), token=token, size=len(data), edge_bytes=64)
    assert sent == {"CopyObject": 1, "GetObject": 1}  # server-side: the bytes come to the client only once
    assert store.read_bytes("archive/w.jsonl") == data
    assert (whole.sha256, whole.size, whole.head, whole.tail) == (
        hashlib.sha256(data).hexdigest(),
        len(data),
        data[:64],
        data[-64:],
    )
    store.write_bytes("raw/a.jsonl", data + b"appended\n")
    for start, name in ((1, "archive/b.jsonl"), (0, "archive/c.jsonl")):
        with pytest.raises(ConcurrentUpdate):
            store.copy_range("raw/a.jsonl", name, start, len(data), token=token, size=len(data))
        assert not store.exists(name)


def test_stores_opened_again_share_one_client(store: ObjectStore) -> None:
    """Each build worker opens a store per chunk: it must not pay for a new S3 client every time."""
    assert ObjectStore.from_settings().fs is store.fs

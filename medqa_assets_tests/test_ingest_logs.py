"""``medqa ingest-logs``: local log files uploaded unchanged into retraining_data_raw/."""

from __future__ import annotations

import json

import pytest

from medqa_assets.cli import main
from medqa_assets.serving import CommandError
from medqa_assets.serving.ingest import expand_paths, ingest_logs
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

JSONL = b'{"ts": "2026-01-01T00:00:00Z", "question": "q?", "slice": "a", "answer": "x", "latency_ms": 3}\n'
ARRAY = json.dumps([{"timestamp": 1767225600, "question": "q?", "model_response": "r"}]).encode()
GARBAGE = b"\x00\xffnot json at all\n{"


@pytest.fixture
def store(tmp_path, monkeypatch) -> ObjectStore:
    root = tmp_path / "store"
    monkeypatch.setenv("MEDQA_STORE_URL", str(root))
    monkeypatch.setenv("MEDQA_SENSOR_SETTLE_SECONDS", "0")  # the files below are written, then left alone
    return ObjectStore(str(root))


@pytest.fixture
def logs(tmp_path):
    folder = tmp_path / "app-logs"
    (folder / "nested").mkdir(parents=True)
    (folder / "b serving log.jsonl").write_bytes(JSONL)
    (folder / "a..array..json").write_bytes(ARRAY)
    (folder / "nested" / "c.log").write_bytes(GARBAGE)
    (folder / ".partial.jsonl").write_bytes(b"being written")  # hidden: skipped in a directory
    return folder


def stored(store: ObjectStore) -> list[tuple[str, bytes]]:
    return [(info.key, store.read_bytes(info.key)) for info in store.list(layout.RAW_LOGS_PREFIX)]


def test_directory_is_uploaded_unchanged_with_sanitized_names(store, logs, capsys) -> None:
    uploaded = ingest_logs([logs])
    names = [item.source.name for item in uploaded]
    assert names == ["a..array..json", "b serving log.jsonl", "c.log"]  # sorted, hidden file skipped

    objects = stored(store)
    assert [key for key, _ in objects] == [item.key for item in uploaded]  # keys sort by upload time
    assert [data for _, data in objects] == [ARRAY, JSONL, GARBAGE]  # content unchanged, even garbage
    suffixes = [key.split("-", 2)[2] for key, _ in objects]
    assert suffixes == ["a.array.json", "b_serving_log.jsonl", "c.log"]
    for key, _ in objects:
        assert key.startswith(layout.RAW_LOGS_PREFIX)
        assert " " not in key and ".." not in key and "/" not in key[len(layout.RAW_LOGS_PREFIX) :]

    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[-1] == f"uploaded 3 files, {len(ARRAY) + len(JSONL) + len(GARBAGE)} bytes in total"
    assert out[0].startswith(f"uploaded {logs / 'a..array..json'} -> ")


def test_explicit_files_and_dotdot_paths(store, logs, tmp_path) -> None:
    odd = logs / "nested" / ".." / "b serving log.jsonl"  # a path with a .. segment
    hidden = logs / ".partial.jsonl"  # named explicitly: uploaded
    uploaded = ingest_logs([str(odd), hidden], echo=None)
    assert [data for _, data in stored(store)] == [JSONL, b"being written"]
    assert uploaded[0].key.endswith("-b_serving_log.jsonl") and uploaded[1].key.endswith("-partial.jsonl")


def test_missing_path_uploads_nothing(store, logs, tmp_path) -> None:
    with pytest.raises(CommandError, match="does not exist; nothing was uploaded"):
        ingest_logs([logs, tmp_path / "no-such.jsonl"], echo=None)
    assert stored(store) == []
    with pytest.raises(CommandError):
        expand_paths([tmp_path / "missing-dir"])


def test_cli_ingest_logs(store, logs, tmp_path, capsys) -> None:
    assert main(["ingest-logs", str(logs / "nested" / "c.log")]) == 0
    out = capsys.readouterr().out
    assert "uploaded 1 file, " in out
    assert [data for _, data in stored(store)] == [GARBAGE]

    missing = tmp_path / "gone.jsonl"
    assert main(["ingest-logs", str(logs), str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {missing} does not exist; nothing was uploaded\n"
    assert len(stored(store)) == 1


def test_cli_store_error_is_one_line(logs, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MEDQA_STORE_URL", "ftp://somewhere")
    assert main(["ingest-logs", str(logs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MEDQA_STORE_URL='ftp://somewhere' is neither") and err.count("\n") == 1


def test_a_file_still_being_written_is_waited_for_or_refused(store, tmp_path, monkeypatch) -> None:
    import threading
    import time

    monkeypatch.setenv("MEDQA_SENSOR_SETTLE_SECONDS", "0.6")
    log = tmp_path / "serving.jsonl"
    log.write_bytes(JSONL)
    with pytest.raises(CommandError, match="still being written"):
        ingest_logs([log], echo=None, wait=False)
    assert stored(store) == []

    def keep_appending() -> None:  # the app goes on writing for a while
        for _ in range(5):
            time.sleep(0.1)
            with open(log, "ab") as handle:
                handle.write(JSONL)

    writer = threading.Thread(target=keep_appending)
    writer.start()
    messages: list[str] = []
    (uploaded,) = ingest_logs([log], echo=messages.append)
    writer.join()
    assert stored(store) == [(uploaded.key, JSONL * 6)]  # everything it wrote, not a snapshot mid-way
    assert any("waiting for" in m for m in messages)

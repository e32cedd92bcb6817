"""retraining_data_raw/ is untrusted: forged control files, same names, growing, vanishing and
long-named files, racing ticks and the tracker, killed runs (local store and real S3)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import dagster as dg
import pytest

from medqa_assets.retraining import build as build_module
from medqa_assets.retraining import publish as publish_module
from medqa_assets.retraining.control import advance_tracker, read_tracker
from medqa_assets.retraining.decide import plan_tick
from medqa_assets.retraining.tick import evaluate_sensor, tick_and_run, tick_from_environment
from medqa_assets.serving.ingest import ingest_logs
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore, StoreError
from medqa_assets_tests.test_retraining import GOOD_JSONL, tick, write_raw

REPO_ROOT = Path(__file__).resolve().parents[1]


def line(index: int, prefix: str = "q") -> bytes:
    return json.dumps({"ts": "2026-11-01T10:00:00Z", "question": f"{prefix}-{index}", "answer": f"a-{index}"}).encode()


def published_questions(store: ObjectStore) -> list[str]:
    """Every question in every published version, in version order (duplicates kept)."""
    questions = []
    for version in sorted(
        (d for d in store.list_dirs(layout.TRANSFORMED_PREFIX) if layout.is_version_name(d)),
        key=layout.version_number,
    ):
        if store.exists(layout.retraining_data_key(version)):
            questions += list(store.read_jsonl(layout.retraining_data_key(version), columns=["question"])["question"])
    return questions


@pytest.fixture
def store(retraining_store: ObjectStore) -> ObjectStore:
    return retraining_store


@pytest.fixture
def local_store(local_retraining_store: ObjectStore) -> ObjectStore:
    return local_retraining_store


def test_forged_and_malformed_control_files_move_nothing(store: ObjectStore, tmp_path: Path) -> None:
    victim = tmp_path / "victim" / "secret.txt"
    victim.parent.mkdir()
    victim.write_text("secret=hunter2\n")
    training = layout.SPLIT_KEYS["training"]
    store.write_bytes(training, b'{"question": "q", "answer": "a"}\n')
    forged = {
        "version": "v1",
        "decision_id": "forged",
        "decided_at": "2026-01-01T00:00:00+00:00",
        "files": [
            {"key": "../victim/secret.txt", "size": 1, "token": None},
            {"key": training, "size": 1, "token": None},
        ],
    }
    # the old claim location inside raw/ is just another log file now; forged control files too
    store.write_bytes(layout.RAW_LOGS_PREFIX + "_claims/v1.json", json.dumps(forged).encode())
    store.write_bytes(layout.RAW_LOGS_PREFIX + "_claims/v9.json", b"not json at all")
    store.write_bytes(layout.CLAIMS_PREFIX + "v3.json", json.dumps({**forged, "version": "v3"}).encode())
    store.write_bytes(layout.CLAIMS_PREFIX + "v4.json", b"{broken")
    store.write_bytes(layout.CLAIMS_PREFIX + "notes.txt", b"hello")
    legit = write_raw(store, "app.jsonl", GOOD_JSONL)
    training_before = store.read_bytes(training)

    with dg.instance_for_test() as instance:
        outcomes = tick(instance)
    assert list(outcomes.values()) == [True]
    (version,) = outcomes
    assert version == "v5"  # numbers of claims that are not trusted are not reused
    assert victim.read_text() == "secret=hunter2\n"
    assert store.read_bytes(training) == training_before
    metadata = store.read_json(layout.retraining_metadata_key(version))
    taken = {f["key"] for f in metadata["source_files"]}
    assert legit in taken and training not in taken and all(k.startswith(layout.RAW_LOGS_PREFIX) for k in taken)
    assert metadata["records_out"] == 2
    shown = json.dumps(metadata) + "".join(
        store.read_text(i.key) for i in store.list(layout.quarantine_prefix(version)) if i.key.endswith(".json")
    )
    assert "hunter2" not in shown
    assert read_tracker(store) == 5
    plan = plan_tick(store, settle_seconds=0)
    assert set(plan.malformed) == {layout.CLAIMS_PREFIX + n for n in ("v3.json", "v4.json", "notes.txt")}
    assert "not a normalized key" in plan.malformed[layout.CLAIMS_PREFIX + "v3.json"]


def test_the_local_store_refuses_keys_outside_its_root(local_store: ObjectStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    raw = Path(local_store.path(layout.RAW_LOGS_PREFIX))
    raw.mkdir(parents=True)
    (raw / "link.jsonl").symlink_to(outside)
    (raw / "linked_dir").symlink_to(tmp_path)
    for key in ("../outside.txt", layout.RAW_LOGS_PREFIX + "../../x", layout.RAW_LOGS_PREFIX + "link.jsonl"):
        with pytest.raises(StoreError, match="refusing the key"):
            local_store.read_bytes(key)


def test_what_raw_holds_but_is_not_taken_is_reported(local_store: ObjectStore, tmp_path: Path) -> None:
    raw = Path(local_store.path(layout.RAW_LOGS_PREFIX))
    raw.mkdir(parents=True)
    (tmp_path / "elsewhere.jsonl").write_bytes(GOOD_JSONL)
    (raw / "link.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    (raw / ".tmp-upload").write_bytes(GOOD_JSONL)
    (raw / "empty_folder").mkdir()
    write_raw(local_store, "real.jsonl", GOOD_JSONL)
    with dg.instance_for_test() as instance:
        result = evaluate_sensor(instance)
    plan = plan_tick(local_store, settle_seconds=0)
    reasons = {entry.key.rsplit("/", 2)[-2 if entry.key.endswith("/") else -1]: entry.reason for entry in plan.ignored}
    assert reasons == {
        "link.jsonl": "symbolic link",
        ".tmp-upload": "temporary name (.tmp-*)",
        "empty_folder": "empty folder",
    }
    decided = json.loads(result.cursor)["files"]
    assert [f["key"].rsplit("-", 1)[-1] for f in decided] == ["real.jsonl"]


def test_same_name_from_two_apps_keeps_both_and_survives_a_crash(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = layout.RAW_LOGS_PREFIX + "appA/requests.jsonl"
    b = layout.RAW_LOGS_PREFIX + "appB/requests.jsonl"
    store.write_bytes(a, line(1) + b"\n")
    store.write_bytes(b, line(2) + b"\n")
    with dg.instance_for_test() as instance:
        with monkeypatch.context() as patch:
            patch.setattr(publish_module, "update_ledger", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash")))
            assert tick(instance) == {"v1": False}
        assert tick(instance) == {"v1": True}
    archived = sorted(i.key for i in store.list(layout.archive_prefix("v1")))
    assert archived == [
        layout.archive_prefix("v1") + "appA/requests.jsonl",
        layout.archive_prefix("v1") + "appB/requests.jsonl",
    ]
    assert sorted(published_questions(store)) == ["q-1", "q-2"]


def test_a_file_written_after_its_claim_reaches_the_next_version(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = layout.RAW_LOGS_PREFIX + "app/requests.jsonl"
    store.write_bytes(key, b"".join(line(i) + b"\n" for i in range(5)))
    original = build_module.build_version

    def append_then_build(*args, **kwargs):  # the app appends between raw_logs and retraining_data
        store.write_bytes(key, store.read_bytes(key) + b"".join(line(i) + b"\n" for i in range(5, 8)))
        return original(*args, **kwargs)

    with dg.instance_for_test() as instance:
        with monkeypatch.context() as patch:
            patch.setattr(build_module, "build_version", append_then_build)
            monkeypatch.setattr("medqa_assets.retraining.assets.build_version", append_then_build)
            assert tick(instance) == {"v1": True}
        monkeypatch.setattr("medqa_assets.retraining.assets.build_version", original)
        assert store.exists(key)  # changed since its snapshot: kept for the next version
        assert tick(instance) == {"v2": True}
        assert tick(instance) == {}
    assert published_questions(store) == [f"q-{i}" for i in range(8)]
    assert read_tracker(store) == 2
    v2 = store.read_json(layout.retraining_metadata_key("v2"))["source_files"][0]
    assert v2["bytes"][0] > 0  # only the new bytes were taken


def test_appends_through_an_open_handle_after_the_version_are_not_lost(
    local_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDQA_RETIRE_AFTER_SECONDS", "600")
    path = Path(local_store.path(layout.RAW_LOGS_PREFIX)) / "app.jsonl"
    path.parent.mkdir(parents=True)
    with open(path, "ab", buffering=0) as handle, dg.instance_for_test() as instance:
        for i in range(10):
            handle.write(line(i) + b"\n")
        assert tick(instance) == {"v1": True}
        for i in range(10, 20):
            handle.write(line(i) + b"\n")
        assert tick(instance) == {"v2": True}
        assert tick(instance) == {}
    assert published_questions(local_store) == [f"q-{i}" for i in range(20)]


def test_a_partial_last_line_waits_for_the_rest(local_store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDQA_SENSOR_SETTLE_SECONDS", "30")
    monkeypatch.setenv("MEDQA_RETIRE_AFTER_SECONDS", "600")
    path = Path(local_store.path(layout.RAW_LOGS_PREFIX)) / "app.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(line(0) + b"\n" + line(1)[:20])
    old = time.time() - 60
    os.utime(path, (old, old))  # settled: the sensor decides on it
    with dg.instance_for_test() as instance:
        result = evaluate_sensor(instance)
        with open(path, "ab") as handle:  # the writer resumes, still mid-line, before the run snapshots
            handle.write(line(1)[20:30])
        request = result.run_requests[0]
        from medqa_assets.definitions import defs

        run = defs.resolve_job_def("retraining_etl").execute_in_process(
            instance=instance, partition_key=request.partition_key, run_config=request.run_config, tags=request.tags
        )
        assert run.success
        assert published_questions(local_store) == ["q-0"]  # the line being written was left for later
        with open(path, "ab") as handle:
            handle.write(line(1)[30:] + b"\n")
        os.utime(path, (old, old))
        assert tick(instance) == {"v2": True}
    assert published_questions(local_store) == ["q-0", "q-1"]


def test_a_claimed_file_deleted_before_the_build_is_reported_and_the_rest_published(store: ObjectStore) -> None:
    keys = [write_raw(store, f"f{i}.jsonl", line(i) + b"\n") for i in range(4)]
    with dg.instance_for_test() as instance:
        result = evaluate_sensor(instance)
        store.delete(keys[1])
        request = result.run_requests[0]
        from medqa_assets.definitions import defs

        run = defs.resolve_job_def("retraining_etl").execute_in_process(
            instance=instance, partition_key=request.partition_key, run_config=request.run_config, tags=request.tags
        )
        assert run.success
    metadata = store.read_json(layout.retraining_metadata_key("v1"))
    assert metadata["missing_files"] == [keys[1]]
    assert sorted(published_questions(store)) == ["q-0", "q-2", "q-3"]
    assert read_tracker(store) == 1


def test_long_names_work_everywhere(store: ObjectStore, tmp_path: Path) -> None:
    long_bad = layout.RAW_LOGS_PREFIX + "x" * 225 + ".json"  # 230 bytes: unusable content, quarantined
    long_good = layout.RAW_LOGS_PREFIX + "y" * 249 + ".jsonl"  # 255 bytes, the longest a name can be
    store.write_bytes(long_bad, b"not json")
    store.write_bytes(long_good, line(1) + b"\n")
    local = tmp_path / ("z" * 200 + ".jsonl")
    local.write_bytes(line(2) + b"\n")
    (uploaded,) = ingest_logs([local], store=store, echo=None)
    assert len(uploaded.key.rsplit("/", 1)[-1]) <= 255 and uploaded.key.endswith(".jsonl")
    with dg.instance_for_test() as instance:
        assert tick(instance) == {"v1": True}
    assert sorted(published_questions(store)) == ["q-1", "q-2"]
    assert store.exists(layout.quarantined_file_key("v1", long_bad))
    assert store.read_json(layout.retraining_metadata_key("v1"))["files_quarantined"] == 1


def test_the_tracker_never_moves_backwards(store: ObjectStore) -> None:
    def race(numbers: tuple[int, int]) -> int:
        store.write_bytes(layout.VERSION_TRACKER, b"3\n")
        barrier = threading.Barrier(2)

        def advance(number: int) -> None:
            barrier.wait()
            advance_tracker(store, number)

        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(advance, n) for n in numbers]:
                future.result()
        return read_tracker(store)

    results = [race((4, 5) if i % 2 else (5, 4)) for i in range(60)]
    assert set(results) == {5}


def test_leftovers_of_killed_runs_are_cleaned(local_store: ObjectStore) -> None:
    write_raw(local_store, "a.jsonl", GOOD_JSONL)
    leftovers = [
        Path(local_store.path(layout.archive_prefix("v1"))) / ".tmp-0123456789abcdef",
        Path(local_store.path(layout.CONTROL_PREFIX)) / ".tmp-fedcba9876543210",
    ]
    old = time.time() - 7200
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
        os.utime(path, (old, old))
    with dg.instance_for_test() as instance:
        assert tick(instance) == {"v1": True}
    assert not any(path.exists() for path in leftovers)


def _medqa_tick(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medqa_assets.cli", "tick"], env=env, capture_output=True, text=True, timeout=300
    )


def test_two_ticks_at_once_build_a_version_once(store: ObjectStore, tmp_path: Path) -> None:
    for i in range(6):
        write_raw(store, f"f{i}.jsonl", line(i) + b"\n")
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: _medqa_tick(env), range(2)))
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    outputs = sorted(r.stdout.strip() for r in results)
    assert outputs[-1].endswith("v1: complete") and "v1" not in outputs[0].split("\n")[-1].split(":")[0]
    assert sorted(published_questions(store)) == [f"q-{i}" for i in range(6)]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert len(instance.get_runs(filters=dg.RunsFilter(tags={"medqa/launched_by": "medqa tick"}))) == 1


def _ticks_forever(home: str, environment: dict[str, str]) -> None:  # a child the test kills with SIGKILL
    # A fork server's children inherit the fork server's environment, not this test's: set it.
    os.environ.clear()
    os.environ.update(environment)
    os.environ["DAGSTER_HOME"] = home
    while True:
        tick_from_environment()


WRITER = """
import json, sys, time
path, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "ab", buffering=0) as handle:
    for i in range(start, start + count):
        record = {"ts": "2026-11-01T10:00:00Z", "question": f"w-{i}", "answer": f"a-{i}"}
        handle.write(json.dumps(record).encode() + b"\\n")
        time.sleep(0.004)
"""


@pytest.mark.slow
def test_kill_loop_with_racing_ticks_and_a_writer_keeps_every_record_once(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 of ticks mid-version, two ticks racing, an app appending to a file being claimed."""
    monkeypatch.setenv("MEDQA_RETIRE_AFTER_SECONDS", "600")  # the writer keeps its file open
    monkeypatch.setenv("MEDQA_SENSOR_SETTLE_SECONDS", "0.2")
    home = tmp_path / "dagster_home"
    home.mkdir()
    rng = random.Random(7)
    key = layout.RAW_LOGS_PREFIX + "app/requests.jsonl"
    if store.is_s3:  # the app appends on its own disk and copies the whole file over the same key
        writer_path = tmp_path / "app.jsonl"
    else:  # the app appends straight into raw/, through a handle it keeps open
        writer_path = Path(store.path(key))
        writer_path.parent.mkdir(parents=True)

    def copy_to_store() -> None:
        if store.is_s3 and writer_path.exists():
            data = writer_path.read_bytes()
            store.write_bytes(key, data[: data.rfind(b"\n") + 1])

    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(writer_path), "0", "1500"])
    trackers: list[int] = []
    stop = threading.Event()

    def poll_tracker() -> None:
        while not stop.is_set():
            trackers.append(read_tracker(store))
            time.sleep(0.01)

    poller = threading.Thread(target=poll_tracker)
    poller.start()
    # Children come from a fork server, not from this process: a fork of a process with running
    # threads (S3 clients, the tracker poller) can inherit a held lock and hang before it ticks.
    context = get_context("forkserver")
    context.set_forkserver_preload(["medqa_assets.retraining.tick", "medqa_assets.definitions"])
    watcher = dg.DagsterInstance.from_config(str(home))  # created here, before the ticks share it
    seen: set[str] = set()
    try:
        idle_rounds = interrupted = 0
        for _round in range(10):
            copy_to_store()
            ticks = [context.Process(target=_ticks_forever, args=(str(home), dict(os.environ))) for _ in range(2)]
            for process in ticks:
                process.start()
            deadline = time.monotonic() + 20  # starting a run takes seconds, more on a loaded machine
            new_run = False
            while time.monotonic() < deadline:  # kill once a new run has started, at a random point of it
                started = {
                    r.run_id for r in watcher.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
                }
                if started - seen:
                    seen |= started
                    new_run = True
                    break
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))
            for process in ticks:
                os.kill(process.pid, signal.SIGKILL)
                process.join()
            idle_rounds = 0 if new_run else idle_rounds + 1
            interrupted += new_run
            if writer.poll() is not None and (idle_rounds >= 2 or interrupted >= 3):
                break  # the app is done, and enough runs were killed (or there was nothing left to kill)
        assert writer.wait(timeout=60) == 0
        copy_to_store()
        time.sleep(0.3)
        monkeypatch.setenv("MEDQA_RETIRE_AFTER_SECONDS", "0")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for _ in range(10):
                if not tick_and_run(instance):
                    break
            killed = instance.get_runs(filters=dg.RunsFilter(tags={"medqa/orphaned": "killed"}))
        assert len(killed) >= 3, f"only {len(killed)} kills landed inside a run: the test proves too little"
    finally:
        stop.set()
        poller.join()
        writer.kill()
        watcher.dispose()
    assert all(a <= b for a, b in zip(trackers, trackers[1:], strict=False)), "the tracker moved backwards"
    questions = published_questions(store)
    assert sorted(questions) == sorted(f"w-{i}" for i in range(1500)), "a record was lost or published twice"
    assert plan_tick(store, settle_seconds=0).decision is None  # consumed: nothing is decided again


def _peak_mb_building(megabytes: int, tmp_path: Path) -> tuple[float, int]:
    """Peak memory (MB) of a child process that builds one version from a JSON Lines file of that size."""
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "memory.py"), "--megabytes", str(megabytes)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    words = completed.stdout.split()
    return float(words[words.index("peak") + 1]), int(words[words.index("records_in") + 1].replace(",", ""))


@pytest.mark.slow
def test_a_large_log_file_is_built_in_bounded_memory(tmp_path: Path) -> None:
    """Memory grows far slower than the file: it is parsed in pieces (a 1 GB file peaked at 8.95 GB before)."""
    small_peak, small_records = _peak_mb_building(64, tmp_path)  # two pieces: the per-piece cost is in
    large_peak, large_records = _peak_mb_building(192, tmp_path)  # six pieces
    assert large_records > 2.5 * small_records
    # what grows is only what duplicate removal keeps per record (about 100 bytes; parsing the whole
    # file at once grew by 9 bytes per byte of file); bench/memory.py: a 1 GB file peaks at 1.15 GB
    assert large_peak - small_peak < 1.0 * (192 - 64), (small_peak, large_peak)


def test_the_serving_apps_own_appending_logger_loses_nothing_while_ticks_run(
    local_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The FastAPI app (a stand-in written from contracts.md) appends through a handle it keeps open,
    under concurrent requests, while versions are decided, snapshotted and published."""
    import httpx

    from medqa_assets_tests.serving_apps import (
        AppendJsonLinesSink,
        LocalDirTarget,
        create_fastapi_app,
        fake_model,
        run_app,
    )

    monkeypatch.setenv("MEDQA_RETIRE_AFTER_SECONDS", "600")
    sink = AppendJsonLinesSink(LocalDirTarget.under_store_root(local_store.root), "requests.jsonl")
    questions = [f"What is condition {i}?" for i in range(300)]
    with run_app(create_fastapi_app(fake_model(), sink)) as url, dg.instance_for_test() as instance:

        def ask(question: str) -> int:
            return httpx.post(f"{url}/api/v1/answer", json={"question": question}, timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(ask, q) for q in questions]
            versions = 0
            while not all(f.done() for f in futures):
                versions += sum(tick(instance).values())
            assert [f.result() for f in futures] == [200] * len(questions)
        sink.close()
        for _ in range(3):
            versions += sum(tick(instance).values())
    assert versions >= 2, "no version was built while the app was writing: the test proved nothing"
    assert sorted(published_questions(local_store)) == sorted(questions)
    assert sorted(r["question"] for r in sink.training_records) == sorted(questions)

"""The serving team's apps (stand-ins written from contracts.md sections 4 and 5), unchanged, feed
the retraining loop while ticks and runs go on: every record exactly once, local store and S3."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import httpx
import pytest

from medqa_assets.retraining.control import read_tracker
from medqa_assets.retraining.decide import plan_tick
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore
from medqa_assets_tests.serving_apps import (
    AppendJsonLinesSink,
    CumulativeCopySink,
    LocalDirTarget,
    RewriteArraySink,
    S3Target,
    create_fastapi_app,
    create_flask_app,
    fake_model,
    run_app,
    timing_out_model,
)
from medqa_assets_tests.test_retraining import tick
from medqa_assets_tests.test_retraining_untrusted import published_questions

PER_APP = 60


def raw_target(store: ObjectStore, s3_env) -> object:
    if store.is_s3:
        return S3Target(
            s3_env.bucket,
            prefix=store.path(layout.RAW_LOGS_PREFIX).partition("/")[2],
            endpoint_url=s3_env.server.endpoint_url,
            aws_access_key_id=s3_env.server.access_key,
            aws_secret_access_key=s3_env.server.secret_key,
        )
    return LocalDirTarget.under_store_root(store.root)


@pytest.fixture
def s3_env(request: pytest.FixtureRequest):
    return request.getfixturevalue("s3_store_env") if "s3" in request.node.callspec.id else None


def test_append_rewrite_and_cumulative_copy_apps_while_ticks_run(
    retraining_store: ObjectStore, s3_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = retraining_store
    monkeypatch.setenv("MEDQA_SENSOR_SETTLE_SECONDS", "0")  # claim files mid-write, the hardest case
    monkeypatch.setenv("MEDQA_RETIRE_AFTER_SECONDS", "600")  # the appending app keeps its file open
    target = raw_target(store, s3_env)
    # the apps' own writes are serialized (locked=True): an unlocked read-modify-write loses records
    # inside the app, before the platform ever sees them; damaged files are tested on their own.
    sinks = {
        "append": AppendJsonLinesSink(target, "fastapi/requests.jsonl", locked=True),
        "rewrite": RewriteArraySink(target, "flask/production_logs.json", locked=True),
        "copy": CumulativeCopySink(target, "copier/cumulative_log.jsonl", locked=True),
    }
    model = fake_model(latency_s=0.04)  # requests keep coming while several versions are built
    apps = {
        "append": (create_fastapi_app(model, sinks["append"]), "/api/v1/answer"),
        "rewrite": (create_flask_app(model, sinks["rewrite"]), "/ask"),
        "copy": (create_fastapi_app(model, sinks["copy"]), "/api/v1/answer"),
    }
    trackers_ok: list[bool] = []
    stop = threading.Event()

    def watch_tracker() -> None:  # the tracker must always name a complete version with rows
        while not stop.is_set():
            number = read_tracker(store)
            if number:
                metadata = store.read_json(layout.retraining_metadata_key(f"v{number}"))
                trackers_ok.append(metadata["records_out"] > 0)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_tracker)
    watcher.start()
    try:
        with (
            run_app(apps["append"][0]) as url_a,
            run_app(apps["rewrite"][0]) as url_r,
            run_app(apps["copy"][0]) as url_c,
            dg.instance_for_test() as instance,
        ):
            urls = {"append": url_a, "rewrite": url_r, "copy": url_c}

            def ask(name: str, index: int) -> int:
                url = urls[name] + apps[name][1]
                return httpx.post(url, json={"question": f"{name} question {index}?"}, timeout=30).status_code

            with ThreadPoolExecutor(6) as pool:
                futures = [pool.submit(ask, name, i) for i in range(PER_APP) for name in apps]
                built = 0
                while not all(f.done() for f in futures):
                    built += sum(tick(instance).values())
                assert {f.result() for f in futures} == {200}
            for sink in sinks.values():
                sink.close()
            time.sleep(0.3)
            monkeypatch.setenv("MEDQA_RETIRE_AFTER_SECONDS", "0")
            for _ in range(5):
                built += sum(tick(instance).values())
            runs = instance.get_runs()
            assert all(run.is_success for run in runs), [run.status for run in runs]
    finally:
        stop.set()
        watcher.join()
    assert built >= 2, "no version was built while the apps were writing: the test proved nothing"
    expected = sorted(r["question"] for sink in sinks.values() for r in sink.training_records)
    assert len(expected) == 3 * PER_APP
    assert sorted(published_questions(store)) == expected  # every record exactly once
    assert trackers_ok and all(trackers_ok)
    assert plan_tick(store, settle_seconds=0).decision is None
    assert store.list(layout.RAW_LOGS_PREFIX) == [], "consumed files stay in raw"


def test_a_batch_of_failures_and_timeouts_publishes_no_rows_and_keeps_the_tracker(
    local_retraining_store: ObjectStore, tmp_path: Path
) -> None:
    store = local_retraining_store
    target = LocalDirTarget.under_store_root(store.root)
    good = AppendJsonLinesSink(target, "good.jsonl")
    with run_app(create_fastapi_app(fake_model(), good)) as url, dg.instance_for_test() as instance:
        httpx.post(f"{url}/api/v1/answer", json={"question": "what is flu?"}, timeout=30)
        good.close()
        assert tick(instance) == {"v1": True}
        bad = AppendJsonLinesSink(target, "bad.jsonl")
        with run_app(create_fastapi_app(timing_out_model(1.0), bad)) as bad_url:
            for i in range(5):
                httpx.post(f"{bad_url}/api/v1/answer", json={"question": f"slow {i}?"}, timeout=30)
        bad.close()
        assert tick(instance) == {"v2": True}
    metadata = store.read_json(layout.retraining_metadata_key("v2"))
    assert metadata["records_out"] == 0 and metadata["rejections"] == {"non_answer": 5}
    assert metadata["has_rows"] is False
    assert read_tracker(store) == 1  # still the newest version with rows
    assert store.list(layout.RAW_LOGS_PREFIX) == []  # processed and archived all the same
    assert store.list(layout.archive_prefix("v2"))

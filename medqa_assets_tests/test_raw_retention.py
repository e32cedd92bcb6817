"""Raw inputs live only in their prefixes, for MEDQA_RAW_RETENTION_DAYS; lineage survives their deletion."""

from __future__ import annotations

import json
import os
import time

import dagster as dg
import pytest

from medqa_assets.resources import build_resources
from medqa_assets.retraining.assets import raw_retention, raw_retention_schedule
from medqa_assets.retraining.retention import delete_expired_raw_inputs, raw_inputs, retention_key
from medqa_assets.retraining.tick import tick_and_run
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

DAY = 86_400
LOG = b'{"question": "Can I take ibuprofen?", "answer": "Usually, with food.", "ts": 1793000000}\n'
BROKEN = b'[{"question": "cut off'


def build_v1(store: ObjectStore) -> None:
    store.write_bytes(layout.new_raw_log_key("app.jsonl"), LOG)
    store.write_bytes(layout.new_raw_log_key("broken.json"), BROKEN)
    with dg.instance_for_test() as instance:
        assert dict(tick_and_run(instance)) == {"v1": True}


def age_files(store: ObjectStore, keys: list[str], days: float) -> None:
    """Back-date local files (what a month of waiting does)."""
    then = time.time() - days * DAY
    for key in keys:
        os.utime(store.path(key), (then, then))


def test_raw_inputs_past_retention_are_deleted_and_lineage_stays(local_retraining_store: ObjectStore) -> None:
    store = local_retraining_store
    build_v1(store)
    inputs = [item.key for item in raw_inputs(store, "v1")]
    assert any(k.startswith(layout.archive_prefix("v1")) for k in inputs)
    assert any("/files/" in k for k in inputs)  # the unusable file, quarantined whole
    manifest_before = store.read_json(layout.manifest_key("v1"))
    derived = store.read_bytes(layout.retraining_data_key("v1"))

    assert delete_expired_raw_inputs(store, retention_days=30, log=lambda _: None).files == 0  # all fresh
    age_files(store, inputs, days=31)
    report = delete_expired_raw_inputs(store, retention_days=30, log=lambda _: None)
    assert report.files == len(inputs)
    assert raw_inputs(store, "v1") == []
    # lineage: the manifest still names every file with its size and sha256; the deletion is recorded
    assert store.read_json(layout.manifest_key("v1")) == manifest_before
    snapshots = [f for f in manifest_before["files"] if f["status"] == "snapshot"]
    assert snapshots and all(len(f["sha256"]) == 64 and f["size"] > 0 for f in snapshots)
    record = store.read_json(retention_key("v1"))
    assert sorted(d["key"] for d in record["deleted"]) == sorted(inputs) and record["retention_days"] == 30
    # what was derived stays, and so does the quarantine's reason for the unusable file
    assert store.read_bytes(layout.retraining_data_key("v1")) == derived
    assert any(k.endswith(".reason.json") for k in (i.key for i in store.list(layout.quarantine_prefix("v1"))))


def test_a_version_still_being_built_keeps_its_snapshots(local_retraining_store: ObjectStore) -> None:
    store = local_retraining_store
    build_v1(store)
    store.delete(layout.retraining_metadata_key("v1"))  # as if the build had not finished
    inputs = [item.key for item in raw_inputs(store, "v1")]
    age_files(store, inputs, days=400)
    assert delete_expired_raw_inputs(store, retention_days=30, log=lambda _: None).files == 0
    assert [item.key for item in raw_inputs(store, "v1")] == inputs


def test_the_scheduled_job_reads_the_retention_setting(
    local_retraining_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = local_retraining_store
    build_v1(store)
    inputs = [item.key for item in raw_inputs(store, "v1")]
    age_files(store, inputs, days=3)
    monkeypatch.setenv("MEDQA_RAW_RETENTION_DAYS", "7")
    result = raw_retention.execute_in_process(resources=build_resources())
    assert result.success and len(raw_inputs(store, "v1")) == len(inputs)  # 3 days < 7
    monkeypatch.setenv("MEDQA_RAW_RETENTION_DAYS", "2")
    result = raw_retention.execute_in_process(resources=build_resources())
    assert result.success and raw_inputs(store, "v1") == []
    deleted = json.loads(json.dumps(store.read_json(retention_key("v1"))))
    assert deleted["retention_days"] == 2
    assert raw_retention_schedule.cron_schedule == "15 3 * * *"
    assert raw_retention_schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_a_bad_retention_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from medqa_assets.settings import ConfigurationError, Settings

    monkeypatch.setenv("MEDQA_RAW_RETENTION_DAYS", "a month")
    with pytest.raises(ConfigurationError, match="MEDQA_RAW_RETENTION_DAYS"):
        Settings.from_env()

"""offline_etl, raw_logs_sensor and retraining_etl on a Dagster instance stored in PostgreSQL.

The instance is the production kind (``storage: postgres`` in dagster.yaml) on the machine's
PostgreSQL, in a database created for the test; runs, events, materializations and the dynamic
partitions the sensor adds are asserted both through the instance and in the tables themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from medqa_assets.definitions import defs
from medqa_assets.retraining.tick import evaluate_sensor
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore
from medqa_assets_tests.services import (
    offline_env,
    query,
    temporary_database,
    write_postgres_dagster_home,
    write_small_medquad,
)

LOG_LINES = (
    b'{"ts": "2026-11-01T10:00:00Z", "question": "What is flu?", "slice": "a", "answer": "A virus.", "latency_ms": 5}\n'
    b'{"ts": "2026-11-01T10:01:00Z", "question": "What is a cold?", "slice": "a", "answer": "Also a virus.", '
    b'"latency_ms": 7}\n'
)
LOG_ARRAY = json.dumps(
    [{"timestamp": "2026-11-01T11:00:00Z", "question": "Is rest good?", "model_response": "Usually, yes."}]
).encode()


@pytest.fixture
def postgres_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    with temporary_database("medqa_dagster") as db_name:
        home = write_postgres_dagster_home(tmp_path / "dagster_home", db_name)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        yield home, db_name


def test_offline_and_retraining_jobs_on_a_postgres_instance(
    local_store_env, postgres_home: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, db_name = postgres_home
    offline_env(monkeypatch, write_small_medquad(tmp_path / "medquad.parquet"))
    store = ObjectStore.from_settings()

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"

        offline = defs.resolve_job_def("offline_etl").execute_in_process(instance=instance)
        assert offline.success
        offline_keys = defs.resolve_job_def("offline_etl").asset_layer.executable_asset_keys
        for key in offline_keys:
            assert instance.get_latest_materialization_event(key) is not None, key.to_user_string()
        for key in (*layout.SPLIT_KEYS.values(), layout.SPLIT_METADATA, layout.MEDQUAD_RAW):
            assert store.exists(key), key

        # the sensor: nothing yet, then a batch of two files becomes v1 and is run for v1
        assert evaluate_sensor(instance).run_requests == []
        for name, data in (("serving.jsonl", LOG_LINES), ("legacy.json", LOG_ARRAY)):
            store.write_bytes(layout.new_raw_log_key(name), data)
        tick = evaluate_sensor(instance)
        assert [r.partition_key for r in tick.run_requests] == ["v1"]
        assert instance.get_dynamic_partitions("retraining_versions") == ["v1"]

        request = tick.run_requests[0]
        retraining = defs.resolve_job_def("retraining_etl").execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags=dict(request.tags),
            run_config=request.run_config,
        )
        assert retraining.success
        assert evaluate_sensor(instance, cursor=tick.cursor).run_requests == []  # v1 is published

        retraining_event = instance.get_latest_materialization_event(dg.AssetKey("retraining_data"))
        assert retraining_event is not None
        materialization = retraining_event.asset_materialization
        assert materialization is not None and materialization.partition == "v1"
        metadata = store.read_json(layout.retraining_metadata_key("v1"))
        assert materialization.metadata["output_sha256"].value == metadata["output"]["sha256"]
        assert metadata["records_out"] == 3
        assert store.read_text(layout.VERSION_TRACKER).strip() == "1"

        runs = {run.run_id: run for run in instance.get_runs()}
        assert runs[offline.run_id].status == dg.DagsterRunStatus.SUCCESS
        assert runs[retraining.run_id].status == dg.DagsterRunStatus.SUCCESS
        assert runs[retraining.run_id].tags["dagster/partition"] == "v1"

    # the same facts, read straight from PostgreSQL
    stored_runs = dict(query(db_name, "SELECT run_id, status FROM runs"))
    assert stored_runs == {offline.run_id: "SUCCESS", retraining.run_id: "SUCCESS"}
    materialized = {
        row[0]
        for row in query(db_name, "SELECT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
    }
    expected = {dg.AssetKey("retraining_data"), dg.AssetKey("raw_logs"), *offline_keys}
    assert {key.to_string() for key in expected} <= materialized
    partitions = query(
        db_name, "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s", ("retraining_versions",)
    )
    assert partitions == [("v1",)]


def test_dagsters_documented_postgres_config_works_as_written(tmp_path: Path) -> None:
    """``storage: postgres: postgres_db: {username, password, hostname, db_name, port}`` as Dagster's
    docs give it (no ``scheme``). SQLAlchemy 2.1 would map that to psycopg 3, on which dagster-postgres'
    event log fails; the project keeps SQLAlchemy on 2.0, which picks psycopg2."""

    @dg.asset
    def probe() -> int:
        return 1

    with temporary_database("medqa_dagster_doc") as db_name:
        home = write_postgres_dagster_home(tmp_path / "dagster_home", db_name, scheme=False)
        assert "scheme" not in (home / "dagster.yaml").read_text()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            result = dg.materialize([probe], instance=instance)
            assert result.success
            instance.add_dynamic_partitions("retraining_versions", ["v1"])
            assert instance.get_dynamic_partitions("retraining_versions") == ["v1"]
        assert dict(query(db_name, "SELECT run_id, status FROM runs")) == {result.run_id: "SUCCESS"}

"""Dataset lineage in MLflow, asserted through ``MlflowClient`` against real servers.

A real ``mlflow server`` runs on loopback with its backend in PostgreSQL and its artifacts on the
SeaweedFS S3 server (proxied: the pipeline itself gets no artifact-store settings). The last test
is the issue's acceptance check end to end: ``dagster-daemon`` on the deployment's own
``docker/dagster.yaml`` and ``docker/workspace.yaml`` (PostgreSQL instance, queued runs, S3
compute logs) picks up new log files with raw_logs_sensor, unattended, and the version it builds
shows up in MLflow with the digest of its ``metadata.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import mlflow
from mlflow import MlflowClient

from medqa_assets.definitions import defs
from medqa_assets.lineage import EXPERIMENT_NAME, METADATA_ARTIFACT, mlflow_digest
from medqa_assets.resources import build_resources
from medqa_assets.retraining.assets import raw_logs, retraining_data
from medqa_assets.retraining.tick import evaluate_sensor
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore
from medqa_assets_tests.conftest import MlflowService
from medqa_assets_tests.s3_server import delete_bucket, make_bucket
from medqa_assets_tests.services import (
    BIN,
    REPO_ROOT,
    free_port,
    offline_env,
    query,
    stop_process,
    temporary_database,
    write_small_medquad,
)

LOGS = {
    "serving.jsonl": (
        b'{"ts": "2026-11-01T10:00:00Z", "question": "What is flu?", "slice": "a", "answer": "A virus.", '
        b'"latency_ms": 5}\n'
        b'{"ts": "2026-11-01T10:01:00Z", "question": "What is a cold?", "answer": "Also a virus.", "latency_ms": 7}\n'
    ),
    "legacy.json": json.dumps(
        [{"timestamp": "2026-11-01T11:00:00Z", "question": "Is rest good?", "model_response": "Usually, yes."}]
    ).encode(),
}


def write_logs(store: ObjectStore) -> None:
    for name, data in LOGS.items():
        store.write_bytes(layout.new_raw_log_key(name), data)


def runs_of(client: MlflowClient, metadata_uri: str) -> list:
    """The lineage runs of the dataset whose metadata.json is at ``metadata_uri`` (tests share a server)."""
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    assert experiment is not None, f"no MLflow experiment {EXPERIMENT_NAME!r}"
    return client.search_runs([experiment.experiment_id], filter_string=f"params.metadata_uri = '{metadata_uri}'")


def assert_input(run, name: str, sha256: str, source_uri: str, rows: int) -> None:  # noqa: ANN001
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert name in inputs, f"{name} not among the inputs {sorted(inputs)}"
    dataset_input = inputs[name]
    dataset = dataset_input.dataset
    assert dataset.digest == mlflow_digest(sha256) == sha256[:36]
    assert {t.key: t.value for t in dataset_input.tags}["sha256"] == sha256  # the full digest
    assert json.loads(dataset.profile) == {"num_rows": rows, "sha256": sha256}
    assert dataset.source_type == "s3"
    assert json.loads(dataset.source) == {"uri": source_uri}
    assert mlflow.data.get_source(dataset).uri == source_uri
    schema_columns = {column["name"] for column in json.loads(dataset.schema)["mlflow_colspec"]}
    assert {"question", "answer"} <= schema_columns


def assert_metadata_artifact(client: MlflowClient, run_id: str, expected: dict, tmp_path: Path) -> None:
    assert METADATA_ARTIFACT in [a.path for a in client.list_artifacts(run_id)]
    local = client.download_artifacts(run_id, METADATA_ARTIFACT, str(tmp_path))
    assert json.loads(Path(local).read_text()) == expected


def test_split_and_retraining_versions_are_mlflow_runs_with_their_digests(
    s3_store_env, tracking: MlflowClient, mlflow_service: MlflowService, tmp_path: Path, monkeypatch
) -> None:
    offline_env(monkeypatch, write_small_medquad(tmp_path / "medquad.parquet"))
    store = ObjectStore.from_settings()
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("offline_etl").execute_in_process(instance=instance).success
        write_logs(store)
        # two replayed evaluation questions: the version counts them as contamination
        replayed = store.read_jsonl(layout.production_set_key("set1")).head(2)
        records = [
            {"question": q, "model_response": "a replayed answer", "production_set": "set1", "row_id": r}
            for q, r in zip(replayed["question"], replayed["row_id"], strict=True)
        ]
        store.write_bytes(layout.new_raw_log_key("replay.json"), json.dumps(records).encode())
        [request] = evaluate_sensor(instance).run_requests
        assert request.partition_key == "v1"
        retraining = defs.resolve_job_def("retraining_etl").execute_in_process(
            instance=instance, partition_key="v1", run_config=request.run_config
        )
        assert retraining.success
        event = instance.get_latest_materialization_event(dg.AssetKey("retraining_data"))
    assert mlflow.active_run() is None  # nothing left open in this process

    # the splits: one finished run, the three splits as inputs, counts as metrics
    split_metadata = store.read_json(layout.SPLIT_METADATA)
    [split_run] = runs_of(tracking, store.uri(layout.SPLIT_METADATA))
    assert split_run.info.status == "FINISHED"
    for name, key in layout.SPLIT_KEYS.items():
        entry = split_metadata["files"][name]
        assert entry["sha256"] == hashlib.sha256(store.read_bytes(key)).hexdigest()
        assert_input(split_run, f"dataset_split/{name}", entry["sha256"], store.uri(key), entry["rows"])
        assert split_run.data.metrics[f"rows.{name}"] == split_metadata["split_counts"][name]
    contexts = {
        i.dataset.name: {t.key: t.value for t in i.tags}["mlflow.data.context"] for i in split_run.inputs.dataset_inputs
    }
    assert contexts == {f"dataset_split/{n}": n for n in layout.SPLIT_KEYS}
    assert split_run.data.metrics["initial_records"] == split_metadata["initial_records"]
    assert split_run.data.metrics["final_records"] == split_metadata["final_records"]
    assert split_run.data.metrics["dropped.total_dropped"] == split_metadata["dropped"]["total_dropped"]
    assert split_run.data.params["source"] == split_metadata["source"]
    assert_metadata_artifact(tracking, split_run.info.run_id, split_metadata, tmp_path / "split")

    # retraining v1: digest of its retraining_data.json, the accounting as metrics
    metadata = store.read_json(layout.retraining_metadata_key("v1"))
    [version_run] = runs_of(tracking, store.uri(layout.retraining_metadata_key("v1")))
    assert version_run.info.status == "FINISHED"
    assert version_run.info.run_name == "retraining_data v1"
    output = metadata["output"]
    assert output["sha256"] == hashlib.sha256(store.read_bytes(output["key"])).hexdigest()
    assert_input(version_run, "retraining_data/v1", output["sha256"], store.uri(output["key"]), output["rows"])
    for name in ("records_in", "records_out", "quarantined", "duplicates_removed"):
        assert version_run.data.metrics[name] == metadata[name]
    contamination = metadata["contamination"]["by_split"]
    assert contamination["evaluation"]["rows_with_split_question"] == 2
    for split in layout.SPLIT_KEYS:
        for name in ("rows_with_split_question", "rows_with_split_row_id"):
            metric = f"contamination.by_split.{split}.{name}"
            assert version_run.data.metrics[metric] == contamination[split][name], metric
    assert version_run.data.metrics["answer_quality.pairs_scored"] == 2
    assert version_run.data.params["sha256"] == output["sha256"]
    assert_metadata_artifact(tracking, version_run.info.run_id, metadata, tmp_path / "v1")
    assert event.asset_materialization.metadata["mlflow_run_id"].value == version_run.info.run_id

    # the artifacts really are in the S3 bucket behind the server, and the runs carry no secret
    listed = s3_store_env.server.client().list_objects_v2(Bucket=mlflow_service.artifacts_bucket)
    artifact_keys = [o["Key"] for o in listed.get("Contents", [])]
    assert f"artifacts/{version_run.info.experiment_id}/{version_run.info.run_id}/artifacts/metadata.json" in (
        artifact_keys
    )
    recorded = json.dumps([r.to_dictionary() for r in (split_run, version_run)])
    assert s3_store_env.server.secret_key not in recorded and s3_store_env.server.access_key not in recorded


def test_default_tracking_uri_is_sqlite_under_the_local_store(local_store_env, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MEDQA_SENSOR_SETTLE_SECONDS", "0")
    tracking_before = mlflow.get_tracking_uri()
    store = ObjectStore.from_settings()
    write_logs(store)
    with dg.instance_for_test() as instance:
        [request] = evaluate_sensor(instance).run_requests
        assert dg.materialize(
            [raw_logs, retraining_data],
            partition_key="v1",
            instance=instance,
            resources=build_resources(),
            run_config=request.run_config,
        ).success
    database = local_store_env.root / "mlflow" / "mlflow.db"
    assert database.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{database}")
    [run] = runs_of(client, store.uri(layout.retraining_metadata_key("v1")))
    sha256 = store.read_json(layout.retraining_metadata_key("v1"))["output"]["sha256"]
    assert run.inputs.dataset_inputs[0].dataset.digest == mlflow_digest(sha256)
    artifact = Path(client.download_artifacts(run.info.run_id, METADATA_ARTIFACT, str(tmp_path)))
    assert json.loads(artifact.read_text())["output"]["sha256"] == sha256
    assert run.info.artifact_uri.startswith((local_store_env.root / "mlflow" / "artifacts").as_uri())
    assert mlflow.active_run() is None and mlflow.get_tracking_uri() == tracking_before


def test_unreachable_mlflow_loses_no_data(local_store_env, monkeypatch) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MEDQA_SENSOR_SETTLE_SECONDS", "0")
    store = ObjectStore.from_settings()
    write_logs(store)
    with dg.instance_for_test() as instance:
        [request] = evaluate_sensor(instance).run_requests
        result = dg.materialize(
            [raw_logs, retraining_data],
            partition_key="v1",
            instance=instance,
            resources=build_resources(),
            run_config=request.run_config,
        )
        assert result.success
        warnings = [
            e.message
            for e in instance.all_logs(result.run_id)
            if e.level >= 30 and "MLflow lineage of retraining_data v1 not recorded" in (e.message or "")
        ]
    assert warnings, "the lineage failure was not reported"
    assert store.read_text(layout.VERSION_TRACKER).strip() == "1"
    [materialization] = result.asset_materializations_for_node("retraining_data")
    assert "mlflow_run_id" not in materialization.metadata
    assert mlflow.active_run() is None


def test_sensor_version_reaches_mlflow_unattended_on_the_deployment_instance(
    s3_store_env, tracking: MlflowClient, tmp_path: Path, monkeypatch
) -> None:
    """dagster-daemon with docker/dagster.yaml + docker/workspace.yaml: sensor -> queued run -> MLflow."""
    server = s3_store_env.server
    logs_bucket = f"dagster-logs-{secrets.token_hex(5)}"
    make_bucket(server, logs_bucket)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "docker" / "dagster.yaml", home / "dagster.yaml")
    store = ObjectStore.from_settings()
    write_logs(store)
    try:
        with temporary_database("medqa_dagster") as db_name:
            env = {
                **os.environ,
                "DAGSTER_HOME": str(home),
                "DAGSTER_PG_HOST": "127.0.0.1",
                "DAGSTER_PG_PORT": "5432",
                "DAGSTER_PG_USER": "postgres",
                "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
                "DAGSTER_PG_DB": db_name,
                "DAGSTER_COMPUTE_LOGS_BUCKET": logs_bucket,
                "MEDQA_SENSOR_SETTLE_SECONDS": "0",
                "MEDQA_RETRAINING_WORKERS": "1",
            }
            log_path = tmp_path / "daemon.log"
            with log_path.open("ab") as log:
                daemon = subprocess.Popen(
                    [str(BIN / "dagster-daemon"), "run", "-w", str(REPO_ROOT / "docker" / "workspace.yaml")],
                    cwd=tmp_path,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                version_run = None
                deadline = time.monotonic() + 300
                while version_run is None:
                    assert daemon.poll() is None, log_path.read_text(errors="replace")[-4000:]
                    assert time.monotonic() < deadline, (
                        "no MLflow run for v1 after 300 s:\n" + (log_path.read_text(errors="replace")[-4000:])
                    )
                    if tracking.get_experiment_by_name(EXPERIMENT_NAME) is not None:
                        found = runs_of(tracking, store.uri(layout.retraining_metadata_key("v1")))
                        version_run = found[0] if found else None
                    time.sleep(2)
                runs = query(db_name, "SELECT run_id, pipeline_name, status FROM runs")
                while any(status not in ("SUCCESS", "FAILURE", "CANCELED") for _, _, status in runs):
                    assert time.monotonic() < deadline, f"runs not finished: {runs}"
                    time.sleep(1)
                    runs = query(db_name, "SELECT run_id, pipeline_name, status FROM runs")
                tags = dict(query(db_name, "SELECT key, value FROM run_tags WHERE run_id = %s", (runs[0][0],)))
            finally:
                stop_process(daemon, grace_s=20)
    finally:
        listed = server.client().list_objects_v2(Bucket=logs_bucket, Prefix="compute-logs/")
        compute_logs = [o["Key"] for o in listed.get("Contents", [])]
        with contextlib.suppress(Exception):
            delete_bucket(server, logs_bucket)

    assert [(name, status) for _, name, status in runs] == [("retraining_etl", "SUCCESS")]
    assert tags["dagster/sensor_name"] == "raw_logs_sensor" and tags["dagster/partition"] == "v1"
    metadata = store.read_json(layout.retraining_metadata_key("v1"))
    dataset_input = version_run.inputs.dataset_inputs[0]
    assert dataset_input.dataset.name == "retraining_data/v1"
    assert dataset_input.dataset.digest == mlflow_digest(metadata["output"]["sha256"])
    assert {t.key: t.value for t in dataset_input.tags}["sha256"] == metadata["output"]["sha256"]
    assert store.read_text(layout.VERSION_TRACKER).strip() == "1"
    assert compute_logs, "no step logs reached the S3 compute-log bucket"


def test_lineage_keeps_mlflow_from_reporting_usage_outside_ci() -> None:
    """MLflow 3 sends usage telemetry unless told not to (it stays quiet by itself only in CI)."""
    ci_markers = {"CI", "PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"}
    environment = {k: v for k, v in os.environ.items() if k not in ci_markers}
    script = (
        "import medqa_assets.lineage, mlflow.telemetry.utils as t; "
        "print(t.is_telemetry_disabled(), t._IS_IN_CI_ENV_OR_TESTING)"
    )
    completed = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
    assert completed.stdout.split() == ["True", "False"], completed.stderr[-2000:]

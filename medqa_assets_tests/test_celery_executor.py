"""The unchanged offline job on distributed executors produces what it produces in process.

* Dagster's multiprocess executor: ``medqa_assets.definitions`` as it is, each step a process.
* dagster-celery: two ``celery -A dagster_celery.app worker`` processes started here on the
  machine's Redis, a Dagster instance in PostgreSQL shared by the test and the workers, and the
  IO manager on the shared object store. The executor comes from ``medqa_assets_tests.celery_defs``
  (same assets, jobs and resources) with its broker in the run config, so no job code changes.

Every output under ``data/`` must be byte-identical to the in-process run's (``metadata.json`` up
to its ``created`` time).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository

from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore
from medqa_assets_tests.services import (
    REPO_ROOT,
    run_celery_workers,
    temporary_database,
    write_postgres_dagster_home,
    write_small_medquad,
)

S3_VARS = ("MEDQA_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI")


def outputs(store_root: Path) -> dict[str, str]:
    """sha256 of every object under data/ (metadata.json without its time of creation)."""
    store = ObjectStore(str(store_root))
    digests = {}
    for info in store.list("data/"):
        data = store.read_bytes(info.key)
        if info.key == layout.SPLIT_METADATA:
            metadata = json.loads(data)
            metadata.pop("created")
            data = json.dumps(metadata, sort_keys=True).encode()
        digests[info.key] = hashlib.sha256(data).hexdigest()
    return digests


def offline_variables(monkeypatch: pytest.MonkeyPatch, store_root: Path, source: Path) -> dict[str, str]:
    variables = {"MEDQA_STORE_URL": str(store_root), "MEDQA_MEDQUAD_SOURCE": str(source)}
    for name in S3_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MEDQA_PRODUCTION_SETS", raising=False)  # the job's shape is fixed at import
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_medquad(tmp_path_factory.mktemp("medquad") / "medquad.parquet")


@pytest.fixture(scope="module")
def in_process_outputs(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from medqa_assets.definitions import defs

    root = tmp_path_factory.mktemp("in-process") / "object_store"
    with pytest.MonkeyPatch.context() as monkeypatch:
        offline_variables(monkeypatch, root, source)
        with dg.instance_for_test() as instance:
            job = defs.resolve_job_def("offline_etl")
            assert job.execute_in_process(instance=instance).success
    digests = outputs(root)
    assert {layout.MEDQUAD_RAW, layout.SPLIT_METADATA, *layout.SPLIT_KEYS.values()} <= set(digests)
    return digests


def recon_offline_job(module: str) -> dg.ReconstructableJob:
    repository = ReconstructableRepository.for_module(module, "defs", working_directory=str(REPO_ROOT))
    return repository.get_reconstructable_job("offline_etl")


def step_workers(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker that executed it (from the workers' engine events)."""
    workers = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or not event.is_engine_event or "in celery worker" not in (record.message or ""):
            continue
        workers[event.step_key] = event.engine_event_data.metadata["Celery worker"].value
    return workers


@pytest.fixture
def postgres_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    with temporary_database("medqa_celery") as db_name:
        home = write_postgres_dagster_home(tmp_path / "dagster_home", db_name)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance


def test_offline_job_on_the_multiprocess_executor(
    in_process_outputs: dict[str, str], source: Path, postgres_instance: dg.DagsterInstance, tmp_path: Path, monkeypatch
) -> None:
    root = tmp_path / "object_store"
    offline_variables(monkeypatch, root, source)
    result = dg.execute_job(recon_offline_job("medqa_assets_tests.multiprocess_defs"), postgres_instance)
    assert result.success
    assert result.job_def.executor_def.name == "multi_or_in_process_executor"
    processes = {
        record.dagster_event.pid
        for record in postgres_instance.all_logs(result.run_id)
        if record.dagster_event is not None and record.dagster_event.is_step_success
    }
    assert len(processes) == 4  # every step ran in a process of its own
    assert outputs(root) == in_process_outputs


def test_offline_job_on_two_celery_workers(
    in_process_outputs: dict[str, str], source: Path, postgres_instance: dg.DagsterInstance, tmp_path: Path, monkeypatch
) -> None:
    root = tmp_path / "object_store"
    variables = offline_variables(monkeypatch, root, source)
    worker_env = {**variables, "DAGSTER_HOME": str(postgres_instance.root_directory)}
    with run_celery_workers(tmp_path / "celery", count=2, env=worker_env) as workers:
        result = dg.execute_job(
            recon_offline_job("medqa_assets_tests.celery_defs"),
            postgres_instance,
            run_config={"execution": {"config": workers.executor_config()}},
        )
        assert result.success
        assert result.job_def.executor_def.name == "celery"
        ran_on = step_workers(postgres_instance, result.run_id)
    assert set(ran_on) == {"medquad_raw", "medquad_clean", "dataset_split", "production_sets"}
    assert {host.split("@", 1)[0] for host in ran_on.values()} <= set(workers.names)
    assert outputs(root) == in_process_outputs
    assert (root / "mlflow" / "mlflow.db").is_file()  # lineage was recorded from a worker too

"""Shared pytest fixtures: a real S3 server (SeaweedFS) and store environments."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from medqa_assets.storage.object_store import ObjectStore

# No machine here reaches the Hugging Face hub, and huggingface_hub reads these once, at import: set
# them before any test imports it, so a hub lookup fails at once instead of timing out on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from medqa_assets_tests.s3_server import S3Server, delete_bucket, make_bucket, start_seaweedfs
from medqa_assets_tests.services import in_ci, postgres_url, run_mlflow_server, temporary_database

# Variables that could point a test at a real AWS account or another profile.
_AMBIENT_AWS_VARS = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")
_S3_VARS = ("MEDQA_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", *_AMBIENT_AWS_VARS)


@dataclass(frozen=True)
class S3StoreEnv:
    """What ``s3_store_env`` set up: a fresh bucket and the store URL inside it."""

    bucket: str
    store_url: str
    server: S3Server


@dataclass(frozen=True)
class LocalStoreEnv:
    """What ``local_store_env`` set up: a store directory under ``tmp_path``."""

    store_url: str
    root: Path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS S3 server for the whole test session (random credentials, loopback ports)."""
    server, stop = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        stop()


@pytest.fixture
def s3_store_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3StoreEnv]:
    """A fresh bucket, with MEDQA_STORE_URL=s3://<bucket>/medqa and the S3 variables set."""
    bucket = f"medqa-test-{secrets.token_hex(6)}"
    make_bucket(s3_server, bucket)
    store_url = f"s3://{bucket}/medqa"
    for name in _AMBIENT_AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDQA_STORE_URL", store_url)
    monkeypatch.setenv("MEDQA_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    for name in ("NO_PROXY", "no_proxy"):  # a configured HTTP proxy must not capture loopback traffic
        current = os.environ.get(name, "")
        monkeypatch.setenv(name, f"{current},127.0.0.1" if current else "127.0.0.1")
    yield S3StoreEnv(bucket=bucket, store_url=store_url, server=s3_server)
    # Deleting the bucket frees its SeaweedFS collection (volume); a failure here must not hide the test's.
    with contextlib.suppress(Exception):
        delete_bucket(s3_server, bucket)


@pytest.fixture
def local_store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStoreEnv:
    """MEDQA_STORE_URL=<tmp_path>/object_store, with every S3 variable removed."""
    root = tmp_path / "object_store"
    for name in _S3_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDQA_STORE_URL", str(root))
    return LocalStoreEnv(store_url=str(root), root=root)


def _retraining_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files settle and retire at once, one worker process: retraining tests need no waiting."""
    monkeypatch.setenv("MEDQA_SENSOR_SETTLE_SECONDS", "0")
    monkeypatch.setenv("MEDQA_RETIRE_AFTER_SECONDS", "0")
    monkeypatch.setenv("MEDQA_RETRAINING_WORKERS", "1")


@pytest.fixture(params=["local", "s3"])
def retraining_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    """The store of the retraining tests, once on a local directory and once on real S3."""
    request.getfixturevalue("local_store_env" if request.param == "local" else "s3_store_env")
    _retraining_env(monkeypatch)
    return ObjectStore.from_settings()


@pytest.fixture
def local_retraining_store(local_store_env: LocalStoreEnv, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    _retraining_env(monkeypatch)
    return ObjectStore.from_settings()


@pytest.fixture(autouse=True)
def _mlflow_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lineage runs of every test go to a SQLite file of its own, never into the working tree."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


MEDQUAD_XML_SUBSET = Path(__file__).resolve().parent / "data" / "medquad_xml"
SHARED_MEDQUAD_VAR = "MEDQA_SHARED_MEDQUAD"


@pytest.fixture(scope="session")
def medquad_xml_subset() -> Path:
    """60 original MedQuAD XML documents (5 per collection, CC BY 4.0) shipped with the tests."""
    return MEDQUAD_XML_SUBSET


@pytest.fixture(scope="session")
def shared_medquad() -> Path:
    """The full original MedQuAD XML distribution, for the tests that need all 47,441 rows.

    Found at ``MEDQA_SHARED_MEDQUAD`` or ``../shared/medquad`` beside the repository. Without it the
    test is skipped on a developer's machine; in CI (``CI`` set, and ``.ci/run`` points the variable
    at it) a missing distribution fails, so CI never passes by skipping.
    """
    default = Path(__file__).resolve().parents[1].parent / "shared" / "medquad"
    path = Path(os.environ.get(SHARED_MEDQUAD_VAR) or default)
    if not (path / "readme.txt").is_file():
        message = (
            f"the full MedQuAD XML distribution is not at {path}: set {SHARED_MEDQUAD_VAR} to its medquad/ "
            "folder (the tests on the 60-document subset shipped in medqa_assets_tests/data run without it)"
        )
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


# -- MLflow -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MlflowService:
    url: str
    artifacts_bucket: str
    log_path: Path


@pytest.fixture(scope="module")  # not the session: an idle MLflow server still costs CPU
def mlflow_service(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowService]:
    """``mlflow server``: backend in a fresh PostgreSQL database, artifacts proxied to SeaweedFS S3."""
    bucket = f"mlflow-test-{secrets.token_hex(5)}"
    make_bucket(s3_server, bucket)
    env = {
        "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_DEFAULT_REGION": s3_server.region,
    }
    try:
        with (
            temporary_database("medqa_mlflow") as db_name,
            run_mlflow_server(
                tmp_path_factory.mktemp("mlflow-server"), postgres_url(db_name), f"s3://{bucket}/artifacts", env
            ) as server,
        ):
            yield MlflowService(url=server.url, artifacts_bucket=bucket, log_path=server.log_path)
    finally:
        with contextlib.suppress(Exception):
            delete_bucket(s3_server, bucket)


@pytest.fixture
def tracking(mlflow_service: MlflowService, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """The pipeline pointed at the server; no artifact-store variables of MLflow's own."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_service.url)
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name, "")
        monkeypatch.setenv(name, f"{current},127.0.0.1" if current else "127.0.0.1")
    return MlflowClient(tracking_uri=mlflow_service.url)

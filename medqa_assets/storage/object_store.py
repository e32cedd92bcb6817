"""One storage layer for both backends: a local directory or an S3 bucket (AWS, MinIO, SeaweedFS).

All platform code reads and writes through :class:`ObjectStore`, with keys from
:mod:`medqa_assets.storage.layout`. Writes are atomic from a reader's view: a local write goes
to a temporary file that is renamed into place, and an S3 object appears only once its PUT
completes. Failures of the backend become a :class:`StoreError` whose message names the
setting to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import fsspec.asyn
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medqa_assets.settings import S3_ENDPOINT_VAR, STORE_URL_VAR, Settings
from medqa_assets.storage.layout import key_problem

TEMP_PREFIX = ".tmp-"
COPY_BLOCK_BYTES = 8 * 1024 * 1024
COPY_OBJECT_MAX_BYTES = 5 * 1024**3  # the largest object one CopyObject copies
CAS_ATTEMPTS = 50
UPLOAD_PART_BYTES = 8 * 1024 * 1024  # S3 wants at least 5 MiB in every part but the last
UPLOAD_PARTS_IN_FLIGHT = 2  # bounds a stream's memory to about (2 + 1) parts
DELETE_BATCH = 1000  # the most keys one DeleteObjects takes
ATTRS_METADATA_KEY = b"medqa_attrs"


# A conditional write lost: the S3 error code, or the HTTP status when a server sends no code.
PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412"})
NO_SUCH_KEY = frozenset({"NoSuchKey", "404"})


def s3_error_code(error: BaseException) -> str | None:
    """The S3 error code (``"PreconditionFailed"``, ``"NoSuchKey"``, ...) behind an s3fs/botocore error.

    s3fs wraps botocore's ``ClientError`` in an ``OSError`` whose text differs between servers, so
    callers branch on the code (or the HTTP status) found in the exception chain, never on text.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            code = (response.get("Error") or {}).get("Code")
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if code:
                return str(code)
            if status:
                return str(status)
        current = current.__cause__ or current.__context__
    return None


class StoreError(RuntimeError):
    """The object store could not be used; the message says which setting to check."""


class ConcurrentUpdate(RuntimeError):
    """A conditional write or delete lost: the object changed since it was read."""


@dataclass(frozen=True)
class IgnoredEntry:
    """Something under a listed prefix that is not an object the platform will read, and why."""

    key: str
    reason: str


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object, as a listing reports it."""

    key: str
    size: int
    mtime: float | None
    etag: str | None

    @property
    def version_token(self) -> str:
        """Changes whenever the object's content changes: for caches keyed by object version."""
        return self.etag or f"{self.mtime}-{self.size}"


@dataclass(frozen=True)
class CopiedRange:
    """What :meth:`ObjectStore.copy_range` wrote: its sha256, its size, its first and last bytes."""

    sha256: str
    size: int
    head: bytes
    tail: bytes


def _plain_http(endpoint_url: str | None) -> bool:
    return bool(endpoint_url) and str(endpoint_url).startswith("http://")


def _is_s3(url: str) -> bool:
    return url.startswith("s3://")


CREDENTIAL_ERROR_CODES = frozenset(
    {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "Forbidden", "403", "InvalidToken"}
)


def _s3_failure_kind(error: BaseException) -> str | None:
    """What an S3 failure means, from exception types and error codes along its cause chain, never
    from message text (servers word them differently, and a key may contain "403")."""
    import aiohttp  # s3fs's transport
    import botocore.exceptions as botocore_errors

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, botocore_errors.ClientError):
            code = str(current.response.get("Error", {}).get("Code", ""))
            if code in CREDENTIAL_ERROR_CODES:
                return "credentials"
            if code == "NoSuchBucket":
                return "no_bucket"
        if isinstance(current, botocore_errors.NoCredentialsError | botocore_errors.PartialCredentialsError):
            return "credentials"
        if isinstance(
            current,
            botocore_errors.EndpointConnectionError
            | botocore_errors.ConnectTimeoutError
            | botocore_errors.ReadTimeoutError
            | ConnectionError
            | TimeoutError,
        ):
            return "unreachable"
        if isinstance(current, aiohttp.ClientConnectionError):
            return "unreachable"
        current = current.__cause__ or current.__context__
    return None


class ObjectStore:
    """The platform's object store rooted at ``url`` (a directory or ``s3://bucket[/prefix]``)."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        key: str | None = None,
        secret: str | None = None,
    ) -> None:
        self.is_s3 = _is_s3(url)
        self.endpoint_url = endpoint_url
        if self.is_s3:
            root = url[len("s3://") :].strip("/")
            if not root:
                raise StoreError(f"{STORE_URL_VAR}={url!r} names no bucket; set it to s3://bucket[/prefix]")
            self.root = root
            self.url = f"s3://{root}"
            self.fs = fsspec.filesystem(
                "s3",
                key=key,
                secret=secret,
                endpoint_url=endpoint_url,
                use_listings_cache=False,
                # fsspec's instance cache (per process, per settings) lets stores opened again and
                # again, as each build worker's chunk does, share one client instead of paying
                # for a new one (botocore's service models, an SSL context) every time.
                config_kwargs={
                    "connect_timeout": 5,
                    "read_timeout": 30,
                    "retries": {"max_attempts": 2, "mode": "standard"},
                    # Without TLS SigV4 signs every upload's sha256; a CRC32 of it as well would
                    # only cost CPU, so checksums go only where S3 requires one (DeleteObjects).
                    # Over https they stay: there the CRC32 is what spares the sha256.
                    **({"request_checksum_calculation": "when_required"} if _plain_http(endpoint_url) else {}),
                },
            )
            # s3fs retries every botocore attempt 5 more times by default: a dead endpoint would
            # take minutes to report. Two rounds of two attempts bound it to seconds.
            self.fs.retries = 2
        else:
            if "://" in url and not url.startswith("file://"):
                raise StoreError(f"{STORE_URL_VAR}={url!r} is neither a local directory nor s3://bucket[/prefix]")
            root_path = Path(url.removeprefix("file://")).expanduser().resolve()
            self.root = str(root_path)
            self.url = self.root
            self.fs = fsspec.filesystem("file")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ObjectStore:
        settings = settings or Settings.from_env()
        return cls(
            settings.store_url,
            endpoint_url=settings.s3_endpoint_url,
            key=settings.aws_access_key_id,
            secret=settings.aws_secret_access_key,
        )

    def __repr__(self) -> str:  # never shows credentials
        return f"ObjectStore({self.url!r})"

    # -- naming -------------------------------------------------------------------------
    def path(self, key: str) -> str:
        """The backend path of a key (without the ``s3://`` scheme).

        A key must be normalized (no ``..``, empty or absolute segments); locally it must also
        name the file itself, not a path through a symbolic link, so no key reaches outside the root.
        """
        relative = key.strip("/")
        if relative:
            problem = key_problem(relative)
            if problem:
                raise StoreError(f"refusing the key {key!r}: {problem}")
        joined = f"{self.root}/{relative}" if relative else self.root
        if not self.is_s3 and relative and os.path.realpath(joined) != os.path.normpath(joined):
            raise StoreError(f"refusing the key {key!r}: it goes through a symbolic link")
        return joined

    def _s3_location(self, key: str) -> tuple[str, str]:
        """(bucket, object name) of a key on S3."""
        bucket, _, name = self.path(key).partition("/")
        return bucket, name

    def uri(self, key: str) -> str:
        """A URL a person or another tool can use for the object."""
        return f"s3://{self.path(key)}" if self.is_s3 else self.path(key)

    def _key_of(self, path: str) -> str:
        path = path.removeprefix("s3://")
        return path[len(self.root) :].lstrip("/")

    # -- error translation -------------------------------------------------------------
    @contextlib.contextmanager
    def _translated_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (FileNotFoundError, FileExistsError, StoreError):
            raise
        except PermissionError as error:
            raise StoreError(self._credentials_message(what, error)) from error
        except Exception as error:
            kind = _s3_failure_kind(error)
            if kind == "credentials":
                raise StoreError(self._credentials_message(what, error)) from error
            if kind == "no_bucket":
                raise StoreError(
                    f"cannot {what}: bucket {self.root.split('/')[0]!r} does not exist; "
                    f"create it or change {STORE_URL_VAR}"
                ) from error
            if self.is_s3 and kind == "unreachable":
                raise StoreError(
                    f"cannot {what}: the S3 endpoint {self.endpoint_url or 'AWS'} is unreachable "
                    f"({type(error).__name__}); check {S3_ENDPOINT_VAR} and that the server is up"
                ) from error
            raise

    def _credentials_message(self, what: str, error: BaseException) -> str:
        return (
            f"cannot {what}: the S3 server refused the credentials or access to {self.url} "
            f"({type(error).__name__}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )

    def check_access(self) -> None:
        """Fail early, with one clear message, if the store cannot be reached or used."""
        with self._translated_errors(f"use the object store {self.url}"):
            if self.is_s3:
                self.fs.ls(self.root.split("/")[0], detail=False)
            else:
                Path(self.root).mkdir(parents=True, exist_ok=True)

    # -- bytes --------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        with self._translated_errors(f"look up {key}"):
            return bool(self.fs.exists(self.path(key)))

    def read_bytes(self, key: str) -> bytes:
        return self.read_many([(key, None, None)])[0]

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of an object: for sampling large objects."""
        with self._translated_errors(f"read {key}"):
            return self.fs.cat_file(self.path(key), start=start, end=end)

    def read_many(self, requests: Sequence[tuple[str, int | None, int | None]]) -> list[bytes]:
        """Bytes of several (key, start, end) requests, ``None`` bounds meaning the whole object.

        S3: all requests at once (s3fs runs them side by side), so a batch of small objects
        costs about one round trip; locally one read after the other.
        """
        what = requests[0][0] if len(requests) == 1 else f"{len(requests)} objects under {self.url}"
        with self._translated_errors(f"read {what}"):
            if not self.is_s3:
                return [self.fs.cat_file(self.path(key), start=start, end=end) for key, start, end in requests]
            paths = [self.path(key) for key, _, _ in requests]
            starts = [start for _, start, _ in requests]
            ends = [end for _, _, end in requests]
            # max_concurrency=1: one GET per object, without s3fs's HEAD for the size first
            return self.fs.cat_ranges(paths, starts, ends, on_error="raise", max_concurrency=1)

    def open_read(self, key: str) -> Any:
        with self._translated_errors(f"read {key}"):
            return self.fs.open(self.path(key), "rb")

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        """Store ``data`` at ``key`` atomically; with ``exclusive`` fail if the key exists.

        ``exclusive`` raises :class:`FileExistsError` when another writer got there first.
        """
        with self._translated_errors(f"write {key}"):
            if self.is_s3:
                try:
                    self.fs.pipe_file(self.path(key), data, mode="create" if exclusive else "overwrite")
                except Exception as error:
                    if exclusive and s3_error_code(error) in PRECONDITION_FAILED:
                        raise FileExistsError(key) from error
                    raise
                return
            with self._atomic_local_file(key, exclusive=exclusive) as handle:
                handle.write(data)

    @contextlib.contextmanager
    def _atomic_local_file(self, key: str, *, exclusive: bool = False) -> Iterator[Any]:
        """A temporary file beside the target, put in place only when the block succeeds."""
        target = Path(self.path(key))
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:16]}")  # short: any target name fits
        try:
            with open(temp, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            if exclusive:
                os.link(temp, target)  # fails if the target exists: an atomic create-if-absent
            else:
                os.replace(temp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[Any]:
        """A binary stream to ``key`` that appears atomically when the block ends without error.

        Local: a temporary file renamed into place. S3: a multipart upload whose parts go out in
        the background while the caller produces the next ones, completed on success and aborted
        on error, so a failed write leaves the previous object intact.
        """
        with self._translated_errors(f"write {key}"):
            if self.is_s3:
                bucket, name = self._s3_location(key)
                upload = _BackgroundUpload(self.fs, bucket, name)
                try:
                    yield upload
                    upload.close()
                except BaseException:
                    upload.abort()
                    raise
                return
            with self._atomic_local_file(key) as handle:
                yield handle

    def delete(self, key: str) -> None:
        with self._translated_errors(f"delete {key}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(key))

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete objects, absent ones included. S3: one DeleteObjects per 1000 keys."""
        if not self.is_s3:
            for key in keys:
                self.delete(key)
            return
        bucket = self.root.split("/")[0]
        names = [self._s3_location(key)[1] for key in keys]
        with self._translated_errors(f"delete {len(keys)} object(s) under {self.url}"):
            for first in range(0, len(names), DELETE_BATCH):
                objects = [{"Key": name} for name in names[first : first + DELETE_BATCH]]
                response = self.fs.call_s3("delete_objects", Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
                if response.get("Errors"):
                    failed = response["Errors"][0]
                    raise StoreError(f"cannot delete {failed.get('Key')}: {failed.get('Code')} {failed.get('Message')}")

    def move_many(self, moves: Sequence[tuple[str, str]]) -> None:
        """Move objects (source, destination); afterwards every destination exists and no source does.

        S3: server-side copies side by side (CopyObject: up to 5 GB each), then one DeleteObjects
        for all sources, with no existence probes. Safe to repeat after a crash: a source already
        gone whose destination exists counts as moved (found out from the failed copy, not by
        asking first).
        """
        if not self.is_s3:
            for source, destination in moves:
                with self._translated_errors(f"move {source} to {destination}"):
                    self._move_local(source, destination)
            return
        bucket = self.root.split("/")[0]
        copies = [
            {
                "Bucket": bucket,
                "Key": self._s3_location(destination)[1],
                "CopySource": {"Bucket": bucket, "Key": self._s3_location(source)[1]},
            }
            for source, destination in moves
        ]
        with self._translated_errors(f"move {len(moves)} object(s) under {self.url}"):
            results = self._s3_calls("copy_object", copies)
            for (source, destination), result in zip(moves, results, strict=True):
                if not isinstance(result, BaseException):
                    continue
                if not (s3_error_code(result) in NO_SUCH_KEY or isinstance(result, FileNotFoundError)):
                    raise result
                if not self.fs.exists(self.path(destination)):  # only when the source was gone
                    raise FileNotFoundError(source) from result
        self.delete_many([source for source, _ in moves])

    def _move_local(self, source: str, destination: str) -> None:
        if not os.path.exists(self.path(source)):
            if os.path.exists(self.path(destination)):
                return
            raise FileNotFoundError(source)
        Path(self.path(destination)).parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path(source), self.path(destination))

    def _s3_calls(self, method: str, calls: list[dict[str, Any]]) -> list[Any]:
        """One S3 request per ``calls`` entry, side by side on s3fs's event loop; a failed request
        leaves its exception in its place (s3fs's connection pool bounds how many run at once)."""

        async def gather() -> list[Any]:
            return await asyncio.gather(*(self.fs._call_s3(method, **call) for call in calls), return_exceptions=True)

        return fsspec.asyn.sync(self.fs.loop, gather)

    def info(self, key: str) -> ObjectInfo:
        with self._translated_errors(f"look up {key}"):
            if not self.is_s3:
                stat = os.stat(self.path(key))
                return ObjectInfo(key=key, size=stat.st_size, mtime=stat.st_mtime, etag=_local_token(stat))
            return self._object_info(self.fs.info(self.path(key)))

    def _object_info(self, entry: dict[str, Any]) -> ObjectInfo:
        mtime = entry.get("mtime") or entry.get("LastModified") or entry.get("created")
        if hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        etag = entry.get("ETag") or entry.get("etag")
        return ObjectInfo(
            key=self._key_of(entry["name"]),
            size=int(entry.get("size") or 0),
            mtime=float(mtime) if mtime is not None else None,
            etag=etag.strip('"') if isinstance(etag, str) else None,
        )

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix`` (recursively), sorted by key; temporary files excluded."""
        return self.scan(prefix)[0]

    def scan(self, prefix: str) -> tuple[list[ObjectInfo], list[IgnoredEntry]]:
        """Objects under ``prefix``, and everything else found there (symlinks, folders, odd names) with why."""
        with self._translated_errors(f"list {prefix}"):
            if not self.is_s3:
                return self._scan_local(prefix)
            try:
                entries = self.fs.find(self.path(prefix).rstrip("/"), detail=True)
            except FileNotFoundError:
                return [], []
        infos, ignored = [], []
        for entry in entries.values():
            key = self._key_of(entry["name"])
            if entry.get("type", "file") != "file":
                continue  # a common prefix some servers list as a folder: S3 has no folders
            if key.endswith("/"):
                ignored.append(IgnoredEntry(key, "folder marker, not a file"))
            elif os.path.basename(key).startswith(TEMP_PREFIX):
                ignored.append(IgnoredEntry(key, "temporary name (.tmp-*)"))
            elif key_problem(key):
                ignored.append(IgnoredEntry(key, f"unusable name: {key_problem(key)}"))
            else:
                infos.append(self._object_info(entry))
        return sorted(infos, key=lambda info: info.key), sorted(ignored, key=lambda e: e.key)

    def _scan_local(self, prefix: str) -> tuple[list[ObjectInfo], list[IgnoredEntry]]:
        base = self.path(prefix).rstrip("/")
        infos: list[ObjectInfo] = []
        ignored: list[IgnoredEntry] = []
        if not os.path.isdir(base):
            return infos, ignored
        for directory, dirnames, filenames in os.walk(base):  # never follows symbolic links
            for name in list(dirnames):
                if os.path.islink(os.path.join(directory, name)):
                    ignored.append(IgnoredEntry(self._key_of(os.path.join(directory, name)), "symbolic link"))
                    dirnames.remove(name)
            if not dirnames and not filenames and directory != base:
                ignored.append(IgnoredEntry(self._key_of(directory) + "/", "empty folder"))
            for name in filenames:
                full = os.path.join(directory, name)
                key = self._key_of(full)
                if name.startswith(TEMP_PREFIX):
                    ignored.append(IgnoredEntry(key, "temporary name (.tmp-*)"))
                    continue
                try:
                    stat = os.lstat(full)
                except FileNotFoundError:
                    continue
                if os.path.islink(full):
                    ignored.append(IgnoredEntry(key, "symbolic link"))
                elif not os.path.isfile(full):
                    ignored.append(IgnoredEntry(key, "not a regular file"))
                elif key_problem(key):
                    ignored.append(IgnoredEntry(key, f"unusable name: {key_problem(key)}"))
                else:
                    infos.append(ObjectInfo(key=key, size=stat.st_size, mtime=stat.st_mtime, etag=_local_token(stat)))
        return sorted(infos, key=lambda info: info.key), sorted(ignored, key=lambda e: e.key)

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate sub-folders of ``prefix`` (one listing call, not recursive)."""
        with self._translated_errors(f"list {prefix}"):
            base = self.path(prefix).rstrip("/")
            try:
                entries = self.fs.ls(base, detail=True)
            except FileNotFoundError:
                return []
        return sorted(os.path.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "directory")

    # -- conditional updates -------------------------------------------------------------
    def read_with_token(self, key: str) -> tuple[bytes | None, str | None]:
        """The object's bytes and a token that changes with every write (``None, None`` if absent).

        The token is taken before the bytes: if the object changes in between, a conditional
        write with that token fails, so a compare-and-set built on this never acts on stale data.
        """
        with self._translated_errors(f"read {key}"):
            try:
                token = self.info(key).etag
                return self.read_bytes(key), token
            except FileNotFoundError:
                return None, None

    def write_if(self, key: str, data: bytes, token: str | None) -> None:
        """Write ``data`` only if the object still has ``token`` (``None``: only if it is absent).

        Raises :class:`ConcurrentUpdate` when another writer got there first. S3: a conditional
        PUT (If-Match / If-None-Match); locally: under a lock on the object's folder.
        """
        with self._translated_errors(f"write {key}"):
            if self.is_s3:
                bucket, name = self._s3_location(key)
                condition = {"IfMatch": f'"{token}"'} if token else {"IfNoneMatch": "*"}
                try:
                    self.fs.call_s3("put_object", Bucket=bucket, Key=name, Body=data, **condition)
                except Exception as error:
                    if s3_error_code(error) in PRECONDITION_FAILED | {"ConditionalRequestConflict", "409"}:
                        raise ConcurrentUpdate(key) from error
                    raise
                return
            with self._folder_lock(key):
                if self._local_token(key) != token:
                    raise ConcurrentUpdate(key)
                with self._atomic_local_file(key) as handle:
                    handle.write(data)

    def update_bytes(self, key: str, change: Callable[[bytes | None], bytes | None]) -> bytes | None:
        """Compare-and-set: ``change(current or None)`` returns the new bytes, or ``None`` to leave
        the object as it is. Retried on conflict; returns what is stored afterwards."""
        for attempt in range(CAS_ATTEMPTS):
            current, token = self.read_with_token(key)
            new = change(current)
            if new is None:
                return current
            try:
                self.write_if(key, new, token)
                return new
            except ConcurrentUpdate:
                time.sleep(0.002 * (attempt + 1))
        raise StoreError(f"cannot update {key}: it kept changing under {CAS_ATTEMPTS} attempts")

    def update_json(self, key: str, change: Callable[[Any], Any]) -> Any:
        """:meth:`update_bytes` for a JSON document (``change`` gets ``None`` when it is absent)."""

        def change_bytes(current: bytes | None) -> bytes | None:
            new = change(json.loads(current) if current is not None else None)
            return None if new is None else json.dumps(new, indent=2, sort_keys=True).encode()

        stored = self.update_bytes(key, change_bytes)
        return json.loads(stored) if stored is not None else None

    def delete_if(self, key: str, token: str) -> bool:
        """Delete the object only if it still has ``token``; ``False`` if it changed or is gone.

        Locally the file is first renamed aside (atomic), then checked: a file that a writer
        replaced in between is put back, never lost.
        """
        with self._translated_errors(f"delete {key}"):
            if self.is_s3:
                bucket, name = self._s3_location(key)
                try:
                    self.fs.call_s3("delete_object", Bucket=bucket, Key=name, IfMatch=f'"{token}"')
                except FileNotFoundError:
                    return False
                except Exception as error:
                    if s3_error_code(error) in PRECONDITION_FAILED | {"NoSuchKey", "404"}:
                        return False
                    raise
                return True
            path = Path(self.path(key))
            aside = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:16]}")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                return False
            if _local_token(os.stat(aside)) == token:
                aside.unlink()
                return True
            try:
                os.link(aside, path)  # put back; if a new file took the name meanwhile, keep both
            except FileExistsError:
                os.link(aside, path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}"))
            aside.unlink()
            return False

    def _local_token(self, key: str) -> str | None:
        try:
            return _local_token(os.stat(self.path(key)))
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _folder_lock(self, key: str) -> Iterator[None]:
        """An exclusive lock on the folder holding ``key`` (processes on one host or one shared volume)."""
        folder = os.path.dirname(self.path(key))
        os.makedirs(folder, exist_ok=True)
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    # -- copies and housekeeping ------------------------------------------------------------
    def copy_range(
        self,
        source: str,
        destination: str,
        start: int,
        end: int,
        *,
        token: str | None = None,
        size: int | None = None,
        edge_bytes: int = 0,
    ) -> CopiedRange:
        """Copy bytes ``start`` to ``end`` of ``source`` to ``destination`` in bounded memory.

        Returns the sha256 and size of what was written, and its first and last ``edge_bytes``.
        On S3 every read is pinned to the source's ETag (``token``, else the one it had when
        opened), so a source replaced mid-copy fails the copy instead of mixing two versions.
        When the range is all of a source of ``size`` bytes, S3 copies it server-side
        (CopyObject if the ETag is still ``token``) and the digest is read from the copy: the
        bytes cross the network once, not twice.
        """
        try:
            with self._translated_errors(f"copy {source}"):
                if self.is_s3 and token and start == 0 and end == size and size <= COPY_OBJECT_MAX_BYTES:
                    copied = self._copy_object(source, destination, token)
                    return _digest(self._source_blocks(destination, 0, end, copied), edge_bytes)
                with self.open_write(destination) as writer:
                    return _digest(self._source_blocks(source, start, end, token), edge_bytes, writer.write)
        except (ConcurrentUpdate, FileNotFoundError, StoreError):
            raise
        except Exception as error:
            if s3_error_code(error) in PRECONDITION_FAILED:  # replaced since it was looked up or opened
                raise ConcurrentUpdate(f"{source} was replaced while it was copied") from error
            raise

    def _copy_object(self, source: str, destination: str, token: str) -> str:
        """A server-side copy of ``source`` as it is at ETag ``token``; returns the copy's ETag."""
        bucket, name = self._s3_location(source)
        response = self.fs.call_s3(
            "copy_object",
            Bucket=bucket,
            Key=self._s3_location(destination)[1],
            CopySource={"Bucket": bucket, "Key": name},
            CopySourceIfMatch=f'"{token}"',
        )
        return response["CopyObjectResult"]["ETag"].strip('"')

    def _source_blocks(self, source: str, start: int, end: int, token: str | None) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of ``source`` in blocks of at most ``COPY_BLOCK_BYTES``. S3 with a
        token: one ranged GET per block, each only while the ETag is still ``token`` (no HEAD first)."""
        if self.is_s3 and token:
            bucket, name = self._s3_location(source)

            async def get(first: int, last: int) -> bytes:
                response = await self.fs._call_s3(
                    "get_object", Bucket=bucket, Key=name, Range=f"bytes={first}-{last - 1}", IfMatch=f'"{token}"'
                )
                try:
                    return await response["Body"].read()
                finally:
                    response["Body"].close()

            for first in range(start, end, COPY_BLOCK_BYTES):
                last = min(end, first + COPY_BLOCK_BYTES)
                block = fsspec.asyn.sync(self.fs.loop, get, first, last)
                if len(block) < last - first:
                    raise ConcurrentUpdate(f"{source} shrank while it was copied")
                yield block
            return
        with self.open_read(source) as reader:
            reader.seek(start)
            position = start
            while position < end:
                block = reader.read(min(COPY_BLOCK_BYTES, end - position))
                if not block:
                    raise ConcurrentUpdate(f"{source} shrank while it was copied")
                position += len(block)
                yield block

    def sweep_temporary_files(self, prefix: str, older_than_s: float = 3600) -> int:
        """Remove what killed runs left under ``prefix``: temporary files (local) or unfinished
        multipart uploads (S3) older than ``older_than_s``. Returns how many were removed."""
        cutoff = time.time() - older_than_s
        removed = 0
        with self._translated_errors(f"clean up {prefix}"):
            if self.is_s3:
                bucket, name = self._s3_location(prefix)
                listing = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=name)
                for upload in listing.get("Uploads", []):
                    if upload["Initiated"].timestamp() < cutoff:
                        self.fs.call_s3(
                            "abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed += 1
                return removed
            base = self.path(prefix).rstrip("/")
            for directory, _, filenames in os.walk(base):
                for name in filenames:
                    full = os.path.join(directory, name)
                    with contextlib.suppress(FileNotFoundError):
                        if name.startswith(TEMP_PREFIX) and os.lstat(full).st_mtime < cutoff:
                            os.unlink(full)
                            removed += 1
        return removed

    # -- structured data ----------------------------------------------------------------
    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, value: Any, *, exclusive: bool = False) -> None:
        self.write_bytes(key, json.dumps(value, indent=2, sort_keys=True, default=str).encode(), exclusive=exclusive)

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def write_jsonl(self, key: str, frame: pd.DataFrame) -> bytes:
        """Store ``frame`` as JSON Lines; returns the bytes written (for checksums)."""
        data = frame_to_jsonl(frame)
        self.write_bytes(key, data)
        return data

    def read_jsonl(self, key: str, columns: list[str] | None = None) -> pd.DataFrame:
        return jsonl_to_frame(self.read_bytes(key), columns)

    def write_parquet(self, key: str, frame: pd.DataFrame) -> bytes:
        """Store ``frame`` as Parquet; ``frame.attrs`` (JSON-able) travel in the file's metadata."""
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if frame.attrs:
            metadata = dict(table.schema.metadata or {})
            metadata[ATTRS_METADATA_KEY] = json.dumps(frame.attrs, default=str).encode()
            table = table.replace_schema_metadata(metadata)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        data = buffer.getvalue()
        self.write_bytes(key, data)
        return data

    def read_parquet(self, key: str, columns: list[str] | None = None) -> pd.DataFrame:
        table = pq.read_table(io.BytesIO(self.read_bytes(key)), columns=columns)
        frame = table.to_pandas(types_mapper=_string_types)
        attrs = (table.schema.metadata or {}).get(ATTRS_METADATA_KEY)
        if attrs:
            frame.attrs = json.loads(attrs)
        return frame


def _digest(blocks: Iterator[bytes], edge_bytes: int, sink: Callable[[bytes], Any] | None = None) -> CopiedRange:
    """sha256, size and first and last ``edge_bytes`` of ``blocks``, each also given to ``sink``."""
    digest = hashlib.sha256()
    size = 0
    head = tail = b""
    for block in blocks:
        if sink is not None:
            sink(block)
        digest.update(block)
        size += len(block)
        if edge_bytes:
            head += block[: max(0, edge_bytes - len(head))]
            tail = (tail + block[-edge_bytes:])[-edge_bytes:]
    return CopiedRange(digest.hexdigest(), size, head, tail)


class _BackgroundUpload:
    """A write-only stream to one S3 object: each part is sent on s3fs's event loop while the
    caller produces the next (at most ``UPLOAD_PARTS_IN_FLIGHT`` waiting), so writing does not
    wait for the network. An object smaller than one part is one PUT at :meth:`close`."""

    def __init__(self, fs: Any, bucket: str, key: str, part_bytes: int = UPLOAD_PART_BYTES) -> None:
        self._fs = fs
        self._target = {"Bucket": bucket, "Key": key}
        self._part_bytes = part_bytes
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._upload_id: str | None = None
        self._parts: list[Future] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        self._buffer.append(bytes(data))
        self._buffered += len(data)
        if self._buffered >= self._part_bytes:
            self._send_part()
        return len(data)

    def _take_buffer(self) -> bytes:
        data = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        return data

    def _send_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = self._fs.call_s3("create_multipart_upload", **self._target)["UploadId"]
        pending = [part for part in self._parts if not part.done()]
        if len(pending) >= UPLOAD_PARTS_IN_FLIGHT:
            pending[0].result()  # back-pressure; raises if that part failed
        failed = next((part.exception() for part in self._parts if part.done() and part.exception()), None)
        if failed is not None:
            raise failed
        call = self._fs._call_s3(
            "upload_part",
            **self._target,
            UploadId=self._upload_id,
            PartNumber=len(self._parts) + 1,
            Body=self._take_buffer(),
        )
        self._parts.append(asyncio.run_coroutine_threadsafe(call, self._fs.loop))

    def close(self) -> None:
        """Complete the object: everything written appears at once."""
        if self.closed:
            return
        if self._upload_id is None:
            self._fs.call_s3("put_object", **self._target, Body=self._take_buffer())
        else:
            if self._buffered:
                self._send_part()
            etags = [{"PartNumber": n, "ETag": part.result()["ETag"]} for n, part in enumerate(self._parts, start=1)]
            self._fs.call_s3(
                "complete_multipart_upload",
                **self._target,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": etags},
            )
        self.closed = True

    def abort(self) -> None:
        """Drop what was written: the previous object, if any, stays as it was."""
        self.closed = True
        self._buffer = []
        if self._upload_id is None:
            return
        # The error that got here matters more than a failed clean-up, which the sweep of
        # unfinished uploads (sweep_temporary_files) catches later.
        with contextlib.suppress(Exception):
            for part in self._parts:
                with contextlib.suppress(Exception):
                    part.result()  # parts in flight finish first, or the abort could miss them
            self._fs.call_s3("abort_multipart_upload", **self._target, UploadId=self._upload_id)


def _local_token(stat: os.stat_result) -> str:
    """Changes when a local file is written or replaced: modification time, size and inode."""
    return f"{stat.st_mtime_ns}-{stat.st_size}-{stat.st_ino}"


def _string_types(arrow_type: pa.DataType) -> Any:
    return pd.StringDtype() if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) else None


def frame_to_jsonl(frame: pd.DataFrame) -> bytes:
    """JSON Lines that ``datasets.load_dataset("json")`` and the training code read."""
    if frame.empty:
        return b""
    text = frame.to_json(orient="records", lines=True, force_ascii=False, date_format="iso")
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def jsonl_to_frame(data: bytes, columns: list[str] | None = None) -> pd.DataFrame:
    if not data.strip():
        return pd.DataFrame(columns=columns or [])
    frame = pd.read_json(io.BytesIO(data), lines=True, dtype=False, convert_dates=False)
    if columns is not None:
        frame = frame.reindex(columns=columns)
    return frame

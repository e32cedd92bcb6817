"""One storage layer for both backends: a local directory or an S3 bucket (AWS, MinIO, SeaweedFS).

All platform code reads and writes through :class:`ObjectStore`, with keys from
:mod:`medqa_assets.storage.layout`. Writes are atomic from a reader's view: a local write goes
to a temporary file that is renamed into place, and an S3 object appears only once its PUT
completes. Failures of the backend become a :class:`StoreError` whose message names the
setting to change.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medqa_assets.settings import S3_ENDPOINT_VAR, STORE_URL_VAR, Settings

TEMP_PREFIX = ".tmp-"
ATTRS_METADATA_KEY = b"medqa_attrs"


# A conditional write lost: the S3 error code, or the HTTP status when a server sends no code.
PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412"})


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


def _is_s3(url: str) -> bool:
    return url.startswith("s3://")


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
                skip_instance_cache=True,
                config_kwargs={
                    "connect_timeout": 5,
                    "read_timeout": 30,
                    "retries": {"max_attempts": 2, "mode": "standard"},
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
        """The backend path of a key (without the ``s3://`` scheme)."""
        return f"{self.root}/{key.lstrip('/')}"

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
        except Exception as error:  # botocore/aiohttp errors have no common base worth naming
            text = f"{type(error).__name__}: {error}"
            lowered = text.lower()
            if any(
                s in lowered
                for s in ("accessdenied", "signaturedoesnotmatch", "invalidaccesskeyid", "forbidden", "403")
            ):
                raise StoreError(self._credentials_message(what, error)) from error
            if "nosuchbucket" in lowered:
                raise StoreError(
                    f"cannot {what}: bucket {self.root.split('/')[0]!r} does not exist; "
                    f"create it or change {STORE_URL_VAR}"
                ) from error
            if self.is_s3 and any(
                s in lowered for s in ("connect", "endpoint", "timeout", "timed out", "name or service")
            ):
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
        with self._translated_errors(f"read {key}"):
            return self.fs.cat_file(self.path(key))

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of an object: for sampling large objects."""
        with self._translated_errors(f"read {key}"):
            return self.fs.cat_file(self.path(key), start=start, end=end)

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
        temp = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{target.name}")
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

        Local: a temporary file renamed into place. S3: a (multipart) upload that is completed
        on success and aborted on error, so a failed write leaves the previous object intact.
        """
        with self._translated_errors(f"write {key}"):
            if self.is_s3:
                handle = self.fs.open(self.path(key), "wb")
                try:
                    yield handle
                except BaseException:
                    handle.discard()  # aborts the multipart upload: the previous object stays
                    handle.closed = True  # a discarded s3fs file must not try to upload again when collected
                    raise
                handle.close()
                return
            with self._atomic_local_file(key) as handle:
                yield handle

    def delete(self, key: str) -> None:
        with self._translated_errors(f"delete {key}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(key))

    def move(self, source: str, destination: str) -> None:
        """Move one object; afterwards the destination exists and the source does not.

        Safe to repeat after a crash: if only the destination is left, it is a no-op.
        """
        with self._translated_errors(f"move {source} to {destination}"):
            if not self.fs.exists(self.path(source)):
                if self.fs.exists(self.path(destination)):
                    return
                raise FileNotFoundError(source)
            if self.is_s3:
                self.fs.copy(self.path(source), self.path(destination))
                self.fs.rm_file(self.path(source))
            else:
                Path(self.path(destination)).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.path(source), self.path(destination))

    def info(self, key: str) -> ObjectInfo:
        with self._translated_errors(f"look up {key}"):
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
        with self._translated_errors(f"list {prefix}"):
            base = self.path(prefix).rstrip("/")
            if not self.is_s3 and not os.path.isdir(base):
                return []
            try:
                entries = self.fs.find(base, detail=True)
            except FileNotFoundError:
                return []
        infos = [
            self._object_info(entry)
            for entry in entries.values()
            if entry.get("type", "file") == "file" and not os.path.basename(entry["name"]).startswith(TEMP_PREFIX)
        ]
        return sorted(infos, key=lambda info: info.key)

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate sub-folders of ``prefix`` (one listing call, not recursive)."""
        with self._translated_errors(f"list {prefix}"):
            base = self.path(prefix).rstrip("/")
            try:
                entries = self.fs.ls(base, detail=True)
            except FileNotFoundError:
                return []
        return sorted(os.path.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "directory")

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

"""Test stand-ins for the serving team's two chatbot apps and the logs they write.

The stand-ins follow contracts.md sections 4 and 5 (the serving apps' HTTP contract and the production log
shapes and write behaviour) and were written from the contract text only, independently of the platform code
they are meant to test.

Pieces:

- models: a callable ``question -> answer``; raising :class:`ModelFailure` (or any exception) means a model
  failure (HTTP 500), raising :class:`ModelTimeout` means a timed-out request (see ``timeout_status``).
- targets: :class:`LocalDirTarget` (a ``retraining_data_raw/`` folder) and :class:`S3Target` (a bucket prefix);
  both offer the same small read/write/append/upload surface so every sink runs the same code on either.
- sinks: :class:`AppendJsonLinesSink`, :class:`RewriteArraySink`, :class:`CumulativeCopySink`,
  :class:`LocalDiskSink`. They reproduce the apps' observed write behaviour, including the *unlocked*
  read-modify-write that corrupts files under concurrent requests (``locked=True`` gives clean files).
- damaged-file helpers: :func:`cut_off_array`, :func:`interleaved_json_lines`, :func:`perf_log_csv`,
  :func:`single_object_json` / :func:`write_single_object`.
- apps: :func:`create_fastapi_app` (``POST /api/v1/answer``), :func:`create_flask_app` (``POST /ask``) and
  :func:`run_app`, which serves either on 127.0.0.1 in a background thread.

fastapi, uvicorn, flask and boto3 are imported lazily, only by the pieces that need them.
"""

import contextlib
import json
import os
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, BinaryIO, Literal

TIMEOUT_ANSWER = "Timed out waiting for model response."
"""The answer text a timed-out request is logged with (and, by default, answered with)."""

DEFAULT_S3_PREFIX = "data/production/retraining_data_raw/"
"""Where ``retraining_data_raw/`` sits below the store root (S3 prefix or local sub-path)."""

RAW_SUBDIR = Path("data", "production", "retraining_data_raw")

UTF8_BOM = b"\xef\xbb\xbf"

TsFormat = Literal["iso_z", "iso_offset", "iso_naive", "epoch"]
Shape = Literal["auto", "answer_jsonl", "symptoms_jsonl", "array"]
Variant = Literal["fastapi", "flask", "flask_symptoms"]
Hook = Callable[[str, dict[str, Any]], None]
"""Called as ``hook(step, record)`` at fixed points of a sink's write; lets a test pause or observe a write.

Steps: ``after_read`` (read part of a read-modify-write done), ``after_open`` (local file opened with truncation,
nothing written yet), ``after_chunk`` (local, one chunk written), ``after_write`` (content fully written and
closed/flushed), ``after_copy`` (cumulative copy to the target done).
"""


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


class ModelFailure(RuntimeError):
    """Raised by a stand-in model to simulate a model failure (the app answers 500)."""


class ModelTimeout(Exception):
    """Raised by a stand-in model to simulate a request that timed out waiting for the model."""


Model = Callable[[str], str]


class FakeModel:
    """Deterministic model: ``answers[question]`` if given, else ``template.format(question=question)``."""

    def __init__(
        self,
        answers: Mapping[str, str] | None = None,
        *,
        template: str = "Answer about: {question}",
        latency_s: float = 0.0,
    ) -> None:
        self.answers = dict(answers or {})
        self.template = template
        self.latency_s = latency_s
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, question: str) -> str:
        with self._lock:
            self.calls += 1
        if self.latency_s:
            time.sleep(self.latency_s)
        if question in self.answers:
            return self.answers[question]
        return self.template.format(question=question)


class _SeededChoice:
    """Shared part of the failing/timing-out models: a seeded coin thrown once per call, in call order."""

    def __init__(self, fraction: float, seed: int, base: Model | None, latency_s: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")
        self.fraction = fraction
        self.base: Model = base if base is not None else FakeModel()
        self.latency_s = latency_s
        self.calls = 0
        self.hits = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def _throw(self) -> bool:
        with self._lock:
            self.calls += 1
            hit = self._rng.random() < self.fraction
            self.hits += hit
            return hit


class FailingModel(_SeededChoice):
    """Raises :class:`ModelFailure` for a seeded ``fail_fraction`` of calls, else answers with ``base``."""

    def __call__(self, question: str) -> str:
        fail = self._throw()
        if self.latency_s:
            time.sleep(self.latency_s)
        if fail:
            raise ModelFailure("model failure (stand-in)")
        return self.base(question)

    @property
    def failures(self) -> int:
        return self.hits


class TimingOutModel(_SeededChoice):
    """Raises :class:`ModelTimeout` for a seeded ``timeout_fraction`` of calls, else answers with ``base``."""

    def __call__(self, question: str) -> str:
        timed_out = self._throw()
        if self.latency_s:
            time.sleep(self.latency_s)
        if timed_out:
            raise ModelTimeout(TIMEOUT_ANSWER)
        return self.base(question)

    @property
    def timeouts(self) -> int:
        return self.hits


def fake_model(
    answers: Mapping[str, str] | None = None, *, template: str = "Answer about: {question}", latency_s: float = 0.0
) -> FakeModel:
    """A deterministic model (see :class:`FakeModel`)."""
    return FakeModel(answers, template=template, latency_s=latency_s)


def failing_model(
    fail_fraction: float = 1.0, *, seed: int = 0, base: Model | None = None, latency_s: float = 0.0
) -> FailingModel:
    """A model that fails (-> HTTP 500) for a seeded fraction of requests."""
    return FailingModel(fail_fraction, seed, base, latency_s)


def timing_out_model(
    timeout_fraction: float = 1.0, *, seed: int = 0, base: Model | None = None, latency_s: float = 0.0
) -> TimingOutModel:
    """A model that "times out" for a seeded fraction of requests."""
    return TimingOutModel(timeout_fraction, seed, base, latency_s)


# --------------------------------------------------------------------------------------------------------------
# Record formatting
# --------------------------------------------------------------------------------------------------------------


@dataclass
class LogEvent:
    """What an app hands its sink after a request that reached the model."""

    question: str
    answer: str
    latency_ms: float
    status: int = 200
    slice: str | None = None
    symptoms: str | None = None
    variant: Variant = "fastapi"
    ts: datetime | None = None


_TAG_WORDS = ("symptom", "treatment", "cause", "diagnos", "prevent", "risk", "genetic", "medication", "outlook")


def question_tags(question: str, symptoms: str | None = None) -> list[str]:
    """The ``q_tags`` metadata the symptoms variant logs: simple keyword tags of the question."""
    low = question.lower()
    tags = [w for w in _TAG_WORDS if w in low]
    if symptoms:
        tags.append("has_symptoms")
    return tags


def format_ts(dt: datetime, ts_format: TsFormat = "iso_offset", tz: tzinfo = UTC) -> str | float:
    """Format a timestamp: ``iso_z`` (...Z), ``iso_offset`` (...+00:00, or ``tz``'s offset), ``iso_naive``
    (no zone, meaning UTC) or ``epoch`` (seconds, a number)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if ts_format == "iso_z":
        return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if ts_format == "iso_offset":
        return dt.astimezone(tz).isoformat()
    if ts_format == "iso_naive":
        return dt.astimezone(UTC).replace(tzinfo=None).isoformat()
    if ts_format == "epoch":
        return round(dt.timestamp(), 6)
    raise ValueError(f"unknown ts_format {ts_format!r}")


def build_record(
    event: LogEvent,
    shape: Literal["answer_jsonl", "symptoms_jsonl", "array"],
    *,
    ts_format: TsFormat = "iso_offset",
    tz: tzinfo = UTC,
    status_field: bool | None = None,
) -> dict[str, Any]:
    """Turn an event into one log record of the given shape.

    ``status`` is added when the HTTP status was not 200 and ``status_field`` allows it (default: yes for the
    JSON Lines shapes, no for the array shape, whose records are exactly ``timestamp, question, model_response``).
    """
    ts = format_ts(event.ts or datetime.now(UTC), ts_format, tz)
    latency = round(event.latency_ms, 3)
    record: dict[str, Any]
    if shape == "answer_jsonl":
        record = {
            "ts": ts,
            "question": event.question,
            "slice": event.slice,
            "answer": event.answer,
            "latency_ms": latency,
        }
    elif shape == "symptoms_jsonl":
        record = {
            "ts": ts,
            "question": event.question,
            "symptoms": event.symptoms,
            "answer": event.answer,
            "lat_ms": latency,
            "q_tags": question_tags(event.question, event.symptoms),
        }
    elif shape == "array":
        record = {"timestamp": ts, "question": event.question, "model_response": event.answer}
    else:
        raise ValueError(f"unknown shape {shape!r}")
    if status_field is None:
        status_field = shape != "array"
    if status_field and event.status != 200:
        record["status"] = event.status
    return record


def is_training_record(record: Mapping[str, Any]) -> bool:
    """Whether the contract counts this record as training data (non-empty answer, not a timeout, not a 500)."""
    answer = record.get("model_response", record.get("answer"))
    if not isinstance(answer, str) or not answer.strip() or answer == TIMEOUT_ANSWER:
        return False
    return record.get("status", 200) in (200, None)


def _dumps(obj: Any, *, ensure_ascii: bool, indent: int | None = None, line_ending: str = "\n") -> str:
    text = json.dumps(obj, ensure_ascii=ensure_ascii, indent=indent)
    return text.replace("\n", line_ending) if line_ending != "\n" else text


def json_line_bytes(record: Mapping[str, Any], *, line_ending: str = "\n", ensure_ascii: bool = False) -> bytes:
    """One JSON Lines line (with its line ending) as UTF-8 bytes."""
    return (json.dumps(record, ensure_ascii=ensure_ascii) + line_ending).encode("utf-8")


def json_lines_bytes(
    records: Iterable[Mapping[str, Any]], *, line_ending: str = "\n", bom: bool = False, ensure_ascii: bool = False
) -> bytes:
    """A whole JSON Lines file."""
    body = b"".join(json_line_bytes(r, line_ending=line_ending, ensure_ascii=ensure_ascii) for r in records)
    return (UTF8_BOM if bom else b"") + body


def json_array_bytes(
    records: Sequence[Mapping[str, Any]],
    *,
    indent: int | None = 2,
    line_ending: str = "\n",
    bom: bool = False,
    ensure_ascii: bool = False,
) -> bytes:
    """A whole JSON array file, as ``json.dump(records, f, indent=indent)`` writes it (no trailing newline)."""
    text = _dumps(list(records), ensure_ascii=ensure_ascii, indent=indent, line_ending=line_ending)
    return (UTF8_BOM if bom else b"") + text.encode("utf-8")


def single_object_json(
    record: Mapping[str, Any],
    *,
    indent: int | None = 2,
    line_ending: str = "\n",
    bom: bool = False,
    ensure_ascii: bool = False,
) -> bytes:
    """A file holding one JSON object."""
    text = _dumps(dict(record), ensure_ascii=ensure_ascii, indent=indent, line_ending=line_ending)
    return (UTF8_BOM if bom else b"") + text.encode("utf-8")


# --------------------------------------------------------------------------------------------------------------
# Damaged and non-log files
# --------------------------------------------------------------------------------------------------------------


def cut_off_array(
    records: Sequence[Mapping[str, Any]],
    cut_at_record: int,
    cut_fraction: float = 0.5,
    *,
    indent: int | None = 2,
    line_ending: str = "\n",
    bom: bool = False,
    ensure_ascii: bool = False,
) -> bytes:
    """A JSON array cut off in the middle of ``records[cut_at_record]``.

    ``records[:cut_at_record]`` are complete (and parse back equal); record ``cut_at_record`` is cut after
    ``cut_fraction`` of its text (at least one character in, at least one character short); nothing follows.
    The bytes are exactly a prefix of :func:`json_array_bytes` of the same records and options.
    """
    if not 0 <= cut_at_record < len(records):
        raise ValueError("cut_at_record must index one of the records")
    if indent is None:
        opening, sep = "[", ", "
        items = [json.dumps(r, ensure_ascii=ensure_ascii) for r in records]
    else:
        pad = " " * indent
        opening, sep = "[\n", ",\n"
        items = [
            "\n".join(pad + ln for ln in json.dumps(r, ensure_ascii=ensure_ascii, indent=indent).split("\n"))
            for r in records
        ]
    head = opening + "".join(item + sep for item in items[:cut_at_record])
    cut_item = items[cut_at_record]
    if indent is not None:
        cut_item_body = cut_item[indent:]  # keep the pad whole: the cut is inside the record's own text
        cut = max(1, min(len(cut_item_body) - 1, int(len(cut_item_body) * cut_fraction)))
        text = head + cut_item[:indent] + cut_item_body[:cut]
    else:
        cut = max(1, min(len(cut_item) - 1, int(len(cut_item) * cut_fraction)))
        text = head + cut_item[:cut]
    if line_ending != "\n":
        text = text.replace("\n", line_ending)
    return (UTF8_BOM if bom else b"") + text.encode("utf-8")


def interleaved_json_lines(
    records_a: Sequence[Mapping[str, Any]],
    records_b: Sequence[Mapping[str, Any]],
    *,
    break_every: int = 2,
    split_fraction: float = 0.5,
    line_ending: str = "\n",
    bom: bool = False,
    ensure_ascii: bool = False,
) -> bytes:
    """JSON Lines written by two writers whose writes interleaved.

    Lines go A0, B0, A1, B1, ... For each ``i`` with ``i % break_every == break_every - 1`` (and both A[i] and
    B[i] present), writer A's line i was split mid-line by B's whole line i, giving two broken lines
    ``A[i][:k] + B[i]`` and ``A[i][k:]``: those two records are lost, every other record is on a whole line.
    Use :func:`interleaved_intact` for the records that stay whole.
    """
    if break_every < 1:
        raise ValueError("break_every must be >= 1")
    out: list[bytes] = [UTF8_BOM] if bom else []
    for i in range(max(len(records_a), len(records_b))):
        la = json.dumps(records_a[i], ensure_ascii=ensure_ascii) if i < len(records_a) else None
        lb = json.dumps(records_b[i], ensure_ascii=ensure_ascii) if i < len(records_b) else None
        if la is not None and lb is not None and i % break_every == break_every - 1:
            k = max(1, min(len(la) - 1, int(len(la) * split_fraction)))
            out += [la[:k].encode(), (lb + line_ending).encode(), (la[k:] + line_ending).encode()]
        else:
            out += [(ln + line_ending).encode() for ln in (la, lb) if ln is not None]
    return b"".join(out)


def interleaved_intact(
    records_a: Sequence[Mapping[str, Any]], records_b: Sequence[Mapping[str, Any]], *, break_every: int = 2
) -> list[Mapping[str, Any]]:
    """The records :func:`interleaved_json_lines` leaves on whole lines, in file order."""
    kept: list[Mapping[str, Any]] = []
    for i in range(max(len(records_a), len(records_b))):
        both = i < len(records_a) and i < len(records_b)
        if both and i % break_every == break_every - 1:
            continue
        kept += [recs[i] for recs in (records_a, records_b) if i < len(recs)]
    return kept


def perf_log_csv(rows: Iterable[Any], *, line_ending: str = "\n") -> bytes:
    """A headerless CSV of latencies (``perf_log.csv``): each row a number or a sequence of values."""
    lines = []
    for row in rows:
        values = row if isinstance(row, (list, tuple)) else (row,)
        lines.append(",".join(str(v) for v in values) + line_ending)
    return "".join(lines).encode("utf-8")


# --------------------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------------------


StepCallback = Callable[[str], None]


class LocalDirTarget:
    """A local ``retraining_data_raw/`` folder; plain, non-atomic file I/O."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @classmethod
    def under_store_root(cls, root: str | os.PathLike[str]) -> "LocalDirTarget":
        """The target ``<root>/data/production/retraining_data_raw/``."""
        return cls(Path(root) / RAW_SUBDIR)

    def path(self, name: str) -> Path:
        return self.directory / name

    def location(self, name: str) -> str:
        return str(self.path(name))

    def read_bytes(self, name: str) -> bytes | None:
        try:
            return self.path(name).read_bytes()
        except FileNotFoundError:
            return None

    def write_bytes(
        self, name: str, data: bytes, *, chunk_size: int | None = None, on_step: StepCallback | None = None
    ) -> None:
        """Open with truncation and write (in ``chunk_size`` pieces if given): NOT atomic."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb", buffering=0) as f:
            if on_step:
                on_step("after_open")
            step = chunk_size or max(len(data), 1)
            for start in range(0, len(data), step):
                _write_all(f, data[start : start + step])
                if on_step and chunk_size:
                    on_step("after_chunk")

    def open_append(self, name: str) -> BinaryIO | None:
        """A handle in append mode, kept open by the caller (a logging handler's way)."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "ab")

    def upload_file(self, local_path: str | os.PathLike[str], name: str) -> None:
        """Copy a whole local file over ``name`` (shutil.copyfile: truncate, then write)."""
        dest = self.path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local_path, dest)


def _write_all(f: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = f.write(view)
        view = view[n:]


class S3Target:
    """An S3 prefix (``retraining_data_raw/`` below the store root); every write is a whole-object put."""

    def __init__(
        self,
        bucket: str,
        prefix: str = DEFAULT_S3_PREFIX,
        *,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        region_name: str = "us-east-1",
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        if client is None:
            import boto3

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
                region_name=region_name,
            )
        self.client = client

    def key(self, name: str) -> str:
        return self.prefix + name

    def location(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def read_bytes(self, name: str) -> bytes | None:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        return resp["Body"].read()

    def write_bytes(
        self, name: str, data: bytes, *, chunk_size: int | None = None, on_step: StepCallback | None = None
    ) -> None:
        """put_object of the whole content (S3 has no partial writes; chunk_size is ignored)."""
        self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data)

    def open_append(self, name: str) -> BinaryIO | None:
        """S3 cannot append: callers fall back to get-object + put-object."""
        return None

    def upload_file(self, local_path: str | os.PathLike[str], name: str) -> None:
        """put_object of the whole local file over ``name``."""
        self.write_bytes(name, Path(local_path).read_bytes())


Target = LocalDirTarget | S3Target


# --------------------------------------------------------------------------------------------------------------
# Sinks
# --------------------------------------------------------------------------------------------------------------


class LogSink:
    """Base of the sinks: formats records, keeps an in-memory account of what was logged.

    Options shared by every sink: ``object_name``; ``shape`` (``auto`` picks the app's own JSON Lines shape, or
    ``array`` for array sinks); ``ts_format`` (``iso_z``, ``iso_offset``, ``iso_naive``, ``epoch``) and ``tz``;
    ``line_ending`` (``"\\n"`` or ``"\\r\\n"``); ``bom`` (UTF-8 BOM at the start of the file); ``locked``
    (serialise writes, which the real apps do not do); ``clock`` (returns the request time); ``hook``
    (see :data:`Hook`); ``status_field`` (see :func:`build_record`); ``ensure_ascii``; ``write_pause_s`` (sleep
    after a read-modify-write's read and after each written chunk, widening the race window under concurrency).
    """

    default_name = "serving_log.jsonl"
    array_sink = False

    def __init__(
        self,
        target: Target,
        object_name: str | None = None,
        *,
        shape: Shape = "auto",
        ts_format: TsFormat = "iso_offset",
        tz: tzinfo = UTC,
        line_ending: str = "\n",
        bom: bool = False,
        locked: bool = False,
        clock: Callable[[], datetime] | None = None,
        hook: Hook | None = None,
        status_field: bool | None = None,
        ensure_ascii: bool = False,
        write_pause_s: float = 0.0,
    ) -> None:
        if line_ending not in ("\n", "\r\n"):
            raise ValueError("line_ending must be '\\n' or '\\r\\n'")
        self.target = target
        self.object_name = object_name or self.default_name
        self.shape = shape
        self.ts_format = ts_format
        self.tz = tz
        self.line_ending = line_ending
        self.bom = bom
        self.locked = locked
        self.clock = clock or (lambda: datetime.now(UTC))
        self.hook = hook
        self.status_field = status_field
        self.ensure_ascii = ensure_ascii
        self.write_pause_s = write_pause_s
        self.records: list[dict[str, Any]] = []
        self.events: list[LogEvent] = []
        self._write_lock = threading.Lock()
        self._book_lock = threading.Lock()

    # -- public ----------------------------------------------------------------------------------------------

    @property
    def records_logged(self) -> int:
        """How many records this sink has written (whether or not they survived concurrent writes)."""
        return len(self.records)

    @property
    def training_records(self) -> list[dict[str, Any]]:
        """The logged records that are training data (see :func:`is_training_record`)."""
        return [r for r in self.records if is_training_record(r)]

    @property
    def location(self) -> str:
        """Path or ``s3://`` URI of the object this sink writes in its target."""
        return self.target.location(self.object_name)

    def log(self, event: LogEvent) -> dict[str, Any]:
        """Write one record for ``event``; returns the record written."""
        if event.ts is None:
            event.ts = self.clock()
        record = build_record(
            event, self._shape_for(event), ts_format=self.ts_format, tz=self.tz, status_field=self.status_field
        )
        if self.locked:
            with self._write_lock:
                self._write(record)
        else:
            self._write(record)
        with self._book_lock:
            self.records.append(record)
            self.events.append(event)
        return record

    def close(self) -> None:
        """Release what the sink holds open (nothing by default)."""

    # -- internals -------------------------------------------------------------------------------------------

    def _shape_for(self, event: LogEvent) -> Literal["answer_jsonl", "symptoms_jsonl", "array"]:
        if self.shape != "auto":
            return self.shape
        if self.array_sink:
            return "array"
        return "symptoms_jsonl" if event.variant == "flask_symptoms" else "answer_jsonl"

    def _step(self, record: dict[str, Any]) -> StepCallback | None:
        hook, pause = self.hook, self.write_pause_s
        if hook is None and not pause:
            return None

        def on_step(step: str) -> None:
            if hook is not None:
                hook(step, record)
            if pause and step in ("after_read", "after_chunk"):
                time.sleep(pause)

        return on_step

    def _line(self, record: Mapping[str, Any]) -> bytes:
        return json_line_bytes(record, line_ending=self.line_ending, ensure_ascii=self.ensure_ascii)

    def _write(self, record: dict[str, Any]) -> None:
        raise NotImplementedError


class _JsonLinesWriter:
    """Appends lines to one object of a target: a kept-open append handle locally, get + put on S3."""

    def __init__(self, sink: LogSink, target: Target, name: str, *, delay: bool) -> None:
        self.sink = sink
        self.target = target
        self.name = name
        self._handle: BinaryIO | None = None
        self._no_handle = False
        self._open_lock = threading.Lock()  # opening once, as logging.FileHandler(delay=True) does under its lock
        if not delay:
            self._open()

    def _open(self) -> BinaryIO | None:
        with self._open_lock:
            if self._handle is None and not self._no_handle:
                handle = self.target.open_append(self.name)
                if handle is None:
                    self._no_handle = True
                else:
                    if self.sink.bom and handle.tell() == 0:
                        handle.write(UTF8_BOM)
                        handle.flush()
                    self._handle = handle
            return self._handle

    def append(self, record: dict[str, Any]) -> None:
        line = self.sink._line(record)
        on_step = self.sink._step(record)
        handle = self._open()
        if handle is not None:
            handle.write(line)
            handle.flush()
        else:
            old = self.target.read_bytes(self.name)
            if on_step:
                on_step("after_read")
            if old is None:
                old = UTF8_BOM if self.sink.bom else b""
            self.target.write_bytes(self.name, old + line, on_step=on_step)
        if on_step:
            on_step("after_write")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _rewrite_array(
    sink: LogSink,
    target: Target,
    name: str,
    record: dict[str, Any],
    *,
    indent: int | None,
    chunk_size: int | None,
    on_corrupt: Literal["reset", "raise"],
) -> None:
    """Read the whole array (if any), append ``record``, write the whole file back: no lock, not atomic."""
    on_step = sink._step(record)
    raw = target.read_bytes(name)
    if on_step:
        on_step("after_read")
    items: list[Any] = []
    if raw:
        try:
            loaded = json.loads(raw.decode("utf-8-sig"))
            items = loaded if isinstance(loaded, list) else [loaded]
        except (UnicodeDecodeError, json.JSONDecodeError):
            if on_corrupt == "raise":
                raise
            items = []  # what `try: json.load(f) except JSONDecodeError: logs = []` does
    items.append(record)
    data = json_array_bytes(
        items, indent=indent, line_ending=sink.line_ending, bom=sink.bom, ensure_ascii=sink.ensure_ascii
    )
    target.write_bytes(name, data, chunk_size=chunk_size, on_step=on_step)
    if on_step:
        on_step("after_write")


class AppendJsonLinesSink(LogSink):
    """One JSON Lines record per request, appended to the same object forever.

    Locally the file is opened once in append mode and kept open for the sink's lifetime (``delay=True`` opens
    it at the first record, like ``logging.FileHandler``); each record is written and flushed. On S3 an append
    is get-object + put-object of the whole content (unlocked unless ``locked=True``: concurrent requests can
    lose each other's records).
    """

    default_name = "serving_log.jsonl"

    def __init__(self, target: Target, object_name: str | None = None, *, delay: bool = False, **options: Any):
        super().__init__(target, object_name, **options)
        self._writer = _JsonLinesWriter(self, target, self.object_name, delay=delay)

    def _write(self, record: dict[str, Any]) -> None:
        self._writer.append(record)

    def close(self) -> None:
        self._writer.close()


class RewriteArraySink(LogSink):
    """After each request: read the whole JSON array, append ``{"timestamp", "question", "model_response"}``,
    write the whole file back (truncate + write, in ``chunk_size`` pieces if given), with no lock.

    A damaged existing file is treated like a missing one (``on_corrupt="reset"``, as ``except
    JSONDecodeError: logs = []`` does), or raises (``on_corrupt="raise"``).
    """

    default_name = "production_logs.json"
    array_sink = True

    def __init__(
        self,
        target: Target,
        object_name: str | None = None,
        *,
        indent: int | None = 2,
        chunk_size: int | None = None,
        on_corrupt: Literal["reset", "raise"] = "reset",
        **options: Any,
    ):
        super().__init__(target, object_name, **options)
        self.indent = indent
        self.chunk_size = chunk_size
        self.on_corrupt = on_corrupt

    def _write(self, record: dict[str, Any]) -> None:
        _rewrite_array(
            self,
            self.target,
            self.object_name,
            record,
            indent=self.indent,
            chunk_size=self.chunk_size,
            on_corrupt=self.on_corrupt,
        )


class CumulativeCopySink(LogSink):
    """Keeps a cumulative local log on the app's own disk and, after every request, copies the whole local file
    over the same object name in the target (``shutil.copyfile`` locally, ``put_object`` on S3).

    ``local_format`` is ``"jsonl"`` (appended with a kept-open handle) or ``"array"`` (rewritten unlocked like
    :class:`RewriteArraySink`). ``local_dir`` defaults to a fresh temp dir.
    """

    default_name = "cumulative_log.jsonl"

    def __init__(
        self,
        target: Target,
        object_name: str | None = None,
        *,
        local_format: Literal["jsonl", "array"] = "jsonl",
        local_dir: str | os.PathLike[str] | None = None,
        indent: int | None = 2,
        chunk_size: int | None = None,
        **options: Any,
    ):
        if object_name is None and local_format == "array":
            object_name = "cumulative_log.json"
        self.array_sink = local_format == "array"
        super().__init__(target, object_name, **options)
        self.local_format = local_format
        self.local_target = LocalDirTarget(local_dir or tempfile.mkdtemp(prefix="standin-app-disk-"))
        self.indent = indent
        self.chunk_size = chunk_size
        self._local_writer = (
            _JsonLinesWriter(self, self.local_target, self.object_name, delay=True) if local_format == "jsonl" else None
        )

    @property
    def local_path(self) -> Path:
        """The cumulative log on the app's own disk."""
        return self.local_target.path(self.object_name)

    def _write(self, record: dict[str, Any]) -> None:
        if self._local_writer is not None:
            self._local_writer.append(record)
        else:
            _rewrite_array(
                self,
                self.local_target,
                self.object_name,
                record,
                indent=self.indent,
                chunk_size=self.chunk_size,
                on_corrupt="reset",
            )
        self.target.upload_file(self.local_path, self.object_name)
        on_step = self._step(record)
        if on_step:
            on_step("after_copy")

    def close(self) -> None:
        if self._local_writer is not None:
            self._local_writer.close()


class LocalDiskSink(AppendJsonLinesSink):
    """JSON Lines on the app's own disk only, to be uploaded later with ``medqa ingest-logs``; see :attr:`path`.

    ``directory`` defaults to a fresh temp dir.
    """

    default_name = "app_log.jsonl"

    def __init__(self, directory: str | os.PathLike[str] | None = None, object_name: str | None = None, **options: Any):
        target = LocalDirTarget(directory or tempfile.mkdtemp(prefix="standin-app-disk-"))
        super().__init__(target, object_name, **options)

    @property
    def path(self) -> Path:
        """The log file to hand to ``medqa ingest-logs``."""
        return self.target.path(self.object_name)  # type: ignore[union-attr]


def write_single_object(target: Target, name: str, record: Mapping[str, Any], **fmt: Any) -> str:
    """Write a file holding one JSON object (see :func:`single_object_json`); returns its location."""
    target.write_bytes(name, single_object_json(record, **fmt))
    return target.location(name)


def write_raw(target: Target, name: str, data: bytes) -> str:
    """Write arbitrary bytes (a damaged file, ``perf_log.csv``, ...) to a target; returns its location."""
    target.write_bytes(name, data)
    return target.location(name)


# --------------------------------------------------------------------------------------------------------------
# The apps
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Result of one model call as the app sees it."""

    kind: Literal["ok", "failed", "timeout"]
    answer: str
    status: int
    error: str = ""


@dataclass
class _ServingCore:
    """What both apps share: call the model (optionally under a timeout), then log to the sink."""

    model: Model
    sink: LogSink | None
    variant: Variant
    timeout_status: int = 200
    model_timeout_s: float | None = None
    log_failures: bool = True
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.timeout_status not in (200, 500, 504):
            raise ValueError("timeout_status must be 200, 500 or 504")
        if self.model_timeout_s is not None:
            self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="standin-model")

    def _call(self, question: str) -> str:
        if self._pool is None:
            return self.model(question)
        future = self._pool.submit(self.model, question)
        try:
            return future.result(timeout=self.model_timeout_s)
        except FutureTimeout:
            raise ModelTimeout(TIMEOUT_ANSWER) from None

    def handle(self, question: str, *, slice_: str | None = None, symptoms: str | None = None) -> Outcome:
        start = time.perf_counter()
        try:
            answer = self._call(question)
            outcome = Outcome("ok", str(answer), 200)
        except ModelTimeout:
            outcome = Outcome("timeout", TIMEOUT_ANSWER, self.timeout_status, TIMEOUT_ANSWER)
        except Exception as exc:  # any model exception is a model failure
            outcome = Outcome("failed", "", 500, f"model failure: {exc}")
        latency_ms = (time.perf_counter() - start) * 1000.0
        if self.sink is not None and (outcome.kind != "failed" or self.log_failures):
            self.sink.log(
                LogEvent(
                    question=question,
                    answer=outcome.answer,
                    latency_ms=latency_ms,
                    status=outcome.status,
                    slice=slice_,
                    symptoms=symptoms,
                    variant=self.variant,
                )
            )
        return outcome


def create_fastapi_app(
    model: Model,
    sink: LogSink | None,
    device: Literal["cpu", "cuda"] = "cpu",
    *,
    timeout_status: int = 200,
    model_timeout_s: float | None = None,
    log_failures: bool = True,
) -> Any:
    """The FastAPI app (port 8000 in production): ``POST /api/v1/answer``.

    200 ``{"answer", "device"}``; 400 ``{"detail": "question is required"}`` for an empty/whitespace question;
    422 (FastAPI's validation) for a malformed body or a missing question; 500 ``{"detail": ...}`` on model
    failure. A timeout answers 200 with :data:`TIMEOUT_ANSWER` (or ``timeout_status`` 504/500 with
    ``{"detail": TIMEOUT_ANSWER}``) and is always logged with that answer. Every request that reached the model is
    logged; ``app.state.sink`` and ``app.state.core`` give access to the sink and counters.
    """
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel

    class AnswerRequest(BaseModel):
        question: str
        slice: str | None = None

    core = _ServingCore(model, sink, "fastapi", timeout_status, model_timeout_s, log_failures)
    app = FastAPI(title="medqa serving stand-in (FastAPI)")
    app.state.sink = sink
    app.state.core = core

    @app.post("/api/v1/answer", response_model=None)
    def answer(req: AnswerRequest) -> Any:  # sync: runs in the thread pool, so requests run concurrently
        if not req.question.strip():
            raise HTTPException(status_code=400, detail="question is required")
        outcome = core.handle(req.question, slice_=req.slice)
        if outcome.status == 200:
            return {"answer": outcome.answer, "device": device}
        return JSONResponse(status_code=outcome.status, content={"detail": outcome.error})

    return app


def create_flask_app(
    model: Model,
    sink: LogSink | None,
    read_symptoms: bool = False,
    *,
    timeout_status: int = 200,
    model_timeout_s: float | None = None,
    log_failures: bool = True,
) -> Any:
    """The Flask app the deployment runs (port 5000 in production): ``POST /ask``.

    200 ``{"answer"}`` (no ``device``); 400 ``{"error": "Question is required"}`` for a missing/empty question or
    a body that is not a JSON object; 500 ``{"error": ...}`` on model failure. With ``read_symptoms=True`` the
    optional ``symptoms`` field is read and logged in the ``{"ts", "question", "symptoms", "answer", "lat_ms",
    "q_tags"}`` shape. Timeouts and logging as in :func:`create_fastapi_app`; ``app.extensions["standin"]``
    holds ``{"sink", "core"}``.
    """
    from flask import Flask, jsonify, request

    core = _ServingCore(
        model, sink, "flask_symptoms" if read_symptoms else "flask", timeout_status, model_timeout_s, log_failures
    )
    app = Flask("medqa_serving_standin_flask")
    app.extensions["standin"] = {"sink": sink, "core": core}

    @app.post("/ask")
    def ask() -> Any:
        payload = request.get_json(force=True, silent=True)
        if not isinstance(payload, dict):
            payload = {}
        question = payload.get("question")
        if not isinstance(question, str) or not question.strip():
            return jsonify({"error": "Question is required"}), 400
        symptoms = payload.get("symptoms") if read_symptoms else None
        if symptoms is not None and not isinstance(symptoms, str):
            symptoms = json.dumps(symptoms)
        outcome = core.handle(question, symptoms=symptoms)
        if outcome.status == 200:
            return jsonify({"answer": outcome.answer})
        return jsonify({"error": outcome.error}), outcome.status

    return app


def _is_wsgi(app: Any) -> bool:
    return hasattr(app, "wsgi_app")


@contextlib.contextmanager
def run_app(app: Any, *, host: str = "127.0.0.1", startup_timeout_s: float = 10.0) -> Iterator[str]:
    """Serve a FastAPI (uvicorn) or Flask (werkzeug, threaded) app on a free port in a background thread.

    The listening socket is bound before the server starts, so there is no port race. Yields the base URL
    ``http://127.0.0.1:PORT``; stops the server on exit.
    """
    if _is_wsgi(app):
        from werkzeug.serving import WSGIRequestHandler, make_server

        class _QuietHandler(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        server = make_server(host, 0, app, threaded=True, request_handler=_QuietHandler)  # binds port 0 now
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="standin-flask", daemon=True
        )
        thread.start()
        try:
            yield f"http://{host}:{server.server_port}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
        return

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", log_config=None, access_log=False, lifespan="off")
    userver = uvicorn.Server(config)
    thread = threading.Thread(target=userver.run, kwargs={"sockets": [sock]}, name="standin-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not userver.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn stopped before it started serving")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start in time")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        userver.should_exit = True
        thread.join(timeout=10)
        sock.close()


__all__ = [
    "DEFAULT_S3_PREFIX",
    "TIMEOUT_ANSWER",
    "UTF8_BOM",
    "AppendJsonLinesSink",
    "CumulativeCopySink",
    "FailingModel",
    "FakeModel",
    "LocalDirTarget",
    "LocalDiskSink",
    "LogEvent",
    "LogSink",
    "ModelFailure",
    "ModelTimeout",
    "Outcome",
    "RewriteArraySink",
    "S3Target",
    "TimingOutModel",
    "build_record",
    "create_fastapi_app",
    "create_flask_app",
    "cut_off_array",
    "fake_model",
    "failing_model",
    "format_ts",
    "interleaved_intact",
    "interleaved_json_lines",
    "is_training_record",
    "json_array_bytes",
    "json_line_bytes",
    "json_lines_bytes",
    "perf_log_csv",
    "question_tags",
    "run_app",
    "single_object_json",
    "timing_out_model",
    "write_raw",
    "write_single_object",
]

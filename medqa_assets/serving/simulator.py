"""Replay a production set against an inference endpoint and log what it answers (``medqa simulate``).

Open-loop load: request ``i`` is due at its own arrival time ``t_i`` (Poisson: exponential gaps
of mean ``1/rate`` from a seeded RNG; uniform: ``i/rate``) whatever the endpoint does. At most
``concurrency`` requests are in flight; when all slots are busy the next request waits, and that
wait (plus any event-loop lateness) is reported as scheduling lag. Connect errors, timeouts and
5xx answers are retried a bounded number of times with exponential backoff; 4xx never are.

Every request ends as one production log record (contracts section 5 keys, plus metadata)::

    {"timestamp", "question", "model_response", "slice", "latency_ms", "status",
     "production_set", "row_id"[, "error"]}

The endpoint is either app of contracts.md section 4: a bare base URL means FastAPI's
``/api/v1/answer``; a URL with a path (Flask's ``/ask``) is called as given. ``error`` is the
text of the app's ``{"detail"}`` or ``{"error"}`` body. HTTP is httpx's own connection pool.

``model_response`` is what the endpoint answered (``null`` on failure), never the set's reference
answer. Records are written as JSON Lines objects under ``retraining_data_raw/`` in batches (every
``batch_size`` records, at least every ``flush_interval`` seconds, and at the end), each with an
atomic ``write_bytes`` in a worker thread so the pacing never waits for the store.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
from tqdm import tqdm

from medqa_assets.serving import ANSWER_PATH, OFFLINE_JOB_HINT, CommandError, MissingInputError, RawLogKeyClock
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

ARRIVALS = ("poisson", "uniform")
RETRIED_KINDS = frozenset({"timeout", "connect_error", "network_error", "protocol_error"})
_SET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}

# httpcore imports the optional ``sniffio`` inside every lock and semaphore it sets up; since
# anyio 4.11 no longer installs sniffio, each of those is a failed import that searches sys.path
# again, about a third of the client's CPU per request (encode/httpcore#1103). Recording the
# absence once makes it free; without sniffio httpcore assumes asyncio either way.
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]


# -- inputs ---------------------------------------------------------------------------------------
def answer_url(endpoint: str) -> str:
    """The URL to POST questions to: a URL with a path is called as given (the Flask app's
    ``/ask``, a gateway's prefix); a bare base URL means the FastAPI app's ``/api/v1/answer``."""
    url = endpoint.strip()
    if not url.startswith(("http://", "https://")):
        raise CommandError(f"--endpoint {endpoint!r} is not an http(s) URL, e.g. http://127.0.0.1:8000")
    parsed = httpx.URL(url)
    if parsed.path in ("", "/"):
        return url.rstrip("/") + ANSWER_PATH
    return url


def answer_of(body: Any) -> str | None:
    """The answer in a response body: ``answer`` (both apps) or ``model_response``."""
    if isinstance(body, dict):
        for field_name in ("answer", "model_response"):
            if isinstance(body.get(field_name), str):
                return body[field_name]
    return None


def error_text_of(content: bytes) -> str | None:
    """The error an app reported: FastAPI's ``{"detail"}`` or Flask's ``{"error"}`` (first 500 characters)."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict):
        for field_name in ("detail", "error"):
            if body.get(field_name) is not None:
                value = body[field_name]
                return (value if isinstance(value, str) else orjson.dumps(value).decode())[:500]
    return None


def load_production_set(store: ObjectStore, set_name: str) -> pd.DataFrame:
    """The production set's rows in set order; a missing set is a :class:`MissingInputError`."""
    if not _SET_NAME_RE.match(set_name):
        raise CommandError(f"--set {set_name!r} is not a production set name such as set1")
    key = layout.production_set_key(set_name)
    try:
        frame = store.read_jsonl(key)
    except FileNotFoundError:
        raise MissingInputError(
            f"production set {set_name!r} is missing: no object {key} in the store {store.url}; "
            f"run the offline pipeline first (`{OFFLINE_JOB_HINT}`), or check MEDQA_STORE_URL"
        ) from None
    if len(frame) and "question" not in frame.columns:
        raise CommandError(f"production set {store.uri(key)} has no question column")
    return frame


def _rows(frame: pd.DataFrame, limit: int | None, order: str = "sample", seed: int | None = 0) -> list[tuple[str, Any]]:
    """The questions to send: with ``limit``, a seeded random sample of the set (so it looks like the
    set), kept in set order; ``order="file"`` takes the first ``limit`` rows instead."""
    if limit is not None and limit < len(frame):
        frame = frame.iloc[:limit] if order == "file" else frame.sample(n=limit, random_state=seed).sort_index()
    if frame.empty:
        return []
    questions = [value if isinstance(value, str) else "" for value in frame["question"].tolist()]
    # row_id is the split's unique lineage id (MedQuAD's question_id repeats across rows)
    id_column = next((c for c in ("row_id", "question_id") if c in frame.columns), None)
    if id_column:
        ids = [None if isinstance(value, float) and math.isnan(value) else value for value in frame[id_column].tolist()]
    else:
        ids = list(range(len(frame)))
    return list(zip(questions, ids, strict=True))


def arrival_times(count: int, rate: float, arrivals: str = "poisson", seed: int | None = 0) -> list[float]:
    """Seconds after the start at which each request is due (the first one at 0)."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    if arrivals == "uniform":
        return [i / rate for i in range(count)]
    if arrivals != "poisson":
        raise ValueError(f"arrivals must be one of {', '.join(ARRIVALS)}, not {arrivals!r}")
    rng = random.Random(seed)
    times, now = [], 0.0
    for _ in range(count):
        times.append(now)
        now += rng.expovariate(rate)
    return times


# -- a lean HTTP/1.1 transport for httpx ----------------------------------------------------------
def make_client(concurrency: int, timeout: float) -> httpx.AsyncClient:
    """The one shared client, on httpx's own connection pool (keep-alive, at most ``concurrency`` connections)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout))


# -- result ---------------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


@dataclass
class SimulationSummary:
    """What one replay did; :meth:`format` is what ``medqa simulate`` prints.

    ``achieved_rate`` is the dispatch rate, ``(sent - 1) / (last dispatch - first dispatch)``;
    ``scheduled_rate`` is the same figure for the arrival times asked for (a Poisson schedule's own
    rate differs from ``asked_rate`` by chance, about ``1/sqrt(sent)``). ``completion_rate`` is
    answers (or final failures) per second over ``duration_s``, first dispatch to last answer.
    Latencies are end to end, retries included, over the successful requests; scheduling lag is
    how late each request left compared with its arrival time (a full semaphore, a busy loop).
    """

    set_name: str
    endpoint: str
    asked_rate: float
    arrivals: str
    concurrency: int
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    duration_s: float = 0.0
    achieved_rate: float = 0.0
    scheduled_rate: float = 0.0
    completion_rate: float = 0.0
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    latency_ms_p99: float | None = None
    lag_ms_p50: float | None = None
    lag_ms_p99: float | None = None
    lag_ms_max: float | None = None
    records_written: int = 0
    log_keys: list[str] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rate_ratio(self) -> float:
        return self.achieved_rate / self.asked_rate if self.asked_rate else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        errors = ", ".join(f"{kind}: {count}" for kind, count in sorted(self.errors.items())) or "none"
        return "\n".join(
            [
                f"simulated {self.set_name} -> {self.endpoint}",
                f"  sent {self.sent}, ok {self.ok}, errors {self.error_count} ({errors}), retries {self.retries}",
                f"  rate: asked {self.asked_rate:g}/s ({self.arrivals}; this schedule {self.scheduled_rate:.1f}/s), "
                f"achieved {self.achieved_rate:.1f}/s ({self.rate_ratio:.1%}), "
                f"completed {self.completion_rate:.1f}/s over {self.duration_s:.2f} s",
                f"  latency ms (ok): p50 {_fmt(self.latency_ms_p50)}, p95 {_fmt(self.latency_ms_p95)}, "
                f"p99 {_fmt(self.latency_ms_p99)}",
                f"  scheduling lag ms: p50 {_fmt(self.lag_ms_p50, 2)}, p99 {_fmt(self.lag_ms_p99, 2)}, "
                f"max {_fmt(self.lag_ms_max, 2)}",
                f"  wrote {self.records_written} log records in {len(self.log_keys)} objects under "
                f"{layout.RAW_LOGS_PREFIX}",
                *self._shortfall(),
            ]
        )

    def _shortfall(self) -> list[str]:
        """An honest line when the asked rate was not reached (more than 5% short of this schedule)."""
        if self.sent < 2 or not self.scheduled_rate or self.achieved_rate >= 0.95 * self.scheduled_rate:
            return []
        return [
            f"  NOTE: the asked rate was not reached ({self.achieved_rate:.1f}/s of {self.scheduled_rate:.1f}/s): "
            f"the endpoint or --concurrency {self.concurrency} held it back (scheduling lag p99 "
            f"{_fmt(self.lag_ms_p99, 0)} ms); raise --concurrency or run several simulators on different sets"
        ]


# -- log writing ----------------------------------------------------------------------------------
def _encode(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


class _LogWriter:
    """Collects records and writes them in batches, one at a time in key order, off the loop."""

    def __init__(self, store: ObjectStore, set_name: str, batch_size: int, flush_interval: float) -> None:
        self.store = store
        self.name = f"simulator-{set_name}.jsonl"
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.clock = RawLogKeyClock()
        self.keys: list[str] = []
        self.records_written = 0
        self.error: BaseException | None = None
        self._buffer: list[dict[str, Any]] = []
        self._oldest = 0.0
        self._queue: asyncio.Queue[tuple[str, list[dict[str, Any]]] | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._drain())
        self._ticker = asyncio.create_task(self._tick())

    def add(self, record: dict[str, Any]) -> None:
        if not self._buffer:
            self._oldest = time.monotonic()
        self._buffer.append(record)
        if len(self._buffer) >= self.batch_size:
            self._cut()

    def _cut(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._queue.put_nowait((self.clock.next_key(self.name), batch))

    async def _tick(self) -> None:
        period = self.flush_interval / 5
        while True:
            await asyncio.sleep(period)
            if self._buffer and time.monotonic() - self._oldest + period >= self.flush_interval:
                self._cut()

    async def _drain(self) -> None:
        while (item := await self._queue.get()) is not None:
            key, batch = item
            try:
                data = await asyncio.to_thread(_encode, batch)
                await asyncio.to_thread(self.store.write_bytes, key, data)
            except Exception as error:  # surfaced by close(); the run stops sending
                self.error = error
                return
            self.keys.append(key)
            self.records_written += len(batch)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self._cut()
        self._queue.put_nowait(None)
        if self._writer is not None:
            await self._writer
        if self.error is not None:
            raise self.error


# -- the replay -----------------------------------------------------------------------------------
async def run_simulation(
    set_name: str,
    endpoint: str,
    *,
    rate: float = 10.0,
    concurrency: int = 64,
    limit: int | None = None,
    arrivals: str = "poisson",
    slice_tag: str | None = None,
    seed: int | None = 0,
    batch_size: int = 200,
    timeout: float = 10.0,
    retries: int = 2,
    backoff: float = 0.05,
    flush_interval: float = 5.0,
    store: ObjectStore | None = None,
    progress: bool = True,
    order: str = "sample",
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> SimulationSummary:
    """Replay ``set_name`` against ``endpoint`` and write the production logs; returns the summary."""
    for name, value, minimum in (
        ("concurrency", concurrency, 1),
        ("batch_size", batch_size, 1),
        ("retries", retries, 0),
    ):
        if value < minimum:
            raise ValueError(f"{name} must be at least {minimum}")
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    if timeout <= 0 or flush_interval <= 0:
        raise ValueError("timeout and flush_interval must be positive")
    url = answer_url(endpoint)
    store = store or ObjectStore.from_settings()
    frame = await asyncio.to_thread(load_production_set, store, set_name)
    if order not in ("sample", "file"):
        raise ValueError("order must be 'sample' or 'file'")
    rows = _rows(frame, limit, order, seed)
    schedule = arrival_times(len(rows), rate, arrivals, seed)
    summary = SimulationSummary(
        set_name=set_name, endpoint=url, asked_rate=rate, arrivals=arrivals, concurrency=concurrency
    )

    clock = time.perf_counter
    backoff_rng = random.Random(None if seed is None else seed + 1)
    semaphore = asyncio.Semaphore(concurrency)
    writer = _LogWriter(store, set_name, batch_size, flush_interval)
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    lags: list[float] = []
    dispatches: list[float] = []
    completions: list[float] = []
    retry_count = 0
    bar = tqdm(total=len(rows), file=sys.stderr, unit="req", disable=not progress, mininterval=0.5, dynamic_ncols=True)
    client = make_client(concurrency, timeout)
    target = httpx.URL(url)  # parsed once, not per request

    async def attempt(body: bytes) -> tuple[int | str, str | None, str | None]:
        """(status, answer, error text reported by the app)."""
        try:
            async with asyncio.timeout(timeout):
                response = await client.post(target, content=body, headers=_JSON_HEADERS)
        except (TimeoutError, httpx.TimeoutException):
            return "timeout", None, None
        except httpx.ConnectError:
            return "connect_error", None, None
        except httpx.RemoteProtocolError:
            return "protocol_error", None, None
        except httpx.NetworkError:
            return "network_error", None, None
        except httpx.HTTPError:
            return "http_error", None, None
        if response.status_code != 200:
            return response.status_code, None, error_text_of(response.content)
        try:
            answer = answer_of(orjson.loads(response.content))
        except orjson.JSONDecodeError:
            answer = None
        return (200, answer, None) if answer is not None else ("invalid_response", None, None)

    async def one(question: str, row_id: Any) -> None:
        nonlocal retry_count
        payload: dict[str, Any] = {"question": question}
        if slice_tag is not None:
            payload["slice"] = slice_tag
        body = orjson.dumps(payload)
        started = clock()
        tries = 0
        while True:
            status, answer, error_text = await attempt(body)
            retriable = status in RETRIED_KINDS or (isinstance(status, int) and status >= 500)
            if not retriable or tries >= retries:
                break
            tries += 1
            retry_count += 1
            await asyncio.sleep(min(backoff * 2 ** (tries - 1), 2.0) * (0.5 + backoff_rng.random()))
        finished = clock()
        completions.append(finished)
        if status == 200:
            latencies.append((finished - started) * 1000)
        statuses["ok" if status == 200 else (f"http_{status}" if isinstance(status, int) else status)] += 1
        record = {
            "timestamp": datetime.now(UTC).isoformat(),
            "question": question,
            "model_response": answer,
            "slice": slice_tag,
            "latency_ms": round((finished - started) * 1000, 3),
            "status": status,
            "production_set": set_name,
            "row_id": row_id,
        }
        if error_text is not None:
            record["error"] = error_text
        writer.add(record)
        if on_record is not None:
            on_record(record)
        bar.update(1)

    def finished_task(task: asyncio.Task[None]) -> None:
        semaphore.release()
        in_flight.discard(task)

    in_flight: set[asyncio.Task[None]] = set()
    writer.start()
    start = clock()
    try:
        for (question, row_id), due_offset in zip(rows, schedule, strict=True):
            if writer.error is not None:
                break
            due = start + due_offset
            delay = due - clock()
            await asyncio.sleep(delay if delay > 0 else 0)
            await semaphore.acquire()
            now = clock()
            lags.append(max(0.0, now - due) * 1000)
            dispatches.append(now)
            task = asyncio.create_task(one(question, row_id))
            in_flight.add(task)
            task.add_done_callback(finished_task)
        if in_flight:
            await asyncio.gather(*in_flight)
    finally:
        for task in list(in_flight):
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        bar.close()
        await client.aclose()
        await writer.close()

    summary.sent = len(dispatches)
    summary.ok = statuses.pop("ok", 0)
    summary.errors = dict(statuses)
    summary.retries = retry_count
    if dispatches:
        summary.duration_s = max(completions, default=dispatches[-1]) - dispatches[0]
        span = dispatches[-1] - dispatches[0]
        summary.achieved_rate = (len(dispatches) - 1) / span if span > 0 else float(len(dispatches))
        planned = schedule[len(dispatches) - 1] - schedule[0]
        summary.scheduled_rate = (len(dispatches) - 1) / planned if planned > 0 else summary.achieved_rate
        summary.completion_rate = len(completions) / summary.duration_s if summary.duration_s > 0 else 0.0
    summary.latency_ms_p50 = _percentile(latencies, 50)
    summary.latency_ms_p95 = _percentile(latencies, 95)
    summary.latency_ms_p99 = _percentile(latencies, 99)
    summary.lag_ms_p50 = _percentile(lags, 50)
    summary.lag_ms_p99 = _percentile(lags, 99)
    summary.lag_ms_max = max(lags) if lags else None
    summary.records_written = writer.records_written
    summary.log_keys = list(writer.keys)
    return summary


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def simulate(set_name: str, endpoint: str, **options: Any) -> SimulationSummary:
    """Run :func:`run_simulation` to completion on a fresh event loop (uvloop when installed)."""
    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        return runner.run(run_simulation(set_name, endpoint, **options))

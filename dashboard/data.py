"""Data access and data preparation for the dashboard.

Two halves:

* cached readers that go through the platform's storage layer (:class:`ObjectStore`, keys from
  :mod:`medqa_assets.storage.layout`). Every cache entry is keyed by (store URL, key, version
  token, columns), the version token being the object's etag or mtime+size, so a new or
  rewritten object shows up on the next rerun without restarting the server. Large JSON Lines
  objects are read as evenly spaced byte windows (a sample) instead of whole, so a version of a
  million records renders in about the time a small one does; counts come from the metadata.
* pure functions (DataFrame or dict in, DataFrame or dict out) that tests and benchmarks reuse.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.json as pj
import streamlit as st

from medqa_assets.medquad.clean import CLEAN_COLUMNS
from medqa_assets.retraining.transforms import OUTPUT_COLUMNS
from medqa_assets.settings import Settings
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

# -- commands that produce the data (shown when something is missing) ------------------------
OFFLINE_COMMAND = "dagster job execute -m medqa_assets.definitions -j offline_etl"
SIMULATE_COMMAND = "medqa simulate --set set1 --endpoint http://127.0.0.1:8000"
RETRAINING_COMMAND = "dagster job execute -m medqa_assets.definitions -j retraining_etl"

# Objects larger than this are read as SAMPLE_WINDOWS evenly spaced byte ranges of this total size.
SAMPLE_BYTES = 24 * 1024 * 1024
SAMPLE_WINDOWS = 256  # many small windows: the sample covers the whole object evenly
MIN_WINDOW_BYTES = 64 * 1024

SPLIT_COLUMNS = CLEAN_COLUMNS  # the columns of every split and production set
RETRAINING_COLUMNS = OUTPUT_COLUMNS
# What the Retraining and Drift tabs read of a version (one shared cache entry per version).
RETRAINING_READ_COLUMNS = ["question", "answer", "timestamp", "row_id"]
QUARANTINE_COLUMNS = ["source_file", "index", "reason", "record"]


class DataError(Exception):
    """An item of the store could not be read or understood; the message is safe to show."""


# -- secrets ---------------------------------------------------------------------------------
_SECRET_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")
_USERINFO_RE = re.compile(r"(?<=://)[^/@\s]+@")


def redact(text: str) -> str:
    """``text`` with credential values from the environment and URL user-info masked."""
    for name in _SECRET_VARS:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return _USERINFO_RE.sub("***@", text)


def scrubbed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame`` with personal data replaced in the text ``columns``: the dashboard shows text that
    came from production logs only through the scrubber, even if a store holds older, unscrubbed
    records (written before the scrubber knew a kind)."""
    out = frame.copy()
    for column in columns:
        if column in out and len(out):
            out[column] = scrubbed_values(list(out[column]))
    return out


def scrubbed_values(values: list[Any]) -> list[str | None]:
    """Values as text through the scrubber (missing ones stay missing)."""
    from medqa_assets.privacy.scrub import scrub_texts

    texts = [None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v) for v in values]
    return scrub_texts(texts)[0]


def describe_error(error: BaseException) -> str:
    """A one-line, secret-free description of an exception for the page."""
    if isinstance(error, DataError):
        return redact(str(error))
    return redact(f"{type(error).__name__}: {error}")


# -- the store -------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=8)
def _store_for(url: str, endpoint_url: str | None) -> ObjectStore:
    # Credentials come from the environment inside from_settings; they are not cache keys.
    return ObjectStore.from_settings()


def get_store() -> ObjectStore:
    """The store the pipeline uses (``MEDQA_STORE_URL`` and friends), one client per URL."""
    settings = Settings.from_env()
    return _store_for(settings.store_url, settings.s3_endpoint_url)


def store_label(store: ObjectStore) -> str:
    """Where the dashboard reads from, without any credential."""
    label = store.url if not store.is_s3 else f"s3://{store.root}"
    if store.is_s3 and store.endpoint_url:
        label += f" (endpoint {store.endpoint_url})"
    return redact(label)


def listing(store: ObjectStore, prefix: str) -> dict[str, str]:
    """Key -> version token of every object under ``prefix`` (one listing call, not cached)."""
    return {info.key: info.version_token for info in store.list(prefix)}


def raw_inbox(store: ObjectStore) -> tuple[int, pd.DataFrame]:
    """Log files waiting under ``retraining_data_raw/``, and what is there but will not be taken, with why."""
    files, ignored = store.scan(layout.RAW_LOGS_PREFIX)
    frame = pd.DataFrame(
        [{"entry": e.key.removeprefix(layout.RAW_LOGS_PREFIX), "reason": e.reason} for e in ignored],
        columns=["entry", "reason"],
    )
    return len(files), frame


def token_of(store: ObjectStore, key: str) -> str | None:
    """The version token of ``key``, or None if it does not exist."""
    try:
        return store.info(key).version_token
    except FileNotFoundError:
        return None


# -- cached readers --------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=256)
def _cached_json(_store: ObjectStore, url: str, key: str, token: str) -> Any:
    data = _store.read_bytes(key)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{key} is not valid JSON ({error})") from None


def read_json(store: ObjectStore, key: str, token: str | None = None) -> Any:
    """The JSON value at ``key``; None if the object does not exist; DataError if it is corrupt."""
    token = token or token_of(store, key)
    if token is None:
        return None
    try:
        return _cached_json(store, store.url, key, token)
    except FileNotFoundError:
        return None


def read_text(store: ObjectStore, key: str) -> str | None:
    """Small text objects (the version tracker): not cached, always fresh."""
    try:
        return store.read_text(key)
    except FileNotFoundError:
        return None


@dataclass
class Table:
    """Rows read from a JSON Lines object, and whether they are a sample of it."""

    frame: pd.DataFrame
    sampled: bool = False
    bytes_read: int = 0
    bytes_total: int = 0
    bad_lines: int = 0

    @property
    def fraction(self) -> float:
        return self.bytes_read / self.bytes_total if self.bytes_total else 1.0

    def estimated_rows(self) -> int:
        """Rows in the whole object, extrapolated from the sample when sampled."""
        if not self.sampled:
            return len(self.frame)
        return round(len(self.frame) / self.fraction) if self.fraction else 0

    def info(self) -> SampleInfo:
        return SampleInfo(
            len(self.frame), self.sampled, self.fraction, self.bytes_total, self.estimated_rows(), self.bad_lines
        )


@dataclass(frozen=True)
class SampleInfo:
    """How a Table was read, without its rows (to keep next to cached results)."""

    rows: int
    sampled: bool
    fraction: float
    bytes_total: int
    estimated_rows: int
    bad_lines: int


def _trim_window(chunk: bytes, at_start: bool, at_end: bool) -> bytes:
    """Whole lines of a byte window: drop the partial first and last line."""
    if not at_start:
        newline = chunk.find(b"\n")
        chunk = b"" if newline < 0 else chunk[newline + 1 :]
    if not at_end:
        newline = chunk.rfind(b"\n")
        chunk = b"" if newline < 0 else chunk[: newline + 1]
    return chunk


def read_windows(store: ObjectStore, key: str, size: int, budget: int, windows: int) -> bytes:
    """``windows`` evenly spaced byte ranges of ``key`` totalling about ``budget`` bytes, whole lines only."""
    windows = max(1, min(windows, budget // MIN_WINDOW_BYTES))  # a window must hold several whole lines
    length = max(1, budget // windows)
    step = size / windows
    starts = [int(index * step) for index in range(windows)]

    def fetch(start: int) -> bytes:
        end = min(size, start + length)
        chunk = store.read_range(key, start, end)
        return _trim_window(chunk, start == 0, end >= size)

    if store.is_s3:  # ranged GETs in parallel; a local file is faster read in order
        with ThreadPoolExecutor(max_workers=16) as pool:
            chunks = list(pool.map(fetch, starts))
    else:
        chunks = [fetch(start) for start in starts]
    return b"".join(chunk if chunk.endswith(b"\n") or not chunk else chunk + b"\n" for chunk in chunks)


def parse_jsonl(data: bytes, columns: list[str]) -> tuple[pd.DataFrame, int]:
    """JSON Lines -> only ``columns`` (as strings), and the number of lines that were not JSON objects.

    Fast path: Arrow's multi-threaded JSON reader with an explicit schema that ignores every other
    field. If a value is not a string (or a line is broken) fall back to one line at a time.
    """
    if not data.strip():
        return pd.DataFrame({column: pd.Series(dtype="string[pyarrow]") for column in columns}), 0
    schema = pa.schema([(column, pa.string()) for column in columns])
    try:
        table = pj.read_json(
            pa.BufferReader(data),
            read_options=pj.ReadOptions(block_size=8 << 20),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
        frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
        return frame[columns], 0
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        pass
    rows: list[dict[str, Any]] = []
    bad = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        if not isinstance(value, dict):
            bad += 1
            continue
        rows.append({c: _as_text(value.get(c)) for c in columns})
    frame = pd.DataFrame(rows, columns=columns).astype("string[pyarrow]")
    return frame, bad


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


# A shared resource, not a copy per caller: pickling Arrow-backed frames for st.cache_data cost
# a third of a second per cold tab. Callers treat the frames as read-only (assign, filter: copies).
@st.cache_resource(show_spinner=False, max_entries=32)
def _cached_jsonl(
    _store: ObjectStore, url: str, key: str, token: str, columns: tuple[str, ...], size: int, budget: int | None
) -> Table:
    if budget is not None and size > budget:
        data = read_windows(_store, key, size, budget, SAMPLE_WINDOWS)
        frame, bad = parse_jsonl(data, list(columns))
        return Table(frame, sampled=True, bytes_read=len(data), bytes_total=size, bad_lines=bad)
    data = _store.read_bytes(key)
    frame, bad = parse_jsonl(data, list(columns))
    return Table(frame, sampled=False, bytes_read=len(data), bytes_total=len(data), bad_lines=bad)


def read_jsonl(store: ObjectStore, key: str, columns: list[str], *, sample_bytes: int | None = None) -> Table | None:
    """Only ``columns`` of a JSON Lines object; None if it does not exist.

    With ``sample_bytes`` an object larger than that is sampled (see :func:`read_windows`).
    """
    try:
        info = store.info(key)
    except FileNotFoundError:
        return None
    return _cached_jsonl(store, store.url, key, info.version_token, tuple(columns), info.size, sample_bytes)


@st.cache_data(show_spinner=False, max_entries=128)
def _cached_line_count(_store: ObjectStore, url: str, key: str, token: str) -> int:
    data = _store.read_bytes(key)
    return sum(1 for line in data.splitlines() if line.strip())


def count_rows(store: ObjectStore, key: str, token: str | None = None) -> int | None:
    """Non-empty lines of a JSON Lines object (no parsing); None if it does not exist."""
    token = token or token_of(store, key)
    if token is None:
        return None
    return _cached_line_count(store, store.url, key, token)


# -- retraining versions ---------------------------------------------------------------------
@dataclass
class Versions:
    """What the store holds under ``retraining_data_transformed/``."""

    complete: list[str] = field(default_factory=list)  # oldest first
    in_progress: list[str] = field(default_factory=list)
    tracker: int | None = None
    problems: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def newest(self) -> str | None:
        return self.complete[-1] if self.complete else None


def list_versions(store: ObjectStore) -> Versions:
    """Complete versions (at most the tracker's N, with their data present) and the rest."""
    tokens = listing(store, layout.TRANSFORMED_PREFIX)
    result = Versions(tokens=tokens)
    names: set[str] = set()
    for key in tokens:
        rest = key[len(layout.TRANSFORMED_PREFIX) :]
        if "/" in rest:
            names.add(rest.split("/", 1)[0])
    versions = sorted((n for n in names if layout.is_version_name(n)), key=layout.version_number)
    if layout.VERSION_TRACKER in tokens:
        text = (read_text(store, layout.VERSION_TRACKER) or "").strip()
        try:
            result.tracker = int(text)
        except ValueError:
            result.problems.append(f"{layout.VERSION_TRACKER} does not hold a whole number ({text[:40]!r})")
    elif versions:
        result.problems.append(f"{layout.VERSION_TRACKER} is missing: showing every version that has its data")
    for name in versions:
        has_data = layout.retraining_data_key(name) in tokens
        below_tracker = result.tracker is None or layout.version_number(name) <= result.tracker
        if has_data and below_tracker:
            result.complete.append(name)
        else:
            result.in_progress.append(name)
    return result


# -- pure data preparation -------------------------------------------------------------------
def _text_array(values: pd.Series) -> pa.LargeStringArray:
    """A text column as one Arrow large-string array (zero-copy for Arrow-backed strings)."""
    try:
        array = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        array = pa.array(values.astype("string"), from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pa.array(values.astype("string"), from_pandas=True)
    return array.cast(pa.large_string())


_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 32]] = True  # what str.split() splits ASCII text on


def word_counts(values: pd.Series) -> np.ndarray:
    """Words per value, as ``len(text.split())`` counts them for ASCII white space; missing values count 0.

    Vectorized over the Arrow buffers (a word starts at a non-space byte that follows a space or
    the start of the value), about ten times faster than a regex or ``str.split`` on MedQuAD answers.
    """
    array = _text_array(values).fill_null("")
    if len(array) == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    buffer = array.buffers()[2]
    text = np.zeros(0, np.uint8) if buffer is None else np.frombuffer(buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
    offsets = offsets - offsets[0]
    space = _ASCII_SPACE[text]
    starts = ~space
    starts[1:] &= space[:-1]
    firsts = offsets[:-1][offsets[:-1] < len(text)]
    starts[firsts] = ~space[firsts]  # the first byte of a value starts a word unless it is a space
    # words per value = word starts between its offsets (a cumulative sum of the bytes took 10x longer)
    return np.diff(np.searchsorted(np.flatnonzero(starts), offsets)).astype(np.int64)


def histogram(groups: dict[str, np.ndarray], bins: int = 40, clip_quantile: float = 0.99) -> pd.DataFrame:
    """Pre-binned histograms of several groups of counts on shared whole-number bins (small for the browser).

    Values above the ``clip_quantile`` of all values fall into the last bin. Columns: group,
    bin_start, bin_end (exclusive), label, count, share (of the group).
    """
    columns = ["group", "bin_start", "bin_end", "label", "count", "share"]
    arrays = {name: np.asarray(values, dtype=float) for name, values in groups.items() if len(values)}
    if not arrays:
        return pd.DataFrame(columns=columns)
    combined = np.concatenate(list(arrays.values()))
    low = float(np.floor(np.min(combined)))
    high = float(np.floor(np.quantile(combined, clip_quantile)))
    clipped = bool(np.max(combined) > high)
    width = max(1.0, float(np.ceil((high - low + 1) / bins)))
    edges = low + width * np.arange(int(np.ceil((high - low + 1) / width)) + 1)
    starts, ends = edges[:-1], edges[1:]
    labels = [f"{a:g}" if width == 1 else f"{a:g}–{b - 1:g}" for a, b in zip(starts, ends, strict=True)]
    if clipped:
        labels[-1] = f"≥ {starts[-1]:g}"
    parts = []
    for name, values in arrays.items():
        counts, _ = np.histogram(np.clip(values, low, edges[-1] - 0.5), bins=edges)
        parts.append(
            pd.DataFrame(
                {
                    "group": name,
                    "bin_start": starts,
                    "bin_end": ends,
                    "label": labels,
                    "count": counts,
                    "share": counts / max(1, counts.sum()),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def counts_frame(mapping: dict[str, Any] | None, label: str, value: str = "rows") -> pd.DataFrame:
    """A ``{name: count}`` mapping as a two-column frame, largest first (non-numbers skipped)."""
    rows = [
        (str(name), int(count))
        for name, count in (mapping or {}).items()
        if isinstance(count, int | float) and not isinstance(count, bool)
    ]
    frame = pd.DataFrame(rows, columns=[label, value])
    return frame.sort_values(value, ascending=False, kind="stable").reset_index(drop=True)


def dropped_reasons(metadata: dict[str, Any]) -> pd.DataFrame:
    """Rows dropped while cleaning, per reason (without the total)."""
    dropped = {k: v for k, v in (metadata.get("dropped") or {}).items() if k != "total_dropped"}
    return counts_frame(dropped, "reason")


def split_counts(metadata: dict[str, Any] | None, observed: dict[str, int | None]) -> pd.DataFrame:
    """Rows per split as the metadata records them and as found in the store."""
    recorded = (metadata or {}).get("split_counts") or {}
    names = list(dict.fromkeys([*layout.SPLIT_NAMES, *recorded]))
    return pd.DataFrame(
        {
            "split": names,
            "rows (metadata)": [recorded.get(n) for n in names],
            "rows (in store)": [observed.get(n) for n in names],
        }
    )


def category_distribution(groups: dict[str, pd.Series], label: str = "question_type") -> pd.DataFrame:
    """Rows and share per category within each group: columns group, <label>, rows, share."""
    parts = []
    for name, values in groups.items():
        counts = values.astype("string").fillna("(missing)").value_counts()
        parts.append(
            pd.DataFrame({"group": name, label: counts.index.astype(str), "rows": counts.to_numpy()}).assign(
                share=lambda f: f["rows"] / max(1, f["rows"].sum())
            )
        )
    if not parts:
        return pd.DataFrame(columns=["group", label, "rows", "share"])
    return pd.concat(parts, ignore_index=True)


def keyword_mask(frame: pd.DataFrame, keyword: str, columns: list[str]) -> np.ndarray:
    """Rows where any of ``columns`` (those present) contains ``keyword``, case-insensitive."""
    mask = np.zeros(len(frame), dtype=bool)
    for column in (c for c in columns if c in frame.columns):
        found = frame[column].astype("string").str.contains(keyword, case=False, regex=False)
        mask |= found.fillna(False).to_numpy(dtype=bool)
    return mask


def attach_question_types(rows: pd.DataFrame, reference: pd.DataFrame | None) -> pd.Series:
    """The question type of each row, looked up by ``row_id`` in ``reference`` (row_id, question_type)."""
    if "row_id" not in rows.columns or reference is None or reference.empty:
        return pd.Series(pd.NA, index=rows.index, dtype="string")
    lookup = reference.dropna(subset=["row_id"]).drop_duplicates("row_id").set_index("row_id")["question_type"]
    return rows["row_id"].map(lookup).astype("string")


def filter_and_sample(
    frame: pd.DataFrame,
    *,
    n: int,
    seed: int,
    question_types: list[str] | None = None,
    keyword: str = "",
) -> pd.DataFrame:
    """A seeded random sample of the rows matching the question types and keyword (case-insensitive)."""
    selected = frame
    if question_types:
        selected = selected[selected["question_type"].isin(question_types)]
    keyword = keyword.strip()
    if keyword:
        selected = selected[keyword_mask(selected, keyword, ["question", "answer", "question_focus"])]
    if len(selected) > n:
        selected = selected.sample(n=n, random_state=seed)
    return selected.reset_index(drop=True)


def versions_overview(metadatas: dict[str, dict[str, Any] | None]) -> pd.DataFrame:
    """One row per version with readable metadata: created, records in/out, quarantined, duplicates."""
    rows = []
    for version, meta in metadatas.items():
        if not isinstance(meta, dict):
            continue
        rows.append(
            {
                "version": version,
                "number": layout.version_number(version),
                "created": pd.to_datetime(meta.get("created"), utc=True, errors="coerce", format="ISO8601"),
                "records_in": meta.get("records_in"),
                "records_out": meta.get("records_out"),
                "quarantined": meta.get("quarantined"),
                "duplicates_removed": meta.get("duplicates_removed"),
            }
        )
    columns = ["version", "number", "created", "records_in", "records_out", "quarantined", "duplicates_removed"]
    return pd.DataFrame(rows, columns=columns).sort_values("number").reset_index(drop=True)


def parse_timestamps(values: pd.Series) -> pd.Series:
    """ISO 8601 strings (or epoch seconds) -> UTC timestamps; unreadable values become NaT."""
    text = values.astype("string")
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    numeric = pd.to_numeric(text.where(parsed.isna()), errors="coerce")
    if numeric.notna().any():
        parsed = parsed.fillna(pd.to_datetime(numeric, unit="s", utc=True, errors="coerce"))
    return parsed


TREND_PERIODS: tuple[tuple[str, str], ...] = (
    ("min", "minute"),
    ("5min", "5 minutes"),
    ("15min", "15 minutes"),
    ("h", "hour"),
    ("3h", "3 hours"),
    ("6h", "6 hours"),
    ("D", "day"),
    ("W", "week"),
)


def timestamp_trend(timestamps: pd.Series, scale: float = 1.0, max_periods: int = 120) -> tuple[pd.DataFrame, str]:
    """Records per period, the shortest period that gives at most ``max_periods`` periods.

    ``scale`` turns counts in a sample into estimates for the whole object; pass a small
    ``max_periods`` for samples so that every period holds enough sampled records to be stable.
    """
    valid = timestamps.dropna()
    if valid.empty:
        return pd.DataFrame(columns=["period", "records"]), "hour"
    span = valid.max() - valid.min()
    freq, unit = TREND_PERIODS[-1]
    for candidate, name in TREND_PERIODS[:-1]:
        if span / pd.Timedelta(pd.tseries.frequencies.to_offset(candidate)) <= max_periods:
            freq, unit = candidate, name
            break
    if freq == "W":
        days = valid.dt.floor("D")
        periods = days - pd.to_timedelta(days.dt.dayofweek, unit="D")
    else:
        periods = valid.dt.floor(freq)
    trend = periods.value_counts().sort_index()
    # every period between the first and the last, empty ones as 0: a line never bridges a gap
    step = pd.Timedelta(days=7) if freq == "W" else pd.tseries.frequencies.to_offset(freq)
    trend = trend.reindex(pd.date_range(trend.index[0], trend.index[-1], freq=step), fill_value=0)
    frame = pd.DataFrame({"period": trend.index, "records": (trend.to_numpy() * scale).round().astype(int)})
    return frame, unit


def manifest_frame(metadata: dict[str, Any]) -> pd.DataFrame:
    """The version's source files with checksums, sizes, records and status."""
    columns = ["name", "status", "reason", "records", "size", "sha256", "key"]
    files = metadata.get("source_files") or metadata.get("files") or []
    rows = [{c: entry.get(c) for c in columns} for entry in files if isinstance(entry, dict)]
    return pd.DataFrame(rows, columns=columns)


def quality_overview(metadatas: dict[str, dict[str, Any] | None]) -> pd.DataFrame:
    """Answer quality per version that reports it, one row per version and metric: the model's mean
    and 95% interval, the random same-type baseline's, and the lift over it (versions by number)."""
    rows = []
    for version, meta in metadatas.items():
        quality = meta.get("answer_quality") if isinstance(meta, dict) else None
        if not isinstance(quality, dict):
            continue
        metrics = quality.get("metrics")
        if not isinstance(metrics, dict):  # metadata written before baselines: the primary metric only
            metrics = {quality.get("metric") or "metric": {"mean": quality.get("mean")}}
        for metric, entry in metrics.items():
            if not isinstance(entry, dict):
                continue
            low, high = _interval(entry.get("ci95"))
            base_low, base_high = _interval(entry.get("baseline_ci95"))
            lift_low, lift_high = _interval(entry.get("lift_ci95"))
            rows.append(
                {
                    "version": version,
                    "number": layout.version_number(version),
                    "metric": metric,
                    "n": quality.get("n"),
                    "mean": entry.get("mean"),
                    "low": low,
                    "high": high,
                    "baseline": entry.get("baseline_mean"),
                    "baseline_low": base_low,
                    "baseline_high": base_high,
                    "lift": entry.get("lift"),
                    "lift_low": lift_low,
                    "lift_high": lift_high,
                }
            )
    columns = ["version", "number", "metric", "n", "mean", "low", "high", "baseline", "baseline_low"]
    columns += ["baseline_high", "lift", "lift_low", "lift_high"]
    return pd.DataFrame(rows, columns=columns).sort_values(["number", "metric"]).reset_index(drop=True)


def _interval(value: Any) -> tuple[float | None, float | None]:
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return float(value[0]), float(value[1])
    return None, None


def contamination_overview(metadatas: dict[str, dict[str, Any] | None]) -> pd.DataFrame:
    """Per version (by number) and split: the version's rows whose question is one of the split's,
    and the evaluation rows that no published version has touched yet."""
    rows = []
    for version, meta in metadatas.items():
        counts = meta.get("contamination") if isinstance(meta, dict) else None
        if not isinstance(counts, dict):
            continue
        untouched = counts.get("untouched_evaluation") or {}
        for split, entry in (counts.get("by_split") or {}).items():
            if isinstance(entry, dict):
                rows.append(
                    {
                        "version": version,
                        "number": layout.version_number(version),
                        "split": split,
                        "version_rows": counts.get("rows"),
                        "rows_with_split_question": entry.get("rows_with_split_question"),
                        "distinct_split_questions": entry.get("distinct_split_questions"),
                        "split_questions": entry.get("split_questions"),
                        "untouched_evaluation_rows": untouched.get("rows"),
                    }
                )
    columns = ["version", "number", "split", "version_rows", "rows_with_split_question", "distinct_split_questions"]
    columns += ["split_questions", "untouched_evaluation_rows"]
    return pd.DataFrame(rows, columns=columns).sort_values(["number", "split"]).reset_index(drop=True)


def quality_histogram(quality: dict[str, Any]) -> pd.DataFrame:
    """The metric's histogram from the metadata: ``bins`` are edges (counts+1) or bin starts."""
    histogram_ = quality.get("histogram") or {}
    bins = list(histogram_.get("bins") or [])
    counts = list(histogram_.get("counts") or [])
    if not counts:
        return pd.DataFrame(columns=["bin", "count"])
    if len(bins) == len(counts) + 1:
        labels = [f"{bins[i]:.2g}–{bins[i + 1]:.2g}" for i in range(len(counts))]
    elif len(bins) == len(counts):
        labels = [f"{b:.2g}" if isinstance(b, int | float) else str(b) for b in bins]
    else:
        labels = [str(i) for i in range(len(counts))]
    return pd.DataFrame({"bin": labels, "count": counts})


def secrets_in(text: str) -> list[str]:
    """Names of credential variables whose values occur in ``text`` (for tests and self-checks)."""
    return [name for name in _SECRET_VARS if (value := os.environ.get(name)) and len(value) >= 4 and value in text]

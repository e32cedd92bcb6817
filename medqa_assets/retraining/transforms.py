"""Pure transformation of production log records into retraining rows.

``transform_files`` turns a chunk of raw log files (name and bytes) into output JSON Lines,
rejected records with reasons, and counts. It holds no global state, so chunks can run in
separate worker processes; :class:`BatchAccumulator` then merges chunks in order, removing
exact duplicates across the whole version.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from medqa_assets.retraining.parsing import (
    ALIAS_NAMES,
    FIELD_ALIASES,
    PROVENANCE_FIELDS,
    UnparseableFile,
    parse_log_bytes,
)
from medqa_assets.retraining.pii import PII_KINDS, scrub_array
from medqa_assets.text import collapse_whitespace

MAX_QUESTION_CHARS = 10_000
MAX_ANSWER_CHARS = 100_000
OUTPUT_COLUMNS = ["question", "answer", "timestamp", "source_file", "slice", "production_set", "row_id"]

REJECT_MISSING_QUESTION = "missing_question"
REJECT_MISSING_ANSWER = "missing_answer"
REJECT_NON_STRING = "non_string_field"
REJECT_TOO_LARGE = "record_too_large"
REJECT_REQUEST_FAILED = "request_failed"
REJECT_BAD_TIMESTAMP = "invalid_timestamp"


@dataclass
class FileOutcome:
    key: str
    records: int = 0
    unparseable_reason: str | None = None
    detail: str | None = None


@dataclass
class ChunkResult:
    """What one chunk of files produced; merged by :class:`BatchAccumulator`."""

    lines: list[bytes] = field(default_factory=list)
    hashes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    rejected: list[dict[str, Any]] = field(default_factory=list)
    files: list[FileOutcome] = field(default_factory=list)
    rejections: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)
    fields_seen: set[str] = field(default_factory=set)
    evaluation_rows: list[tuple[int, str, str, str]] = field(default_factory=list)  # (line, set, row_id, answer)
    ts_min: str | None = None
    ts_max: str | None = None


def _parse_timestamps(values: list[Any]) -> tuple[pd.Series, pd.Series]:
    """ISO 8601 strings or epoch seconds -> ISO strings (UTC); and a mask of unparseable ones."""
    series = pd.Series(values, dtype=object)
    present = series.notna()
    numeric = series.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool))
    parsed = pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns, UTC]")
    if numeric.any():
        parsed[numeric] = pd.to_datetime(series[numeric].astype(float), unit="s", utc=True, errors="coerce")
    text = present & series.map(lambda v: isinstance(v, str))
    if text.any():
        parsed[text] = pd.to_datetime(series[text], format="ISO8601", utc=True, errors="coerce")
    bad = present & parsed.isna()
    iso = parsed.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").where(parsed.notna(), None)
    return iso, bad


def _as_text(value: Any) -> Any:
    return value if isinstance(value, str) or value is None else _NOT_TEXT


_NOT_TEXT = object()


def transform_records(records: list[dict[str, Any]], sources: list[str], result: ChunkResult) -> None:
    """Validate, scrub and normalize parsed records, appending to ``result``."""
    if not records:
        return
    for record in records:
        result.fields_seen.update(record.keys())
    questions = [_as_text(r.get("question")) for r in records]
    answers = [_as_text(r["model_response"] if "model_response" in r else r.get("answer")) for r in records]
    raw_times = [r["timestamp"] if "timestamp" in r else r.get("ts") for r in records]
    provenance = {name: [r.get(name) for r in records] for name in PROVENANCE_FIELDS}

    reasons = np.full(len(records), None, dtype=object)

    def reject(mask: np.ndarray, reason: str) -> None:
        reasons[(reasons == None) & mask] = reason  # noqa: E711 - elementwise comparison

    non_string = np.array([q is _NOT_TEXT or a is _NOT_TEXT for q, a in zip(questions, answers, strict=True)])
    reject(non_string, REJECT_NON_STRING)
    questions = [None if q is _NOT_TEXT else q for q in questions]
    answers = [None if a is _NOT_TEXT else a for a in answers]
    status = provenance["status"]
    failed = np.array([s is not None and str(s) != "200" for s in status])
    reject(failed, REJECT_REQUEST_FAILED)

    question_array = collapse_whitespace(pa.array(questions, type=pa.large_string()))
    answer_array = collapse_whitespace(pa.array(answers, type=pa.large_string()))
    question_length = pc.fill_null(pc.utf8_length(question_array), 0).to_numpy(zero_copy_only=False)
    answer_length = pc.fill_null(pc.utf8_length(answer_array), 0).to_numpy(zero_copy_only=False)
    reject((question_length > MAX_QUESTION_CHARS) | (answer_length > MAX_ANSWER_CHARS), REJECT_TOO_LARGE)
    reject(question_length == 0, REJECT_MISSING_QUESTION)
    reject(answer_length == 0, REJECT_MISSING_ANSWER)
    timestamps, bad_time = _parse_timestamps(raw_times)
    reject(bad_time.to_numpy(), REJECT_BAD_TIMESTAMP)

    keep = reasons == None  # noqa: E711
    for index in np.flatnonzero(~keep):
        result.rejections[reasons[index]] += 1
        result.rejected.append(
            {
                "source_file": sources[index],
                "index": int(index),
                "reason": reasons[index],
                "record": orjson.dumps(records[index], default=str).decode()[:2000],
            }
        )
    kept = pa.array(keep)
    question_array, counts_q = scrub_array(pc.filter(question_array, kept))
    answer_array, counts_a = scrub_array(pc.filter(answer_array, kept))
    for kind in PII_KINDS:
        result.pii[kind] += counts_q[kind] + counts_a[kind]

    frame = pd.DataFrame(
        {
            "question": question_array.to_pylist(),
            "answer": answer_array.to_pylist(),
            "timestamp": timestamps[keep].tolist(),
            "source_file": [s for s, k in zip(sources, keep, strict=True) if k],
            **{
                name: [v for v, k in zip(provenance[name], keep, strict=True) if k]
                for name in ("slice", "production_set", "row_id")
            },
        },
        columns=OUTPUT_COLUMNS,
    )
    if frame.empty:
        return
    hashes = pd.util.hash_pandas_object(frame[["question", "answer"]], index=False).to_numpy()
    offset = len(result.lines)
    result.lines.extend(orjson.dumps(row) + b"\n" for row in frame.to_dict("records"))
    result.hashes = np.concatenate([result.hashes, hashes])
    stamps = frame["timestamp"].dropna()
    if not stamps.empty:
        low, high = stamps.min(), stamps.max()
        result.ts_min = low if result.ts_min is None else min(result.ts_min, low)
        result.ts_max = high if result.ts_max is None else max(result.ts_max, high)
    with_reference = frame["row_id"].notna() & frame["production_set"].notna()
    for index in np.flatnonzero(with_reference.to_numpy()):
        row = frame.iloc[index]
        result.evaluation_rows.append(
            (offset + int(index), str(row["production_set"]), str(row["row_id"]), row["answer"])
        )


def transform_files(files: list[tuple[str, bytes]]) -> ChunkResult:
    """Transform a chunk of raw log files (key, content), in the given order."""
    result = ChunkResult()
    records: list[dict[str, Any]] = []
    sources: list[str] = []
    for key, data in files:
        outcome = FileOutcome(key=key)
        result.files.append(outcome)
        try:
            parsed = parse_log_bytes(data)
        except UnparseableFile as error:
            outcome.unparseable_reason, outcome.detail = error.reason, error.detail
            continue
        outcome.records = parsed.count
        for index, reason, raw in parsed.rejected:
            result.rejections[reason] += 1
            result.rejected.append({"source_file": key, "index": index, "reason": reason, "record": raw})
        records.extend(parsed.records)
        sources.extend([key] * len(parsed.records))
    transform_records(records, sources, result)
    return result


@dataclass
class BatchAccumulator:
    """Merges chunk results in order: exact duplicates across the version are removed here."""

    seen: set[int] = field(default_factory=set)
    records_out: int = 0
    duplicates: int = 0

    def unique_lines(self, chunk: ChunkResult) -> tuple[list[bytes], list[int]]:
        """Lines of ``chunk`` not seen before, and their positions within the chunk."""
        lines, positions = [], []
        for position, (line, digest) in enumerate(zip(chunk.lines, chunk.hashes.tolist(), strict=True)):
            if digest in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(digest)
            lines.append(line)
            positions.append(position)
        self.records_out += len(lines)
        return lines, positions


def dropped_fields(fields_seen: set[str]) -> list[str]:
    """Fields present in the logs that are metadata, not training data or provenance."""
    kept = ALIAS_NAMES | set(PROVENANCE_FIELDS) - {"status"} | set(FIELD_ALIASES)
    return sorted(fields_seen - kept)

"""Pure transformation of production log records into retraining rows.

``transform_files`` turns a chunk of raw log files (name and bytes) into output JSON Lines,
rejected records with reasons, and counts. It holds no global state, so chunks can run in
separate worker processes; :class:`BatchAccumulator` then merges chunks in order, removing
exact duplicates across the whole version.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from medqa_assets.privacy.scrub import PII_KINDS, scrub_array, scrub_record_text
from medqa_assets.retraining.parsing import (
    ALIAS_NAMES,
    FIELD_ALIASES,
    PROVENANCE_FIELDS,
    UnparseableFile,
    parse_log_bytes,
    truncate_text,
)
from medqa_assets.text import alnum_fingerprints, collapse_whitespace

# Answers that are not answers (compared case-insensitively after whitespace is collapsed); the
# serving apps log this text when the model times out. MEDQA_NON_ANSWER_TEXTS replaces the list.
DEFAULT_NON_ANSWERS: tuple[str, ...] = ("Timed out waiting for model response.",)
MAX_QUESTION_CHARS = 10_000
MAX_ANSWER_CHARS = 100_000
OUTPUT_COLUMNS = ["question", "answer", "timestamp", "source_file", "slice", "production_set", "row_id"]

REJECT_MISSING_QUESTION = "missing_question"
REJECT_MISSING_ANSWER = "missing_answer"
REJECT_NON_STRING = "non_string_field"
REJECT_TOO_LARGE = "record_too_large"
REJECT_NON_ANSWER = "non_answer"  # a timeout text, a blank answer, the answer of a failed request
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
    questions: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))  # fingerprint per line
    rejected: list[dict[str, Any]] = field(default_factory=list)
    files: list[FileOutcome] = field(default_factory=list)
    rejections: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)
    fields_seen: set[str] = field(default_factory=set)
    evaluation_rows: list[tuple[int, str, str, str]] = field(default_factory=list)  # (line, set, row_id, answer)
    identities: list[bytes] = field(default_factory=list)  # of each line, for exactly-once across versions
    ts_min: str | None = None
    ts_max: str | None = None


def _parse_timestamps(values: list[Any]) -> tuple[list[str | None], np.ndarray]:
    """ISO 8601 strings or epoch seconds -> ISO strings in UTC; and a mask of unparseable ones."""
    kinds = np.array(
        [
            2
            if isinstance(v, str)
            else 1
            if isinstance(v, int | float) and v is not True and v is not False
            else 0
            if v is None
            else 3
            for v in values
        ],
        dtype=np.int8,
    )
    seconds = np.full(len(values), np.nan)
    numeric = kinds == 1
    if numeric.any():
        seconds[numeric] = [values[i] for i in np.flatnonzero(numeric)]
    text = kinds == 2
    if text.any():
        parsed = pd.to_datetime(
            pd.Series([values[i] for i in np.flatnonzero(text)]), format="ISO8601", utc=True, errors="coerce"
        )
        seconds[text] = parsed.to_numpy(dtype="datetime64[ns]").astype("int64") / 1e9
        seconds[np.flatnonzero(text)[parsed.isna().to_numpy()]] = np.nan
    valid = ~np.isnan(seconds) & (np.abs(np.nan_to_num(seconds)) < 32_503_680_000)  # before year 3000
    millis = pa.array(np.where(valid, seconds * 1000, 0).astype("int64"), mask=~valid).cast(pa.timestamp("ms", "UTC"))
    iso = pc.strftime(millis, format="%Y-%m-%dT%H:%M:%SZ").to_pylist()
    return iso, (kinds == 3) | ((kinds != 0) & ~valid)


def _as_text(value: Any) -> Any:
    return value if isinstance(value, str) or value is None else _NOT_TEXT


_NOT_TEXT = object()


def _failed_status(status: Any) -> bool:
    """A request that did not succeed: any status but 2xx (HTTP codes, or the simulator's "timeout", ...)."""
    if status is None:
        return False
    text = str(status).strip()
    return not (text.isdigit() and 200 <= int(text) < 300)


def record_identity(record: Any) -> bytes:
    """A record's identity: 16 bytes of BLAKE2b over its canonical JSON (a record that arrives again,
    in a cumulative copy, a rewritten array or a re-ingested file, has the same identity)."""
    return hashlib.blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS, default=str), digest_size=16).digest()


def text_identity(raw: str) -> bytes:
    """The identity of an unreadable line (its text)."""
    return hashlib.blake2b(raw.encode("utf-8", "replace"), digest_size=16).digest()


def transform_records(
    records: list[dict[str, Any]],
    sources: list[str],
    result: ChunkResult,
    non_answers: tuple[str, ...] = DEFAULT_NON_ANSWERS,
    identities: list[bytes] | None = None,
) -> None:
    """Validate, scrub and normalize parsed records, appending to ``result``."""
    identities = identities if identities is not None else [record_identity(r) for r in records]
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
    reject(np.array([_failed_status(s) for s in provenance["status"]]), REJECT_NON_ANSWER)

    question_array = collapse_whitespace(pa.array(questions, type=pa.large_string()))
    answer_array = collapse_whitespace(pa.array(answers, type=pa.large_string()))
    question_length = pc.fill_null(pc.utf8_length(question_array), 0).to_numpy(zero_copy_only=False)
    answer_length = pc.fill_null(pc.utf8_length(answer_array), 0).to_numpy(zero_copy_only=False)
    reject((question_length > MAX_QUESTION_CHARS) | (answer_length > MAX_ANSWER_CHARS), REJECT_TOO_LARGE)
    reject(question_length == 0, REJECT_MISSING_QUESTION)
    answer_given = np.array([a is not None for a in answers])
    reject((answer_length == 0) & ~answer_given, REJECT_MISSING_ANSWER)
    reject((answer_length == 0) & answer_given, REJECT_NON_ANSWER)  # "" or only whitespace
    if non_answers:
        folded = pc.utf8_lower(answer_array)
        listed = pc.is_in(folded, value_set=pa.array([text.lower() for text in non_answers], type=pa.large_string()))
        reject(pc.fill_null(listed, False).to_numpy(zero_copy_only=False), REJECT_NON_ANSWER)
    timestamps, bad_time = _parse_timestamps(raw_times)
    reject(bad_time, REJECT_BAD_TIMESTAMP)

    keep = reasons == None  # noqa: E711
    for index in np.flatnonzero(~keep):
        result.rejections[reasons[index]] += 1
        result.rejected.append(
            {
                "source_file": sources[index],
                "index": int(index),
                "reason": reasons[index],
                "record": orjson.dumps(records[index], default=str).decode(),  # scrubbed, then cut to size
                "_identity": identities[index],
            }
        )
    kept = pa.array(keep)
    question_array, counts_q = scrub_array(pc.filter(question_array, kept))
    answer_array, counts_a = scrub_array(pc.filter(answer_array, kept))
    for kind in PII_KINDS:
        result.pii[kind] += counts_q[kind] + counts_a[kind]

    columns = {
        "question": question_array.to_pylist(),
        "answer": answer_array.to_pylist(),
        "timestamp": [t for t, k in zip(timestamps, keep, strict=True) if k],
        "source_file": [s for s, k in zip(sources, keep, strict=True) if k],
        **{
            name: [v for v, k in zip(provenance[name], keep, strict=True) if k]
            for name in ("slice", "production_set", "row_id")
        },
    }
    if not columns["question"]:
        return
    hashes = pd.util.hash_array(
        np.array([f"{q}\x1f{a}" for q, a in zip(columns["question"], columns["answer"], strict=True)], dtype=object),
        categorize=False,
    )
    offset = len(result.lines)
    result.lines.extend(
        orjson.dumps(dict(zip(OUTPUT_COLUMNS, row, strict=True))) + b"\n"
        for row in zip(*(columns[name] for name in OUTPUT_COLUMNS), strict=True)
    )
    result.hashes = np.concatenate([result.hashes, hashes])
    result.questions = np.concatenate(
        [result.questions, alnum_fingerprints(pd.Series(columns["question"], dtype="string"))]
    )
    result.identities.extend(identity for identity, k in zip(identities, keep, strict=True) if k)
    stamps = [t for t in columns["timestamp"] if t is not None]
    if stamps:
        low, high = min(stamps), max(stamps)
        result.ts_min = low if result.ts_min is None else min(result.ts_min, low)
        result.ts_max = high if result.ts_max is None else max(result.ts_max, high)
    for index, (set_name, row_id) in enumerate(zip(columns["production_set"], columns["row_id"], strict=True)):
        if set_name is not None and row_id is not None:
            result.evaluation_rows.append((offset + index, str(set_name), str(row_id), columns["answer"][index]))


REJECT_UNREADABLE_FILE = "unreadable_file"


def unreadable_record_count(data: bytes) -> int:
    """How many records an unreadable file held, as far as can be told: its non-blank lines."""
    return sum(1 for line in data.splitlines() if line.strip())


def transform_files(
    files: list[tuple[str, bytes, bool]], non_answers: tuple[str, ...] = DEFAULT_NON_ANSWERS
) -> ChunkResult:
    """Transform a chunk of raw log files (key, content, is a piece of JSON Lines), in order.

    The records of a file that cannot be read at all count as rejected (``unreadable_file``), so
    ``records_in = records_out + quarantined + duplicates_removed + already_published`` holds with them.
    """
    result = ChunkResult()
    records: list[dict[str, Any]] = []
    sources: list[str] = []
    for key, data, is_piece in files:
        outcome = FileOutcome(key=key)
        result.files.append(outcome)
        try:
            parsed = parse_log_bytes(data, json_lines=is_piece)
        except UnparseableFile as error:
            outcome.unparseable_reason, outcome.detail = error.reason, error.detail
            outcome.records = unreadable_record_count(data)
            result.rejections[REJECT_UNREADABLE_FILE] += outcome.records
            continue
        outcome.records = parsed.count
        for index, reason, raw in parsed.rejected:
            result.rejections[reason] += 1
            result.rejected.append(
                {"source_file": key, "index": index, "reason": reason, "record": raw, "_identity": text_identity(raw)}
            )
        records.extend(parsed.records)
        sources.extend([key] * len(parsed.records))
    transform_records(records, sources, result, non_answers)
    _scrub_rejected(result)
    return result


QUARANTINED_RECORD_CHARS = 2000


def _scrub_rejected(result: ChunkResult) -> None:
    """A rejected record is stored (quarantine) and shown (dashboard): every string field of it is
    scrubbed like training text (a line that is not JSON, as text), before it is cut to size, so
    that no identifier is cut in half and missed."""
    for entry in result.rejected:
        entry["record"] = truncate_text(scrub_record_text(entry["record"]), QUARANTINED_RECORD_CHARS)


IDENTITY_DTYPE = "S16"  # 16-byte identities, compared as fixed-width byte strings


def sorted_identities(data: bytes) -> np.ndarray:
    """Identities stored back to back (16 bytes each) as a sorted array, for :func:`np.searchsorted`."""
    usable = len(data) - len(data) % 16  # a damaged tail is ignored, never misread
    return np.unique(np.frombuffer(data[:usable], dtype=IDENTITY_DTYPE))


@dataclass
class BatchAccumulator:
    """Merges chunk results in order. A record an earlier version already accounted for (same
    identity) is skipped as ``already_published``; of the rest, exact question/answer duplicates
    across the version are removed. The identities of every record this version accounts for are
    kept (16 bytes each) for the versions after it."""

    published: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=IDENTITY_DTYPE))  # sorted
    seen: set[int] = field(default_factory=set)
    identity_parts: list[np.ndarray] = field(default_factory=list)
    records_out: int = 0
    duplicates: int = 0
    already_published: int = 0
    fresh: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))

    def _earlier(self, identities: list[bytes]) -> np.ndarray:
        """Which of ``identities`` an earlier version accounted for (vectorized binary search)."""
        values = np.array(identities, dtype=IDENTITY_DTYPE)
        if not len(self.published) or not len(values):
            return np.zeros(len(values), dtype=bool)
        where = np.minimum(np.searchsorted(self.published, values), len(self.published) - 1)
        return self.published[where] == values

    def _account(self, identities: list[bytes], earlier: np.ndarray) -> None:
        new = np.array(identities, dtype=IDENTITY_DTYPE)[~earlier]
        if len(new):
            self.identity_parts.append(new)
        self.already_published += int(earlier.sum())

    def unique_lines(self, chunk: ChunkResult) -> tuple[list[bytes], list[int]]:
        """Lines of ``chunk`` not seen before, and their positions within the chunk.

        ``self.fresh`` is left holding which lines no earlier version accounted for (duplicates
        within this version included): the online evaluation scores all of them.
        """
        earlier = self._earlier(chunk.identities)
        self._account(chunk.identities, earlier)
        self.fresh = ~earlier
        lines, positions = [], []
        for position, (line, digest) in enumerate(zip(chunk.lines, chunk.hashes.tolist(), strict=True)):
            if earlier[position]:
                continue
            if digest in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(digest)
            lines.append(line)
            positions.append(position)
        self.records_out += len(lines)
        return lines, positions

    def new_rejected(self, chunk: ChunkResult) -> list[dict[str, Any]]:
        """Rejected records not accounted for before (a record that arrives again is not quarantined twice)."""
        identities = [entry.pop("_identity") for entry in chunk.rejected]
        earlier = self._earlier(identities)
        self._account(identities, earlier)
        return [entry for entry, done in zip(chunk.rejected, earlier.tolist(), strict=True) if not done]

    def identities_bytes(self) -> bytes:
        """This version's identities, sorted and unique, back to back."""
        if not self.identity_parts:
            return b""
        return np.unique(np.concatenate(self.identity_parts)).tobytes()


def dropped_fields(fields_seen: set[str]) -> list[str]:
    """Fields present in the logs that are metadata, not training data or provenance."""
    kept = ALIAS_NAMES | set(PROVENANCE_FIELDS) - {"status"} | set(FIELD_ALIASES)
    return sorted(fields_seen - kept)

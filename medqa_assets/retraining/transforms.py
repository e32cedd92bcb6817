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
from itertools import islice
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
SERIALIZE_BATCH_ROWS = 4096
IDENTITY_DTYPE = "S16"  # 16-byte identities, compared as fixed-width byte strings


@dataclass
class FileOutcome:
    key: str
    records: int = 0
    unparseable_reason: str | None = None
    detail: str | None = None


@dataclass
class ChunkResult:
    """What one chunk of files produced; merged by :class:`BatchAccumulator`.

    Compact on purpose: a chunk made in a worker process crosses to the parent as a few buffers
    (the output lines back to back, numpy arrays), not as one Python object per row.
    """

    output: bytes = b""  # the output lines, back to back
    line_ends: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # end of each line
    hashes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))  # question/answer per line
    questions: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))  # fingerprint per line
    identities: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=IDENTITY_DTYPE))  # per line
    rejected: list[dict[str, Any]] = field(default_factory=list)
    files: list[FileOutcome] = field(default_factory=list)
    rejections: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)
    fields_seen: set[str] = field(default_factory=set)
    evaluation_rows: list[tuple[int, str, str, str]] = field(default_factory=list)  # (line, set, row_id, answer)
    ts_min: str | None = None
    ts_max: str | None = None

    @property
    def lines(self) -> list[bytes]:
        """The output lines one by one (for inspection; the build writes ``output`` whole)."""
        starts = np.concatenate([[0], self.line_ends[:-1]]) if len(self.line_ends) else []
        return [self.output[start:end] for start, end in zip(starts, self.line_ends, strict=True)]


# ISO 8601 in UTC to the millisecond, as written to the output: the time of day from tables, the
# date formatted once per distinct day (by Arrow, as the rest of the text was before)
_TIMES_OF_DAY = [f"{h:02d}:{m:02d}:{s:02d}." for h in range(24) for m in range(60) for s in range(60)]
_MILLISECONDS = [f"{ms:03d}Z" for ms in range(1000)]
_KIND_OF_TYPE = {str: 2, int: 1, float: 1, type(None): 0}  # anything else (bool, list, dict) is invalid
_LATEST_SECONDS = 32_503_680_000  # year 3000


def _iso_seconds(millis: np.ndarray) -> list[str]:
    """Epoch milliseconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ``, as Arrow's strftime wrote them before."""
    seconds, milliseconds = np.divmod(millis, 1000)
    days, time_of_day = np.divmod(seconds, 86_400)
    distinct_days, day_index = np.unique(days, return_inverse=True)
    day_texts = pc.strftime(
        pa.array(distinct_days * 86_400, type=pa.int64()).cast(pa.timestamp("s", "UTC")), format="%Y-%m-%dT"
    ).to_pylist()
    times, fractions = _TIMES_OF_DAY, _MILLISECONDS
    return [
        day_texts[d] + times[t] + fractions[m]
        for d, t, m in zip(day_index.tolist(), time_of_day.tolist(), milliseconds.tolist(), strict=True)
    ]


# a time of day followed by a UTC offset or Z: the string names its own zone
_HAS_OFFSET = r"\d{2}:?\d{2}(?::?\d{2})?(?:[.,]\d+)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"


def _iso_text_seconds(texts: list[str]) -> np.ndarray:
    """Epoch seconds of ISO 8601 strings (NaN where unparseable); without an offset, UTC.

    Strings with and without an offset are parsed apart: pandas parsing them together gives a
    string without one the offset of the string before it.
    """
    seconds = np.full(len(texts), np.nan)
    with_offset = pc.fill_null(
        pc.match_substring_regex(pc.utf8_trim_whitespace(pa.array(texts, type=pa.large_string())), _HAS_OFFSET),
        False,
    ).to_numpy(zero_copy_only=False)
    for group in (with_offset, ~with_offset):
        positions = np.flatnonzero(group)
        if not len(positions):
            continue
        parsed = pd.to_datetime(
            pd.Series([texts[i] for i in positions] if len(positions) < len(texts) else texts),
            format="ISO8601",
            utc=True,
            errors="coerce",
        )
        stamps = parsed.to_numpy(dtype="datetime64[ns]").astype("int64") / 1e9
        stamps[parsed.isna().to_numpy()] = np.nan
        seconds[positions] = stamps
    return seconds


def _parse_timestamps(values: list[Any]) -> tuple[list[str | None], np.ndarray]:
    """ISO 8601 strings or epoch seconds -> ISO strings in UTC; and a mask of unparseable ones."""
    kind_of = _KIND_OF_TYPE
    kinds = np.array([kind_of.get(type(v), 3) for v in values], dtype=np.int8)
    seconds = np.full(len(values), np.nan)
    numeric = kinds == 1
    if numeric.all():
        seconds[:] = values
    elif numeric.any():
        seconds[numeric] = [values[i] for i in np.flatnonzero(numeric)]
    text = np.flatnonzero(kinds == 2)
    if len(text):
        seconds[text] = _iso_text_seconds([values[i] for i in text])
    valid = ~np.isnan(seconds) & (np.abs(np.nan_to_num(seconds)) < _LATEST_SECONDS)
    iso: list[str | None] = [None] * len(values)
    positions = np.flatnonzero(valid)
    if len(positions) == len(values):
        iso = _iso_seconds((seconds * 1000).astype("int64"))
    elif len(positions):
        for position, text_value in zip(
            positions.tolist(), _iso_seconds((seconds[positions] * 1000).astype("int64")), strict=True
        ):
            iso[position] = text_value
    return iso, (kinds == 3) | ((kinds != 0) & ~valid)


def _text_column(values: list[Any]) -> tuple[pa.Array, np.ndarray]:
    """Strings (and missing values) as an Arrow array; and which values were something else."""
    try:
        return pa.array(values, type=pa.large_string()), np.zeros(len(values), dtype=bool)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        not_text = np.array([not (isinstance(v, str) or v is None) for v in values])
        cleaned = [None if bad else v for v, bad in zip(values, not_text.tolist(), strict=True)]
        return pa.array(cleaned, type=pa.large_string()), not_text


def _failed_status(status: Any) -> bool:
    """A request that did not succeed: any status but 2xx (HTTP codes, or the simulator's "timeout", ...)."""
    if status is None:
        return False
    text = str(status).strip()
    return not (text.isdigit() and 200 <= int(text) < 300)


def _failed_statuses(statuses: list[Any]) -> np.ndarray:
    """:func:`_failed_status` of each, computed once per distinct value (there are few)."""
    verdicts: dict[tuple[type, Any], bool] = {}
    result = np.zeros(len(statuses), dtype=bool)
    for index, status in enumerate(statuses):
        try:
            verdict = verdicts[type(status), status]
        except KeyError:
            verdict = verdicts[type(status), status] = _failed_status(status)
        except TypeError:  # unhashable: a list or an object
            verdict = _failed_status(status)
        result[index] = verdict
    return result


def record_identities(records: list[Any]) -> list[bytes]:
    """Each record's identity: 16 bytes of BLAKE2b over its canonical JSON (a record that arrives
    again, in a cumulative copy, a rewritten array or a re-ingested file, has the same identity)."""
    dumps, blake2b, option = orjson.dumps, hashlib.blake2b, orjson.OPT_SORT_KEYS
    return [blake2b(dumps(record, option=option, default=str), digest_size=16).digest() for record in records]


def text_identity(raw: str) -> bytes:
    """The identity of an unreadable line (its text)."""
    return hashlib.blake2b(raw.encode("utf-8", "replace"), digest_size=16).digest()


def _char_lengths_over(values: pa.Array, limit: int) -> np.ndarray:
    """Which strings have more than ``limit`` characters: only those with more than ``limit`` bytes
    are counted (a character is at least one byte)."""
    byte_lengths = pc.fill_null(pc.binary_length(values), 0).to_numpy(zero_copy_only=False)
    over = byte_lengths > limit
    if over.any():
        positions = np.flatnonzero(over)
        over[positions] = pc.utf8_length(pc.take(values, pa.array(positions))).to_numpy(zero_copy_only=False) > limit
    return over


def _listed_non_answers(answers: pa.Array, non_answers: tuple[str, ...]) -> np.ndarray:
    """Answers equal to a listed non-answer, ignoring case. Only answers of a listed text's length
    in characters can be one (lower-casing maps character to character), so only those whose
    byte length allows it are folded."""
    listed = np.zeros(len(answers), dtype=bool)
    lengths = {len(text.lower()) for text in non_answers}
    byte_lengths = pc.fill_null(pc.binary_length(answers), -1).to_numpy(zero_copy_only=False)
    possible = np.zeros(len(answers), dtype=bool)
    for length in lengths:
        possible |= (byte_lengths >= length) & (byte_lengths <= 4 * length)
    if not possible.any():
        return listed
    positions = np.flatnonzero(possible)
    folded = pc.utf8_lower(pc.take(answers, pa.array(positions)))
    value_set = pa.array([text.lower() for text in non_answers], type=pa.large_string())
    listed[positions] = pc.fill_null(pc.is_in(folded, value_set=value_set), False).to_numpy(zero_copy_only=False)
    return listed


def _question_answer_hashes(questions: list[str], answers: list[str]) -> np.ndarray:
    """A 64-bit hash of each (question, answer) pair, for exact de-duplication."""
    pairs = np.array([f"{q}\x1f{a}" for q, a in zip(questions, answers, strict=True)], dtype=object)
    return pd.util.hash_array(pairs, categorize=False)


def transform_records(
    records: list[dict[str, Any]],
    sources: list[str],
    result: ChunkResult,
    non_answers: tuple[str, ...] = DEFAULT_NON_ANSWERS,
) -> None:
    """Validate, scrub and normalize parsed records into ``result`` (one call per chunk)."""
    if not records:
        return
    identities = record_identities(records)
    result.fields_seen.update(*records)
    raw_questions = [r.get("question") for r in records]
    raw_answers = [r["model_response"] if "model_response" in r else r.get("answer") for r in records]
    raw_times = [r["timestamp"] if "timestamp" in r else r.get("ts") for r in records]
    provenance = {name: [r.get(name) for r in records] for name in PROVENANCE_FIELDS}

    reasons = np.full(len(records), None, dtype=object)

    def reject(mask: np.ndarray, reason: str) -> None:
        reasons[(reasons == None) & mask] = reason  # noqa: E711 - elementwise comparison

    question_array, question_not_text = _text_column(raw_questions)
    answer_array, answer_not_text = _text_column(raw_answers)
    reject(question_not_text | answer_not_text, REJECT_NON_STRING)
    reject(_failed_statuses(provenance["status"]), REJECT_NON_ANSWER)

    question_array = collapse_whitespace(question_array)
    answer_array = collapse_whitespace(answer_array)
    reject(
        _char_lengths_over(question_array, MAX_QUESTION_CHARS) | _char_lengths_over(answer_array, MAX_ANSWER_CHARS),
        REJECT_TOO_LARGE,
    )
    question_empty = pc.fill_null(pc.binary_length(question_array), 0).to_numpy(zero_copy_only=False) == 0
    answer_empty = pc.fill_null(pc.binary_length(answer_array), 0).to_numpy(zero_copy_only=False) == 0
    reject(question_empty, REJECT_MISSING_QUESTION)
    answer_given = pc.is_valid(answer_array).to_numpy(zero_copy_only=False) & ~answer_not_text
    reject(answer_empty & ~answer_given, REJECT_MISSING_ANSWER)
    reject(answer_empty & answer_given, REJECT_NON_ANSWER)  # "" or only whitespace
    if non_answers:
        reject(_listed_non_answers(answer_array, non_answers), REJECT_NON_ANSWER)
    timestamps, bad_time = _parse_timestamps(raw_times)
    reject(bad_time, REJECT_BAD_TIMESTAMP)

    keep = reasons == None  # noqa: E711
    for index in np.flatnonzero(~keep).tolist():
        result.rejections[reasons[index]] += 1
        result.rejected.append(
            {
                "source_file": sources[index],
                "index": index,
                "reason": reasons[index],
                "record": orjson.dumps(records[index], default=str).decode(),  # scrubbed, then cut to size
                "_identity": identities[index],
            }
        )
    kept_positions = np.flatnonzero(keep)
    if not len(kept_positions):
        return
    everything_kept = len(kept_positions) == len(records)
    kept = pa.array(keep)
    question_array, counts_q = scrub_array(question_array if everything_kept else pc.filter(question_array, kept))
    answer_array, counts_a = scrub_array(answer_array if everything_kept else pc.filter(answer_array, kept))
    for kind in PII_KINDS:
        result.pii[kind] += counts_q[kind] + counts_a[kind]

    def kept_values(values: list[Any]) -> list[Any]:
        return values if everything_kept else [values[i] for i in kept_positions.tolist()]

    questions, answers = question_array.to_pylist(), answer_array.to_pylist()
    times = kept_values(timestamps)
    slices, sets, row_ids = (kept_values(provenance[name]) for name in ("slice", "production_set", "row_id"))
    rows = zip(questions, answers, times, kept_values(sources), slices, sets, row_ids, strict=True)
    parts, lengths = [], []
    dumps = orjson.dumps
    while True:  # in batches: each orjson result holds a 4 KB buffer until it is joined and freed
        lines = [
            dumps(
                {
                    "question": q,
                    "answer": a,
                    "timestamp": t,
                    "source_file": f,
                    "slice": s,
                    "production_set": p,
                    "row_id": r,
                }
            )
            for q, a, t, f, s, p, r in islice(rows, SERIALIZE_BATCH_ROWS)
        ]
        if not lines:
            break
        lengths += map(len, lines)
        parts += (b"\n".join(lines), b"\n")
    offset = len(result.line_ends)
    ends = np.cumsum(np.array(lengths, dtype=np.int64) + 1)
    previous_end = int(result.line_ends[-1]) if offset else 0
    result.output += b"".join(parts)
    result.line_ends = np.concatenate([result.line_ends, ends + previous_end])
    result.hashes = np.concatenate([result.hashes, _question_answer_hashes(questions, answers)])
    result.questions = np.concatenate([result.questions, alnum_fingerprints(question_array)])
    kept_identities = np.array(kept_values(identities), dtype=IDENTITY_DTYPE)
    result.identities = np.concatenate([result.identities, kept_identities])
    stamps = [t for t in times if t is not None]
    if stamps:
        low, high = min(stamps), max(stamps)
        result.ts_min = low if result.ts_min is None else min(result.ts_min, low)
        result.ts_max = high if result.ts_max is None else max(result.ts_max, high)
    for index, (set_name, row_id) in enumerate(zip(sets, row_ids, strict=True)):
        if set_name is not None and row_id is not None:
            result.evaluation_rows.append((offset + index, str(set_name), str(row_id), answers[index]))


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

    def _earlier(self, identities: np.ndarray) -> np.ndarray:
        """Which of ``identities`` an earlier version accounted for (vectorized binary search)."""
        if not len(self.published) or not len(identities):
            return np.zeros(len(identities), dtype=bool)
        where = np.minimum(np.searchsorted(self.published, identities), len(self.published) - 1)
        return self.published[where] == identities

    def _account(self, identities: np.ndarray, earlier: np.ndarray) -> None:
        new = identities[~earlier]
        if len(new):
            self.identity_parts.append(new)
        self.already_published += int(earlier.sum())

    def unique_positions(self, chunk: ChunkResult) -> np.ndarray:
        """Positions (within ``chunk``) of its lines not seen before, in order.

        ``self.fresh`` is left holding which lines no earlier version accounted for (duplicates
        within this version included): the online evaluation scores all of them.
        """
        earlier = self._earlier(chunk.identities)
        self._account(chunk.identities, earlier)
        self.fresh = ~earlier
        candidates = np.flatnonzero(~earlier)
        hashes = chunk.hashes[candidates]
        first = np.zeros(len(candidates), dtype=bool)  # first of its pair within the chunk ...
        first[np.unique(hashes, return_index=True)[1]] = True
        values = hashes.tolist()
        seen = self.seen
        first &= ~np.fromiter(map(seen.__contains__, values), dtype=bool, count=len(values))  # ... and ever
        seen.update(values)
        positions = candidates[first]
        self.duplicates += len(candidates) - len(positions)
        self.records_out += len(positions)
        return positions

    def new_rejected(self, chunk: ChunkResult) -> list[dict[str, Any]]:
        """Rejected records not accounted for before (a record that arrives again is not quarantined twice)."""
        identities = np.array([entry.pop("_identity") for entry in chunk.rejected], dtype=IDENTITY_DTYPE)
        earlier = self._earlier(identities)
        self._account(identities, earlier)
        return [entry for entry, done in zip(chunk.rejected, earlier.tolist(), strict=True) if not done]

    def identities_bytes(self) -> bytes:
        """This version's identities, sorted and unique, back to back."""
        if not self.identity_parts:
            return b""
        return np.unique(np.concatenate(self.identity_parts)).tobytes()


def selected_lines(chunk: ChunkResult, positions: np.ndarray) -> bytes:
    """The lines at ``positions`` (sorted) back to back: slices of the chunk's output, one per run
    of consecutive positions (most lines are kept, so runs are long)."""
    if len(positions) == len(chunk.line_ends):
        return chunk.output
    if not len(positions):
        return b""
    starts = np.concatenate([[0], chunk.line_ends[:-1]])
    breaks = np.flatnonzero(np.diff(positions) != 1)
    run_first = positions[np.concatenate([[0], breaks + 1])]
    run_last = positions[np.concatenate([breaks, [len(positions) - 1]])]
    output = chunk.output
    return b"".join(
        output[start:end]
        for start, end in zip(starts[run_first].tolist(), chunk.line_ends[run_last].tolist(), strict=True)
    )


def dropped_fields(fields_seen: set[str]) -> list[str]:
    """Fields present in the logs that are metadata, not training data or provenance."""
    kept = ALIAS_NAMES | set(PROVENANCE_FIELDS) - {"status"} | set(FIELD_ALIASES)
    return sorted(fields_seen - kept)

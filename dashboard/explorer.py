"""The record explorer's data half: which datasets the store holds, their columns in reading order,
filtering, paging and the download formats. Pure functions (DataFrame in, DataFrame or bytes out),
so a test can compare a download with the filter applied to the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import orjson
import pandas as pd

from dashboard.data import QUARANTINE_COLUMNS, RETRAINING_COLUMNS, SPLIT_COLUMNS, keyword_mask
from medqa_assets.storage import layout

# Columns with few enough distinct values to pick from; everything else is searched by keyword.
FACET_COLUMNS = ["question_type", "document_source", "production_set", "slice", "reason", "source_file"]
FACET_LABELS = {
    "question_type": "Question type",
    "document_source": "Source",
    "production_set": "Production set",
    "slice": "Slice",
    "reason": "Rejection reason",
    "source_file": "Log file",
}
MAX_FACET_VALUES = 500
KEYWORD_COLUMNS = ["question", "answer", "question_focus", "record"]
PAGE_SIZES = [25, 50, 100, 250]


@dataclass(frozen=True)
class Dataset:
    """One thing the explorer can show: a split, a production set, a version or its quarantine."""

    kind: str  # "split", "production set", "retraining version", "quarantine"
    name: str
    key: str
    columns: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.kind}: {self.name}"

    @property
    def file_stem(self) -> str:
        return f"{self.kind.replace(' ', '-')}-{self.name}"


def ordered(columns: list[str]) -> tuple[str, ...]:
    """Question and answer first, then the rest in their own order."""
    first = [c for c in ("question", "answer") if c in columns]
    return tuple(first + [c for c in columns if c not in first])


def datasets(keys: set[str], versions: list[str]) -> list[Dataset]:
    """What the store holds, in a reading order: splits, production sets, versions (newest first)."""
    found = [
        Dataset("split", name, key, ordered(SPLIT_COLUMNS)) for name, key in layout.SPLIT_KEYS.items() if key in keys
    ]
    sets = sorted(
        (k for k in keys if k.startswith(layout.PRODUCTION_SETS_PREFIX) and k.endswith(".json")),
        key=lambda k: (len(k), k),
    )
    found += [
        Dataset("production set", k.rsplit("/", 1)[-1].removesuffix(".json"), k, ordered(SPLIT_COLUMNS)) for k in sets
    ]
    for version in reversed(versions):
        key = layout.retraining_data_key(version)
        if key in keys:
            found.append(Dataset("retraining version", version, key, ordered([*RETRAINING_COLUMNS, "question_type"])))
        quarantine = f"{layout.quarantine_prefix(version)}records.jsonl"
        if quarantine in keys:
            found.append(
                Dataset("quarantine", version, quarantine, ordered(["question", "answer", *QUARANTINE_COLUMNS]))
            )
    return found


def with_question_and_answer(quarantined: pd.DataFrame) -> pd.DataFrame:
    """Quarantined records with the question and answer pulled out of the record (when it has them)."""

    def field_of(record: object, name: str) -> str | None:
        if not isinstance(record, str) or not record.startswith("{"):
            return None
        try:
            value = orjson.loads(record).get(name)
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    records = quarantined["record"]
    return quarantined.assign(
        question=[field_of(r, "question") for r in records],
        answer=[field_of(r, "answer") or field_of(r, "model_response") for r in records],
    ).astype({"question": "string", "answer": "string"})


@dataclass(frozen=True)
class RecordFilter:
    """What the user asked for: allowed values per facet column, and a keyword."""

    values: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)
    keyword: str = ""

    @classmethod
    def of(cls, values: dict[str, list[str]], keyword: str = "") -> RecordFilter:
        return cls(tuple((c, tuple(v)) for c, v in values.items() if v), keyword.strip())


def facets(frame: pd.DataFrame) -> dict[str, list[str]]:
    """The facet columns of ``frame`` that have at most MAX_FACET_VALUES values, with their values."""
    found = {}
    for column in FACET_COLUMNS:
        if column in frame.columns:
            values = frame[column].dropna().astype(str).unique()
            if 0 < len(values) <= MAX_FACET_VALUES:
                found[column] = sorted(values)
    return found


def filter_records(frame: pd.DataFrame, record_filter: RecordFilter) -> pd.DataFrame:
    """The rows whose facet values are all allowed and that contain the keyword (case-insensitive)."""
    mask = np.ones(len(frame), dtype=bool)
    for column, allowed in record_filter.values:
        if column in frame.columns:
            mask &= frame[column].astype("string").isin(allowed).fillna(False).to_numpy(dtype=bool)
    if record_filter.keyword:
        mask &= keyword_mask(frame, record_filter.keyword, KEYWORD_COLUMNS)
    return frame[mask].reset_index(drop=True)


def page_count(rows: int, size: int) -> int:
    return max(1, -(-rows // size))


def page_of(frame: pd.DataFrame, page: int, size: int) -> pd.DataFrame:
    """Rows of page ``page`` (1-based; clamped to the pages there are)."""
    page = min(max(1, page), page_count(len(frame), size))
    return frame.iloc[(page - 1) * size : page * size]


def to_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def to_jsonl(frame: pd.DataFrame) -> bytes:
    """One JSON object per row; missing values as null."""
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)

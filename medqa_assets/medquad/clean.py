"""MedQuAD cleaning: answered, whitespace-normalized, de-duplicated rows with content ids.

DataFrame in, DataFrame out (no Dagster, no storage), so the assets, the tests, the dashboard and
the benchmarks share it. The result does not depend on the order of the input rows: rows are put
in a canonical order before duplicates are dropped, so which copy of a duplicate survives, every
``row_id`` and every split file are the same whichever way the source lists them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from medqa_assets.text import collapse_whitespace

CLEAN_COLUMNS: list[str] = [
    "row_id",
    "question_id",
    "document_id",
    "document_source",
    "document_url",
    "question_type",
    "question_focus",
    "umls_cui",
    "synonyms",
    "question",
    "answer",
]
# The canonical row order: where the row comes from, then its content id as the tie-break.
CANONICAL_ORDER = ["document_source", "document_id", "question_id", "row_id"]

DROP_MISSING_QUESTION = "missing_question"
DROP_MISSING_ANSWER = "missing_answer"
DROP_QUESTION_TYPE = "question_type_not_allowed"
DROP_DUPLICATE = "duplicate_question_answer"
DROP_REASONS = (DROP_MISSING_QUESTION, DROP_MISSING_ANSWER, DROP_QUESTION_TYPE, DROP_DUPLICATE)


class EmptyResultError(ValueError):
    """Filtering left nothing to split; the message says which rule removed what."""


@dataclass
class CleanResult:
    frame: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())


def normalize_whitespace(values: pd.Series) -> pd.Series:
    """Collapse every run of white space to one space and trim; missing stays missing."""
    collapsed = collapse_whitespace(pa.array(values.astype("string"), type=pa.large_string(), from_pandas=True))
    return pd.Series(collapsed.to_numpy(zero_copy_only=False), index=values.index, dtype="string")


def _digest_series(values: pd.Series, salt: str = "") -> pd.Series:
    return pd.Series(
        [hashlib.blake2b(f"{salt}\x1f{v}".encode(), digest_size=8).hexdigest() for v in values],
        index=values.index,
        dtype="string",
    )


def row_ids(frame: pd.DataFrame) -> pd.Series:
    """A stable id per row from its content (MedQuAD's own question ids repeat across rows)."""
    parts = [frame[c].astype("string").fillna("") for c in ("document_source", "question_id", "question", "answer")]
    return _digest_series(parts[0] + "\x1f" + parts[1] + "\x1f" + parts[2] + "\x1f" + parts[3])


def canonical_order(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` sorted by :data:`CANONICAL_ORDER` (missing values first), index reset."""
    keys = pd.DataFrame({c: frame[c].astype("string").fillna("") for c in CANONICAL_ORDER}, index=frame.index)
    order = keys.sort_values(CANONICAL_ORDER, kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def clean_medquad(raw: pd.DataFrame, question_types: Sequence[str] | None = None) -> CleanResult:
    """Training-ready rows: answered, whitespace-normalized, optionally type-filtered, de-duplicated.

    Every dropped row is counted under one reason, in the order the rules apply. Of duplicate
    question/answer pairs the first in canonical order is kept, whatever the input order.
    """
    frame = raw.copy()
    frame["question"] = normalize_whitespace(frame["question"])
    frame["answer"] = normalize_whitespace(frame["answer"])
    frame["question_type"] = frame["question_type"].astype("string").str.strip().str.lower()
    dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)

    missing_question = frame["question"].isna() | frame["question"].eq("")
    dropped[DROP_MISSING_QUESTION] = int(missing_question.sum())
    frame = frame[~missing_question]
    missing_answer = frame["answer"].isna() | frame["answer"].eq("")
    dropped[DROP_MISSING_ANSWER] = int(missing_answer.sum())
    frame = frame[~missing_answer]

    if question_types:
        allowed = {t.strip().lower() for t in question_types}
        present = set(frame["question_type"].dropna().unique())
        if not allowed & present:
            raise EmptyResultError(
                f"the question-type allow-list {sorted(allowed)} matches no row: MedQuAD's question types are "
                f"words such as {', '.join(sorted(present)[:8])}, ...; fix medquad_clean's `question_types` config "
                "or leave it empty to keep every type"
            )
        not_allowed = ~frame["question_type"].isin(allowed)
        dropped[DROP_QUESTION_TYPE] = int(not_allowed.sum())
        frame = frame[~not_allowed]

    frame = canonical_order(frame.assign(row_id=row_ids(frame)))
    duplicate = frame.duplicated(subset=["question", "answer"], keep="first")
    dropped[DROP_DUPLICATE] = int(duplicate.sum())
    frame = frame[~duplicate]
    if frame.empty:
        raise EmptyResultError(
            f"cleaning left no rows (dropped: {dropped}); check MEDQA_MEDQUAD_SOURCE and medquad_clean's config"
        )
    return CleanResult(frame[CLEAN_COLUMNS].reset_index(drop=True).astype("string"), dropped)

"""Pure transformations of the offline half: clean MedQuAD, split it, cut production sets.

DataFrame in, DataFrame out: no Dagster and no storage here, so the same functions serve the
assets, the tests, the dashboard and the benchmarks.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medqa_assets.storage.layout import SPLIT_NAMES, production_set_name
from medqa_assets.text import collapse_whitespace

CLEAN_COLUMNS: list[str] = [
    "row_id",
    "question_id",
    "document_id",
    "document_source",
    "question_type",
    "question_focus",
    "synonyms",
    "question",
    "answer",
]
SPLIT_RATIOS: dict[str, float] = {"training": 0.6, "validation": 0.2, "evaluation": 0.2}
SPLIT_SALT = "medqa-split-v1"
PRODUCTION_SET_SALT = "medqa-production-set-v1"

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


def normalize_text_key(values: pd.Series) -> pd.Series:
    """A comparison key for leakage: lower case, letters and digits only, single spaces."""
    array = pa.array(values.astype("string").fillna(""), type=pa.large_string())
    lowered = pc.utf8_lower(array)
    simplified = pc.utf8_trim_whitespace(pc.replace_substring_regex(lowered, r"[^\p{L}\p{N}]+", " "))
    return pd.Series(simplified.to_numpy(zero_copy_only=False), index=values.index, dtype="string")


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


def clean_medquad(raw: pd.DataFrame, question_types: Sequence[str] | None = None) -> CleanResult:
    """Training-ready rows: answered, whitespace-normalized, optionally type-filtered, de-duplicated.

    Every dropped row is counted under one reason, in the order the rules apply.
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

    duplicate = frame.duplicated(subset=["question", "answer"], keep="first")
    dropped[DROP_DUPLICATE] = int(duplicate.sum())
    frame = frame[~duplicate]
    if frame.empty:
        raise EmptyResultError(
            f"cleaning left no rows (dropped: {dropped}); check MEDQA_MEDQUAD_SOURCE and medquad_clean's config"
        )
    frame = frame.assign(row_id=row_ids(frame))
    return CleanResult(frame[CLEAN_COLUMNS].reset_index(drop=True).astype("string"), dropped)


def leakage_groups(frame: pd.DataFrame) -> pd.Series:
    """A group label per row such that rows sharing a normalized question or focus share a group.

    Connected components of the graph linking each row to its question key and its focus key;
    the label is the smallest key in the component, so it does not depend on row order.
    """
    questions = "q:" + normalize_text_key(frame["question"])
    focus_text = normalize_text_key(frame["question_focus"])
    focuses = ("f:" + focus_text).where(focus_text.ne(""), questions)
    codes, uniques = pd.factorize(pd.concat([questions, focuses], ignore_index=True))
    n = len(frame)
    graph = coo_matrix((np.ones(n), (codes[:n], codes[n:])), shape=(len(uniques), len(uniques)))
    _, component = connected_components(graph, directed=False)
    node_names = pd.Series(uniques.astype(str))
    smallest_name = node_names.groupby(component).min()
    return pd.Series(smallest_name.loc[component[codes[:n]]].to_numpy(), index=frame.index, dtype="string")


def _unit_interval(keys: pd.Series, salt: str) -> np.ndarray:
    """A deterministic pseudo-random number in [0, 1) per key."""
    hashes = pd.util.hash_array(("" + salt + "\x1f" + keys.astype(str)).to_numpy(dtype=object), categorize=True)
    return hashes.astype(np.float64) / np.float64(2**64)


def split_dataset(
    clean: pd.DataFrame, ratios: dict[str, float] | None = None, groups: pd.Series | None = None
) -> dict[str, pd.DataFrame]:
    """Training/validation/evaluation by a hash of the leakage group: stable and leakage-free."""
    ratios = ratios or SPLIT_RATIOS
    groups = leakage_groups(clean) if groups is None else groups
    position = _unit_interval(groups, SPLIT_SALT)
    bounds = np.cumsum([ratios[name] for name in SPLIT_NAMES])
    bucket = np.searchsorted(bounds, position, side="right").clip(max=len(SPLIT_NAMES) - 1)
    return {name: clean[bucket == index].reset_index(drop=True) for index, name in enumerate(SPLIT_NAMES)}


def cut_production_sets(evaluation: pd.DataFrame, count: int) -> dict[str, pd.DataFrame]:
    """The evaluation split cut into ``count`` disjoint sets that together equal it (by row hash)."""
    if count < 1:
        raise ValueError("the number of production sets must be at least 1")
    position = _unit_interval(evaluation["row_id"], PRODUCTION_SET_SALT)
    number = np.minimum((position * count).astype(int), count - 1)
    return {production_set_name(i + 1): evaluation[number == i].reset_index(drop=True) for i in range(count)}


# -- checks (pure: they return findings, the Dagster layer turns them into check results) -----


def cross_split_leakage(splits: dict[str, pd.DataFrame]) -> dict[str, int]:
    """How many normalized questions and focuses appear in more than one split."""
    findings = {}
    for label, column in (("question", "question"), ("question_focus", "question_focus")):
        keys = pd.concat(
            [pd.DataFrame({"key": normalize_text_key(f[column]), "split": n}) for n, f in splits.items()],
            ignore_index=True,
        )
        keys = keys[keys["key"].ne("")]
        findings[label] = int(keys.groupby("key")["split"].nunique().gt(1).sum())
    return findings


def split_ratio_tolerance(group_count: int, ratios: dict[str, float] | None = None) -> float:
    """How far a split may stray from its target: whole groups move together, so the expected
    spread is that of a binomial over groups; allow three standard deviations, at least 2 points."""
    ratios = ratios or SPLIT_RATIOS
    widest = max(math.sqrt(r * (1 - r) / max(group_count, 1)) for r in ratios.values())
    return max(0.02, 3 * widest)


def split_ratio_deviation(counts: dict[str, int], ratios: dict[str, float] | None = None) -> dict[str, float]:
    """Observed fraction minus target fraction, per split."""
    ratios = ratios or SPLIT_RATIOS
    total = sum(counts.values()) or 1
    return {name: round(counts[name] / total - ratios[name], 4) for name in ratios}


def production_sets_coverage(evaluation: pd.DataFrame, sets: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Rows of the evaluation split missing from the sets, rows in several sets, rows not from it."""
    evaluation_ids = set(evaluation["row_id"])
    counts = pd.concat([s["row_id"] for s in sets.values()], ignore_index=True).value_counts()
    in_sets = set(counts.index)
    return {
        "missing": len(evaluation_ids - in_sets),
        "in_several_sets": int((counts > 1).sum()),
        "not_in_evaluation": len(in_sets - evaluation_ids),
    }

"""The evaluation of a retraining version as it is built, and the untouched evaluation set: the I/O
around :mod:`~medqa_assets.evaluation.online` and :mod:`~medqa_assets.evaluation.contamination`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medqa_assets.evaluation.contamination import contamination_counts, untouched_evaluation
from medqa_assets.evaluation.online import answer_quality
from medqa_assets.retraining.control import published_versions
from medqa_assets.storage.layout import (
    SPLIT_KEYS,
    question_fingerprints_key,
    untouched_evaluation_key,
)
from medqa_assets.storage.object_store import ObjectStore, frame_to_jsonl, jsonl_to_frame


@dataclass
class VersionEvaluation:
    answer_quality: dict[str, Any] | None
    contamination: dict[str, Any] | None


SPLIT_COLUMNS_USED = ("row_id", "question", "question_type", "answer")


def read_splits(store: ObjectStore, log: Callable[[str], None] = print) -> tuple[dict[str, pd.DataFrame], bytes | None]:
    """The offline splits that exist and hold the columns the evaluation uses, and the evaluation
    split's bytes (for its digest). A split written by something else is left out, with one line:
    it must not fail the version it would only have annotated."""
    splits: dict[str, pd.DataFrame] = {}
    evaluation_bytes = None
    for name, key in SPLIT_KEYS.items():
        try:
            data = store.read_bytes(key)
        except FileNotFoundError:
            continue
        try:
            frame = jsonl_to_frame(data)
        except ValueError as error:
            log(f"split {key} is not JSON Lines ({error}): left out of the evaluation; re-run offline_etl")
            continue
        missing = [column for column in SPLIT_COLUMNS_USED if column not in frame.columns]
        if missing:
            log(f"split {key} lacks {', '.join(missing)}: left out of the evaluation; re-run offline_etl")
            continue
        splits[name] = frame
        if name == "evaluation":
            evaluation_bytes = data
    return splits, evaluation_bytes


def _with_references(records: pd.DataFrame, evaluation: pd.DataFrame | None) -> pd.DataFrame:
    """The records whose ``row_id`` is an evaluation row (the production sets are cut from it),
    with its answer as ``reference`` and its question type."""
    if evaluation is None:
        return records.iloc[0:0].assign(question_type=None, reference=None)
    references = evaluation[["row_id", "question_type", "answer"]].rename(columns={"answer": "reference"})
    return records.merge(references.astype({"row_id": str}), on="row_id", how="inner")


def touched_questions(store: ObjectStore, exclude: str | None = None) -> np.ndarray:
    """The question fingerprints of every published version (but ``exclude``), sorted and unique."""
    parts = []
    for name in published_versions(store):
        if name == exclude:
            continue
        try:
            parts.append(np.frombuffer(store.read_bytes(question_fingerprints_key(name)), dtype=np.uint64))
        except FileNotFoundError:
            continue
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)


def evaluate_version(
    store: ObjectStore,
    version: str,
    evaluation_rows: list[tuple[str, str, str]],
    questions: np.ndarray,
    row_ids: list[str],
    log: Callable[[str], None] = print,
) -> VersionEvaluation:
    """Score the version's answers, count its contamination, write its question fingerprints and
    the evaluation rows that no published version (this one included) has touched."""
    store.write_bytes(question_fingerprints_key(version), np.unique(questions).tobytes())
    splits, evaluation_bytes = read_splits(store, log)
    records = pd.DataFrame(evaluation_rows, columns=["production_set", "row_id", "answer"])
    records = _with_references(records, splits.get("evaluation"))
    training = splits.get("training")
    quality = answer_quality(records, training[["question_type", "answer"]] if training is not None else None)
    if not splits:
        log(f"{version}: no offline splits in the store: contamination not counted (run offline_etl)")
        return VersionEvaluation(quality, None)
    contamination = contamination_counts(questions, pd.Series(row_ids, dtype="object"), splits)
    if evaluation_bytes is not None:
        evaluation = splits["evaluation"]
        touched = np.union1d(touched_questions(store, exclude=version), np.unique(questions))
        untouched = untouched_evaluation(evaluation, touched)
        key = untouched_evaluation_key(version)
        data = frame_to_jsonl(untouched)
        store.write_bytes(key, data)
        contamination["untouched_evaluation"] = {
            "key": key,
            "rows": len(untouched),
            "evaluation_rows": len(evaluation),
            "sha256": hashlib.sha256(data).hexdigest(),
            "evaluation_sha256": hashlib.sha256(evaluation_bytes).hexdigest(),
        }
        log(f"{version}: {len(untouched)} of {len(evaluation)} evaluation rows are in no published version ({key})")
    return VersionEvaluation(quality, contamination)


def current_untouched_evaluation(store: ObjectStore) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The evaluation rows whose question is in no published version, computed now."""
    evaluation = store.read_jsonl(SPLIT_KEYS["evaluation"])
    versions = published_versions(store)
    untouched = untouched_evaluation(evaluation, touched_questions(store))
    return untouched, {"versions": versions, "rows": len(untouched), "evaluation_rows": len(evaluation)}

"""Contamination: which offline-split questions a retraining version holds.

Production traffic is replayed from the evaluation split, so a retraining version built from it
holds evaluation questions paired with the model's own answers. A team that retrains on it and
then scores on ``testing.json`` trains on its test questions. Each version therefore counts its
rows whose question is in each offline split (by normalized question, and by the ``row_id`` the
replay carried), and :func:`untouched_evaluation` gives the evaluation rows that no published
version has touched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medqa_assets.text import alnum_fingerprints


def contamination_counts(
    version_questions: np.ndarray, version_row_ids: pd.Series, splits: dict[str, pd.DataFrame]
) -> dict[str, Any]:
    """Per offline split: the version's rows whose question (or row id) is one of the split's.

    ``version_questions``: the fingerprint of every row of the version; ``version_row_ids``: the
    row id each row's record carried, if any.
    """
    row_ids = version_row_ids.dropna().astype(str)
    counts: dict[str, Any] = {"rows": len(version_questions), "by_split": {}}
    for name, frame in splits.items():
        split_questions = alnum_fingerprints(frame["question"])
        hits = np.isin(version_questions, split_questions)
        counts["by_split"][name] = {
            "rows_with_split_question": int(hits.sum()),
            "distinct_split_questions": int(len(np.unique(version_questions[hits]))),
            "split_questions": int(len(np.unique(split_questions))),
            "rows_with_split_row_id": int(row_ids.isin(set(frame["row_id"].astype(str))).sum()),
        }
    return counts


def untouched_evaluation(evaluation: pd.DataFrame, touched: np.ndarray) -> pd.DataFrame:
    """The evaluation rows whose question is in none of the ``touched`` question fingerprints."""
    return evaluation[~np.isin(alnum_fingerprints(evaluation["question"]), touched)].reset_index(drop=True)

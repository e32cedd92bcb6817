"""Online evaluation: how close the model's answers are to the held-out reference answers."""

from __future__ import annotations

import random
from functools import cache
from typing import Any

import numpy as np

METRIC = "rouge1_f1"
MAX_SCORED = 1000  # score a seeded sample of large batches


@cache
def _scorer() -> object:
    from rouge_score import rouge_scorer  # imports NLTK (seconds): only when there is something to score

    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)


def answer_quality(pairs: list[tuple[str, str]], sample: int = MAX_SCORED, seed: int = 0) -> dict[str, Any] | None:
    """ROUGE-1 F1 (unigram overlap; ROUGE-L is quadratic in length) of (model, reference) answer pairs."""
    if not pairs:
        return None
    scored = pairs if len(pairs) <= sample else random.Random(seed).sample(pairs, sample)
    scores = np.array([_scorer().score(reference, answer)["rouge1"].fmeasure for answer, reference in scored])
    counts, bins = np.histogram(scores, bins=10, range=(0.0, 1.0))
    return {
        "metric": METRIC,
        "library": "rouge-score",
        "n": len(scored),
        "n_with_reference": len(pairs),
        "mean": round(float(scores.mean()), 4),
        "p10": round(float(np.quantile(scores, 0.1)), 4),
        "p50": round(float(np.quantile(scores, 0.5)), 4),
        "p90": round(float(np.quantile(scores, 0.9)), 4),
        "histogram": {"bins": [round(b, 2) for b in bins.tolist()], "counts": counts.tolist()},
    }

"""Online evaluation of a retraining version: the model's answers against the held-out references.

A mean score alone cannot tell a model from chance on MedQuAD (a random answer of the same
question type already shares most of its wording with the reference), so every metric is
reported next to a *random baseline* (for each record, a training answer of the same question
type, picked by a hash of the row id: the same every run) with bootstrap 95% intervals for the
model, the baseline and the paired lift over it. Every answered record that has a reference is
scored, duplicates included.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from medqa_assets.evaluation.metrics import BLIND_SPOTS, METRICS, score_pairs

PRIMARY_METRIC = "rougeL_f1"
MAX_SCORED = 5000  # records beyond this are sampled (seeded); the count of all is reported
BOOTSTRAP_RESAMPLES = 2000
BASELINE_DRAWS = 5
BASELINE = (
    f"a random training answer of the same question type: the mean score of {BASELINE_DRAWS} such answers "
    "per record, picked by a hash of the row id"
)


def baseline_answers(records: pd.DataFrame, training: pd.DataFrame, salt: str = "0") -> list[str]:
    """For each record, a training answer of its question type (any type if training has none).

    One draw per record is a noisy yardstick (measured: one lucky draw put the baseline 0.012
    ROUGE-L above every other random answerer), so :func:`answer_quality` averages several draws.
    """
    pools = {t: group.tolist() for t, group in training.groupby("question_type")["answer"]}
    everything = training["answer"].tolist()
    picked = []
    for row_id, question_type in zip(records["row_id"], records["question_type"], strict=True):
        pool = pools.get(question_type) or everything
        digest = hashlib.blake2b(f"medqa-baseline-v1\x1f{salt}\x1f{row_id}".encode(), digest_size=8).digest()
        picked.append(pool[int.from_bytes(digest, "big") % len(pool)])
    return picked


def bootstrap_interval(values: np.ndarray, seed: int = 0) -> list[float]:
    """Percentile bootstrap 95% interval of the mean (scipy.stats.bootstrap)."""
    from scipy.stats import bootstrap

    if len(values) < 2 or np.all(values == values[0]):
        mean = float(values.mean()) if len(values) else float("nan")
        return [round(mean, 4), round(mean, 4)]
    result = bootstrap(
        (values,),
        np.mean,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return [round(float(result.confidence_interval.low), 4), round(float(result.confidence_interval.high), 4)]


def answer_quality(
    records: pd.DataFrame, training: pd.DataFrame | None, sample: int = MAX_SCORED, seed: int = 0
) -> dict[str, Any] | None:
    """Metrics of the model's answers against the references, and against a random baseline.

    ``records``: one row per answered record with a reference: ``row_id``, ``question_type``,
    ``answer`` (the model's) and ``reference``. ``training``: ``question_type`` and ``answer`` of
    the training split, the baseline's pool (None: no baseline).
    """
    if records.empty:
        return None
    total = len(records)
    scored = records if total <= sample else records.sample(sample, random_state=seed)
    # the same (row, answer) replayed many times is scored once and counted as often as it occurred
    distinct = scored.groupby(["row_id", "answer"], sort=True, as_index=False).agg(
        question_type=("question_type", "first"), reference=("reference", "first"), weight=("row_id", "size")
    )
    weights = distinct["weight"].to_numpy()
    references = distinct["reference"].tolist()
    model = {k: np.repeat(v, weights) for k, v in score_pairs(distinct["answer"].tolist(), references).items()}
    baseline = None
    if training is not None and len(training):
        chance = [a for draw in range(BASELINE_DRAWS) for a in baseline_answers(distinct, training, f"{draw}")]
        scores = score_pairs(chance, references * BASELINE_DRAWS)
        baseline = {
            k: np.repeat(v.reshape(BASELINE_DRAWS, len(distinct)).mean(axis=0), weights) for k, v in scores.items()
        }
    metrics: dict[str, Any] = {}
    for index, name in enumerate(METRICS):
        values = model[name]
        entry: dict[str, Any] = {
            "mean": round(float(values.mean()), 4),
            "ci95": bootstrap_interval(values, seed + index),
        }
        if baseline is not None:
            lift = values - baseline[name]
            lift_ci = bootstrap_interval(lift, seed + 10 + index)
            entry |= {
                "baseline_mean": round(float(baseline[name].mean()), 4),
                "baseline_ci95": bootstrap_interval(baseline[name], seed + 20 + index),
                "lift": round(float(lift.mean()), 4),
                "lift_ci95": lift_ci,
                "lift_excludes_zero": lift_ci[0] > 0 or lift_ci[1] < 0,
            }
        metrics[name] = entry
    primary = model[PRIMARY_METRIC]
    counts, bins = np.histogram(primary, bins=10, range=(0.0, 1.0))
    return {
        "metric": PRIMARY_METRIC,
        "library": "rouge-score tokenizer and Porter stemmer with rapidfuzz LCS; SQuAD token F1; sacrebleu chrF",
        "n": len(primary),
        "n_with_reference": total,
        "pairs_scored": len(primary),
        "distinct_pairs": len(distinct),
        "mean": metrics[PRIMARY_METRIC]["mean"],
        "p10": round(float(np.quantile(primary, 0.1)), 4),
        "p50": round(float(np.quantile(primary, 0.5)), 4),
        "p90": round(float(np.quantile(primary, 0.9)), 4),
        "histogram": {"bins": [round(b, 2) for b in bins.tolist()], "counts": counts.tolist()},
        "metrics": metrics,
        "exact_reference_match_rate": round(float(model["exact"].mean()), 4),
        "exact_reference_matches": int(model["exact"].sum()),
        "baseline": BASELINE if baseline is not None else None,
        "blind_spots": BLIND_SPOTS,
    }

"""Drift verdicts at the sample sizes production traffic comes in: random held-out questions are
not drift (at most 5% false alarms over repeated samples), topically skewed traffic is."""

from __future__ import annotations

import pandas as pd
import pytest

from dashboard import drift
from medqa_assets.medquad.clean import clean_medquad
from medqa_assets.medquad.sources import BUNDLED_FILE, bundled_dir
from medqa_assets.splitting.transforms import split_dataset

SAMPLES, SAMPLE_ROWS = 60, 200


@pytest.fixture(scope="module")
def splits() -> dict[str, pd.DataFrame]:
    return split_dataset(clean_medquad(pd.read_parquet(bundled_dir() / BUNDLED_FILE)).frame).splits


def flagged(report: dict) -> list[str]:
    summary = report["summary"]
    return list(summary.loc[summary["level"].isin(["moderate", "strong"]), "feature"])


def test_random_validation_samples_raise_at_most_five_percent_false_alarms(splits) -> None:
    """Each sample of 200 validation rows is new MedQuAD traffic; the evaluation split calibrates."""
    training, validation, evaluation = splits["training"], splits["validation"], splits["evaluation"]
    alarms = []
    for seed in range(SAMPLES):
        report = drift.drift_report(training, validation.sample(SAMPLE_ROWS, random_state=seed), evaluation)
        assert len(report["summary"]) == 4 and (report["summary"]["production_rows"] == SAMPLE_ROWS).all()
        alarms.append(flagged(report))
    rate = sum(bool(a) for a in alarms) / SAMPLES
    assert rate <= 0.05, (rate, [a for a in alarms if a])


def test_skewed_traffic_is_flagged(splits) -> None:
    """The first 200 rows of a split (its stored order groups sources and topics) are drift."""
    training, validation, evaluation = splits["training"], splits["validation"], splits["evaluation"]
    skewed = ((validation.head(SAMPLE_ROWS), evaluation), (evaluation.head(SAMPLE_ROWS), validation))
    for production, calibration in skewed:
        report = drift.drift_report(training, production, calibration)
        assert {"Question terms", "Question type"} <= set(flagged(report)), report["summary"]
        terms = report["summary"].set_index("feature").loc["Question terms"]
        assert terms["value"] > 2 * terms["chance_level"] and terms["p_value"] < terms["threshold"]


def test_without_held_out_rows_training_samples_calibrate(splits) -> None:
    """Production drawn from training itself is never drift, whatever the calibration."""
    training = splits["training"]
    report = drift.drift_report(training, training.sample(SAMPLE_ROWS, random_state=1))
    assert report["calibration"] == "training" and flagged(report) == []

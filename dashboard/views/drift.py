"""Tab "Drift": production questions of a version against the training split."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import data
from dashboard import drift as stats
from dashboard.views.common import (
    binned_figure,
    cached,
    chart,
    follow_newest,
    missing,
    retraining_commands,
    sample_note,
    section,
)
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

# About 5,000 records of a large version: enough for every test here, a third of the reading.
DRIFT_SAMPLE_BYTES = 8 * 1024 * 1024
SPLIT_READ_COLUMNS = ["question", "answer", "question_type", "row_id"]
LEVEL_BADGES = {
    "none": ":green-badge[no drift]",
    "moderate": ":orange-badge[moderate drift]",
    "strong": ":red-badge[strong drift]",
    "unknown": ":gray-badge[not enough data]",
}


def read_inputs(store: ObjectStore, production_key: str) -> dict[str, Any] | None:
    """Training, held-out and production rows (typed via row_id), or None if one is gone."""
    splits = {name: data.read_jsonl(store, key, SPLIT_READ_COLUMNS) for name, key in layout.SPLIT_KEYS.items()}
    production = data.read_jsonl(store, production_key, data.RETRAINING_READ_COLUMNS, sample_bytes=DRIFT_SAMPLE_BYTES)
    training = splits["training"]
    if training is None or production is None:
        return None
    types = pd.concat(
        [table.frame[["row_id", "question_type"]] for table in splits.values() if table is not None], ignore_index=True
    )
    frame = production.frame.assign(question_type=data.attach_question_types(production.frame, types))
    held_out = [splits[name].frame for name in ("validation", "evaluation") if splits.get(name) is not None]
    return {
        "training": training.frame,
        "production": frame,
        "held_out": pd.concat(held_out, ignore_index=True) if held_out else None,
        "info": production.info(),
    }


def render(store: ObjectStore) -> None:
    training_key = layout.SPLIT_KEYS["training"]
    split_tokens = {key: data.token_of(store, key) for key in layout.SPLIT_KEYS.values()}
    versions = data.list_versions(store)
    if split_tokens[training_key] is None:
        missing("No training split to compare against", [data.OFFLINE_COMMAND])
    if not versions.complete:
        missing("No retraining data versions yet, so no production traffic to compare", retraining_commands())
    if split_tokens[training_key] is None or not versions.complete:
        return

    follow_newest("drift_version", versions.newest)
    version = st.selectbox(
        "Production data version",
        list(reversed(versions.complete)),
        index=0,
        key="drift_version",
        format_func=lambda v: f"{v} (newest)" if v == versions.newest else v,
    )
    with section(f"Drift of {version} against the training split"):
        production_key = layout.retraining_data_key(version)
        report_key = (store.url, tuple(split_tokens.values()), production_key, versions.tokens.get(production_key, ""))
        inputs = cached("drift:inputs", report_key, lambda: read_inputs(store, production_key))
        if inputs is None:
            st.info("The training split or the version's data disappeared from the store; reload the page.")
            return
        if inputs["info"].rows == 0:
            st.info(f"{production_key} holds no records.")
            return
        # the verdicts go first on the page but need the tests; the length chart needs only word
        # counts, so it is drawn first, below the place kept for the verdicts
        verdicts = st.container()
        lengths = cached(
            "drift:lengths",
            report_key,
            lambda: stats.length_profile(inputs["training"], inputs["production"], inputs["held_out"]),
        )
        _length_chart(lengths, report_key)
        report = cached(
            "drift:report",
            report_key,
            lambda: stats.drift_report(inputs["training"], inputs["production"], inputs["held_out"], lengths=lengths),
        )
        with verdicts:
            _summary(report, version)
        _charts(report, report_key)
        sample_note(inputs["info"], f"Production data of {version}")


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The per-feature statistics, formatted for reading."""
    return pd.DataFrame(
        {
            "feature": summary["feature"],
            "statistic": summary["statistic"],
            "value": summary["value"].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}"),
            "same-size held-out sample (median)": summary["chance_level"].map(
                lambda v: "–" if pd.isna(v) else f"{v:.3f}"
            ),
            "p-value": summary["p_value"].map(lambda v: "–" if pd.isna(v) else f"{v:.2g}"),
            "drift below p": summary["threshold"].map(lambda v: f"{v:.3g}"),
            "training rows": summary["training_rows"].map("{:,}".format),
            "production rows": summary["production_rows"].map("{:,}".format),
            "test": summary["test"],
        }
    ).set_index("feature")


def _summary(report: dict[str, Any], version: str) -> None:
    st.subheader(f"Summary: {version} against the training split")
    summary = report["summary"]
    for row in summary.itertuples():
        st.markdown(f"{LEVEL_BADGES.get(row.level, '')} **{row.feature}** — {row.verdict}")
    st.table(summary_table(summary))
    calibration = (
        "random samples of as many held-out MedQuAD rows (validation and evaluation: new questions, not drift)"
        if report.get("calibration") == "held-out splits"
        else "random samples of as many training rows (no held-out split in the store: sampling noise only)"
    )
    st.caption(
        f"Each distance to training is compared with {stats.DRAWS} {calibration}; the p-value is the share "
        "of them at least as far. A feature drifts when p is below 0.05 divided by the number of features "
        f"(here {summary['threshold'].iloc[0]:.3g}); how much is the distance above the samples' median "
        f"(moderate from {stats.JS_MODERATE:g}, strong from {stats.JS_STRONG:g})."
    )
    if report["question_types"] is None:
        st.caption(
            f"No question-type comparison: only {report['question_type_coverage']:.0%} of production rows could be "
            "traced to a MedQuAD row (row_id) with a question type."
        )


def _terms_figure(terms: pd.DataFrame) -> Any:
    top = terms.head(20).iloc[::-1]
    return px.bar(
        top,
        x="difference_pp",
        y="term",
        orientation="h",
        hover_data={"training": ":.1%", "production": ":.1%"},
        labels={"difference_pp": "production − training (percentage points of questions)", "term": ""},
        title="Top-term frequency differences",
    )


def _types_figure(types: pd.DataFrame) -> Any:
    long = types.melt(
        id_vars=["question_type"], value_vars=["training", "production"], var_name="data", value_name="share"
    )
    fig = px.bar(
        long,
        x="question_type",
        y="share",
        color="data",
        barmode="group",
        title="question_type: training vs production",
        labels={"data": ""},
    )
    fig.update_yaxes(tickformat=".0%")
    return fig


def _length_chart(lengths: dict[str, Any], key: tuple) -> None:
    chart(
        "drift_lengths",
        key,
        lambda: binned_figure(
            {
                "question (production question vs training question)": lengths["question_lengths"],
                "answer (chatbot answer vs reference answer)": lengths["answer_lengths"],
            },
            "Length distributions, training vs production",
            "words",
            overlay=True,
        ),
        height=320,
    )


def _charts(report: dict[str, Any], key: tuple) -> None:
    left, right = st.columns(2)
    with left:
        chart("drift_terms", key, lambda: _terms_figure(report["terms"]), height=460)
    with right:
        if report["question_types"] is not None:
            chart("drift_types", key, lambda: _types_figure(report["question_types"]), height=460)
        else:
            st.info("Question types of production traffic are unknown (no row_id linking it to MedQuAD rows).")

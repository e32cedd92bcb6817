"""Drift of production traffic against the training split: pure functions, DataFrames in, dicts/DataFrames out.

The statistics come from scipy: the two-sample Kolmogorov–Smirnov test for lengths
(``scipy.stats.ks_2samp``), the Jensen–Shannon distance (``scipy.spatial.distance.jensenshannon``,
base 2, so 0 = identical and 1 = disjoint) and the chi-square test of independence
(``scipy.stats.chi2_contingency``) for categorical features (question types, question terms).

With thousands of rows even tiny differences are "significant", so the verdict is based on the
effect size (KS statistic D, JS distance), and a p-value above ALPHA always means "no drift".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats
from scipy.spatial.distance import jensenshannon

from dashboard.data import histogram, word_counts
from medqa_assets.text import normalize_text_key

ALPHA = 0.05
MIN_ROWS = 20
KS_MODERATE, KS_STRONG = 0.10, 0.25
JS_MODERATE, JS_STRONG = 0.10, 0.25
QUESTION_TYPE_MIN_COVERAGE = 0.5

LEVELS = ("none", "moderate", "strong", "unknown")
SUMMARY_COLUMNS = [
    "feature",
    "test",
    "statistic",
    "value",
    "p_value",
    "training_rows",
    "production_rows",
    "level",
    "verdict",
]

# Function words and the question templates' own words: they say nothing about the topic.
_STOPWORD_TEXT = """
a about after all also am an and any are as at be been before being between both but by can could
did do does doing during each for from get gets getting had has have having he her here hers him his
how i if in into is it its just me more most my no nor not now of off on once only or other our out
over own same she should so some such than that the their them then there these they this those
through to too under until up very was we were what when where which while who whom why will with
would you your yours
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def _level(value: float, p_value: float | None, moderate: float, strong: float) -> str:
    if p_value is not None and p_value >= ALPHA:
        return "none"
    if value >= strong:
        return "strong"
    if value >= moderate:
        return "moderate"
    return "none"


def _verdict(level: str, what: str, detail: str) -> str:
    text = {
        "none": f"No meaningful drift: {what} look like the training data",
        "moderate": f"Moderate drift: {what} differ somewhat from the training data; worth a look",
        "strong": f"Strong drift: {what} differ clearly from the training data; check before retraining",
    }[level]
    return f"{text} ({detail})." if detail else f"{text}."


def _finding(
    feature: str,
    test: str,
    statistic: str,
    value: float | None,
    p_value: float | None,
    n_ref: int,
    n_cur: int,
    level: str,
    verdict: str,
) -> dict[str, Any]:
    """One row of the drift summary table."""
    return {
        "feature": feature,
        "test": test,
        "statistic": statistic,
        "value": value,
        "p_value": p_value,
        "training_rows": n_ref,
        "production_rows": n_cur,
        "level": level,
        "verdict": verdict,
    }


def _too_few(feature: str, test: str, statistic: str, n_ref: int, n_cur: int) -> dict[str, Any]:
    verdict = f"Too few rows to judge (training {n_ref}, production {n_cur}; need at least {MIN_ROWS} each)."
    return _finding(feature, test, statistic, None, None, n_ref, n_cur, "unknown", verdict)


def numeric_drift(feature: str, what: str, reference: np.ndarray, current: np.ndarray) -> dict[str, Any]:
    """KS test of two samples of a numeric feature, with a plain-language verdict."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    test, statistic = "Kolmogorov–Smirnov (scipy.stats.ks_2samp)", "KS D"
    if len(ref) < MIN_ROWS or len(cur) < MIN_ROWS:
        return _too_few(feature, test, statistic, len(ref), len(cur))
    result = stats.ks_2samp(ref, cur)
    value, p_value = float(result.statistic), float(result.pvalue)
    level = _level(value, p_value, KS_MODERATE, KS_STRONG)
    medians = f"median {np.median(cur):g} in production vs {np.median(ref):g} in training"
    detail = f"{medians}, D={value:.3f}, p={p_value:.2g}"
    verdict = _verdict(level, what, detail)
    return _finding(feature, test, statistic, value, p_value, len(ref), len(cur), level, verdict)


def _distribution_drift(
    feature: str, what: str, ref_counts: pd.Series, cur_counts: pd.Series, n_ref: int, n_cur: int
) -> dict[str, Any]:
    test, statistic = "Jensen–Shannon distance (scipy) + chi-square (scipy.stats.chi2_contingency)", "JS distance"
    if n_ref < MIN_ROWS or n_cur < MIN_ROWS or ref_counts.sum() == 0 or cur_counts.sum() == 0:
        return _too_few(feature, test, statistic, n_ref, n_cur)
    categories = ref_counts.index.union(cur_counts.index)
    ref = ref_counts.reindex(categories, fill_value=0).to_numpy(dtype=float)
    cur = cur_counts.reindex(categories, fill_value=0).to_numpy(dtype=float)
    seen = (ref + cur) > 0  # a category absent from both sides carries no information (and breaks chi-square)
    ref, cur, categories = ref[seen], cur[seen], categories[seen]
    value = float(jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2))
    p_value = float(stats.chi2_contingency(np.vstack([ref, cur])).pvalue) if len(categories) > 1 else 1.0
    level = _level(value, p_value, JS_MODERATE, JS_STRONG)
    verdict = _verdict(level, what, f"JS distance {value:.3f} on a 0–1 scale, chi-square p={p_value:.2g}")
    return _finding(feature, test, statistic, value, p_value, n_ref, n_cur, level, verdict)


def share_table(ref_counts: pd.Series, cur_counts: pd.Series, n_ref: int, n_cur: int, label: str) -> pd.DataFrame:
    """Per category: share in training, share in production and the difference in percentage points."""
    categories = ref_counts.index.union(cur_counts.index)
    frame = pd.DataFrame(
        {
            label: categories.astype(str),
            "training": ref_counts.reindex(categories, fill_value=0).to_numpy() / max(1, n_ref),
            "production": cur_counts.reindex(categories, fill_value=0).to_numpy() / max(1, n_cur),
        }
    )
    frame["difference_pp"] = (frame["production"] - frame["training"]) * 100
    order = frame["difference_pp"].abs().sort_values(ascending=False, kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def categorical_drift(
    feature: str, what: str, reference: pd.Series, current: pd.Series, label: str = "category"
) -> tuple[dict[str, Any], pd.DataFrame]:
    """JS distance and chi-square test of a categorical feature, and the per-category shares."""
    ref = reference.dropna().astype(str)
    cur = current.dropna().astype(str)
    ref_counts, cur_counts = ref.value_counts(), cur.value_counts()
    summary = _distribution_drift(feature, what, ref_counts, cur_counts, len(ref), len(cur))
    return summary, share_table(ref_counts, cur_counts, len(ref), len(cur), label)


def question_terms(questions: pd.Series) -> pd.Series:
    """Content terms per question, once per question: a Series of terms indexed by question position."""
    keys = normalize_text_key(questions.reset_index(drop=True))
    tokens = pc.split_pattern(pa.array(keys, type=pa.large_string(), from_pandas=True), " ")
    parents = pc.list_parent_indices(tokens).to_numpy()
    flat = pc.list_flatten(tokens)
    keep = pc.and_(
        pc.greater(pc.utf8_length(flat), 2),
        pc.invert(pc.is_in(flat, value_set=pa.array(sorted(STOPWORDS), type=pa.large_string()))),
    )
    keep_np = keep.to_numpy(zero_copy_only=False)
    frame = pd.DataFrame({"question": parents[keep_np], "term": flat.filter(keep).to_pandas()})
    frame = frame[~frame["term"].str.fullmatch(r"\d+")].drop_duplicates()
    return pd.Series(frame["term"].to_numpy(), index=frame["question"].to_numpy(), name="term")


def term_drift(reference: pd.Series, current: pd.Series, top_k: int = 30) -> tuple[dict[str, Any], pd.DataFrame]:
    """How the most frequent question terms differ: JS/chi-square on the top terms of either side.

    Terms outside both top-``top_k`` lists are pooled as "(other terms)". The table gives, per
    term, the share of questions that contain it in training and in production.
    """
    ref_terms, cur_terms = question_terms(reference), question_terms(current)
    ref_counts, cur_counts = ref_terms.value_counts(), cur_terms.value_counts()
    top = ref_counts.head(top_k).index.union(cur_counts.head(top_k).index)

    def pooled(counts: pd.Series) -> pd.Series:
        kept = counts.reindex(top, fill_value=0)
        other = counts.sum() - kept.sum()
        return pd.concat([kept, pd.Series({"(other terms)": other})])

    summary = _distribution_drift(
        "Question terms",
        f"the topics of production questions (top {top_k} terms)",
        pooled(ref_counts),
        pooled(cur_counts),
        len(reference),
        len(current),
    )
    table = share_table(
        ref_counts.reindex(top, fill_value=0),
        cur_counts.reindex(top, fill_value=0),
        len(reference),
        len(current),
        "term",
    )
    return summary, table


def attach_question_types(production: pd.DataFrame, reference: pd.DataFrame) -> pd.Series:
    """The question type of each production row, looked up by ``row_id`` in ``reference`` (row_id, question_type)."""
    if "row_id" not in production.columns or reference.empty:
        return pd.Series(pd.NA, index=production.index, dtype="string")
    lookup = reference.dropna(subset=["row_id"]).drop_duplicates("row_id").set_index("row_id")["question_type"]
    return production["row_id"].map(lookup).astype("string")


def drift_report(training: pd.DataFrame, production: pd.DataFrame, top_k: int = 30) -> dict[str, Any]:
    """Everything the Drift tab shows, from training rows and production rows.

    ``training`` has question, answer and question_type; ``production`` has question, answer and
    optionally question_type (null where unknown). Returns summary (one row per feature),
    question_lengths and answer_lengths (pre-binned, groups training/production), terms and
    question_types (share tables; question_types is None when too few production rows have a type).
    """
    ref_q, cur_q = word_counts(training["question"]), word_counts(production["question"])
    ref_a, cur_a = word_counts(training["answer"]), word_counts(production["answer"])
    rows = [
        numeric_drift("Question length (words)", "production question lengths", ref_q, cur_q),
        numeric_drift("Answer length (words)", "the chatbot's answer lengths", ref_a, cur_a),
    ]
    terms_summary, terms = term_drift(training["question"], production["question"], top_k=top_k)
    rows.append(terms_summary)
    question_types = None
    coverage = 0.0
    if "question_type" in production.columns and len(production):
        coverage = float(production["question_type"].notna().mean())
    if coverage >= QUESTION_TYPE_MIN_COVERAGE:
        types_summary, question_types = categorical_drift(
            "Question type",
            "the kinds of questions asked",
            training["question_type"],
            production["question_type"],
            label="question_type",
        )
        rows.append(types_summary)
    return {
        "summary": pd.DataFrame(rows, columns=SUMMARY_COLUMNS),
        "question_lengths": histogram({"training": ref_q, "production": cur_q}),
        "answer_lengths": histogram({"training": ref_a, "production": cur_a}),
        "terms": terms,
        "question_types": question_types,
        "question_type_coverage": coverage,
    }

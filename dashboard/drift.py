"""Drift of production traffic against the training split: pure functions, DataFrames in, dicts/DataFrames out.

Every verdict is a test calibrated at the sample size in hand. The question is not "does this
traffic differ from the training split at all" (fresh MedQuAD questions do: the splits are cut
along concepts, so held-out questions are about other topics) but "does it differ more than new,
in-distribution MedQuAD questions of the same number do". So each feature's distance to training
is compared with the distances of ``DRAWS`` random samples of the same size from the held-out
splits (validation and evaluation); the p-value is the share of those draws at least as far.
Without held-out splits the draws come from training itself (sampling noise only).

* lengths (words per question, per answer): the Kolmogorov–Smirnov distance D;
* question terms (the ``top_k`` most frequent of both sides plus "(other terms)") and question
  types: the Jensen–Shannon distance (``scipy.spatial.distance.jensenshannon``, base 2).

At 200 questions the term distance of a random held-out sample is already 0.1–0.15, which a fixed
threshold called drift. The significance level is split over the features tested (Bonferroni),
and the size of a drift is the distance above the draws' median, in fixed bands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dashboard.data import histogram, word_counts
from medqa_assets.text import normalize_text_key

if TYPE_CHECKING:
    from scipy import sparse

ALPHA = 0.05
MIN_ROWS = 20
DRAWS = 499
MAX_LENGTH_BIN = 400  # words; longer texts share the last bin of the length distributions
KS_MODERATE, KS_STRONG = 0.05, 0.15  # KS D above the draws' median
JS_MODERATE, JS_STRONG = 0.05, 0.15  # JS distance above the draws' median
QUESTION_TYPE_MIN_COVERAGE = 0.5
# The scrubber's placeholders ([EMAIL], [PHONE], ...) are redactions, not what people ask about.
PLACEHOLDER_RE = re.compile(r"\[[A-Z][A-Z_]*\]")

LEVELS = ("none", "moderate", "strong", "unknown")
SUMMARY_COLUMNS = [
    "feature",
    "test",
    "statistic",
    "value",
    "chance_level",
    "p_value",
    "threshold",
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


def _level(effect: float, p_value: float, threshold: float, moderate: float, strong: float) -> str:
    if p_value >= threshold or effect < moderate:
        return "none"
    return "strong" if effect >= strong else "moderate"


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
    chance_level: float | None,
    p_value: float | None,
    threshold: float,
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
        "chance_level": chance_level,
        "p_value": p_value,
        "threshold": threshold,
        "training_rows": n_ref,
        "production_rows": n_cur,
        "level": level,
        "verdict": verdict,
    }


def _too_few(feature: str, test: str, statistic: str, n_ref: int, n_cur: int, threshold: float) -> dict[str, Any]:
    verdict = f"Too few rows to judge (training {n_ref}, production {n_cur}; need at least {MIN_ROWS} each)."
    return _finding(feature, test, statistic, None, None, None, threshold, n_ref, n_cur, "unknown", verdict)


@dataclass(frozen=True)
class Rows:
    """A feature as a rows x categories 0/1 matrix (sparse), split into the three groups compared."""

    training: sparse.csr_matrix
    production: sparse.csr_matrix
    in_distribution: sparse.csr_matrix  # held-out rows (or training when there are none)
    single_label: bool = True  # one category per row (lengths, types), not several (terms)


def _indicator(codes: np.ndarray, rows: np.ndarray, n_rows: int, n_categories: int) -> sparse.csr_matrix:
    """A rows x categories 0/1 matrix with a one at (rows[i], codes[i])."""
    from scipy import sparse  # imported by the tests, after the tab's first chart

    values = np.ones(len(codes), dtype=np.float32)
    return sparse.csr_matrix((values, (rows, codes)), shape=(n_rows, n_categories))


def _distributions(counts: np.ndarray) -> np.ndarray:
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1e-12)


def ks_distance(current: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Kolmogorov–Smirnov D between count histograms over ordered bins, one per row of ``current``."""
    cdf = np.cumsum(_distributions(current), axis=1)
    return np.max(np.abs(cdf - np.cumsum(_distributions(reference), axis=1)), axis=1)


def js_distance(current: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Jensen–Shannon distance (base 2) between count vectors, one per row of ``current``."""
    from scipy.spatial.distance import jensenshannon

    reference = np.broadcast_to(_distributions(reference), np.atleast_2d(current).shape)
    return np.nan_to_num(jensenshannon(_distributions(current), reference, axis=1, base=2))


def calibrated_test(rows: Rows, distance: Any, *, draws: int = DRAWS, seed: int = 0) -> tuple[float, float, float]:
    """The production rows' distance to training, the median distance of ``draws`` random samples of
    as many in-distribution rows (drawn with replacement), and the share of draws at least as far."""
    reference = np.asarray(rows.training.sum(axis=0)).ravel()
    observed = float(distance(np.asarray(rows.production.sum(axis=0)).ravel(), reference)[0])
    n = rows.production.shape[0]
    pool = rows.in_distribution.shape[0]
    rng = np.random.default_rng(seed)
    if rows.single_label:  # a draw of n rows is a draw of n categories: O(draws x categories)
        shares = np.asarray(rows.in_distribution.sum(axis=0), dtype=float).ravel() / pool
        null = distance(rng.multinomial(n, shares / shares.sum(), size=draws), reference)
    else:  # how often each pool row is drawn, per draw: O(draws x n)
        drawn = rng.integers(0, pool, size=(draws, n)) + np.arange(draws)[:, None] * pool
        picks = np.bincount(drawn.ravel(), minlength=draws * pool).reshape(draws, pool).astype(np.float32)
        null = distance(np.asarray(rows.in_distribution.T @ picks.T).T, reference)
    p_value = (1 + int(np.sum(null >= observed - 1e-12))) / (draws + 1)
    return observed, float(np.median(null)), p_value


def _drift(
    feature: str,
    what: str,
    rows: Rows,
    kind: str,
    threshold: float,
    describe: Any = None,
) -> dict[str, Any]:
    """One feature's finding: ``kind`` "ks" (ordered bins) or "js" (categories)."""
    statistic, distance, bands = {
        "ks": ("KS D", ks_distance, (KS_MODERATE, KS_STRONG)),
        "js": ("JS distance", js_distance, (JS_MODERATE, JS_STRONG)),
    }[kind]
    test = f"{statistic} against {DRAWS} same-size samples of held-out MedQuAD rows"
    n_ref, n_cur = rows.training.shape[0], rows.production.shape[0]
    if n_ref < MIN_ROWS or n_cur < MIN_ROWS or rows.in_distribution.shape[0] < MIN_ROWS:
        return _too_few(feature, test, statistic, n_ref, n_cur, threshold)
    value, chance, p_value = calibrated_test(rows, distance)
    level = _level(value - chance, p_value, threshold, *bands)
    detail = (
        f"{statistic} {value:.3f} where new MedQuAD questions of the same number give {chance:.3f}, "
        f"p={p_value:.2g}" + (f"; {describe}" if describe else "")
    )
    verdict = _verdict(level, what, detail)
    return _finding(feature, test, statistic, value, chance, p_value, threshold, n_ref, n_cur, level, verdict)


def _length_rows(training: np.ndarray, production: np.ndarray, in_distribution: np.ndarray) -> tuple[Rows, str]:
    """Words per text (counts, not texts) as one length bin per row."""
    counts = [
        np.minimum(np.asarray(c, dtype=np.int64), MAX_LENGTH_BIN) for c in (training, production, in_distribution)
    ]
    matrices = [_indicator(c, np.arange(len(c)), len(c), MAX_LENGTH_BIN + 1) for c in counts]
    production_median, training_median = (float(np.median(c)) if len(c) else 0.0 for c in counts[1::-1])
    medians = f"median {production_median:g} words vs {training_median:g} in training"
    return Rows(*matrices), medians


def _category_rows(groups: list[pd.Series]) -> Rows:
    codes, categories = pd.factorize(pd.concat(groups, ignore_index=True))
    bounds = np.cumsum([0, *(len(g) for g in groups)])
    width = max(1, len(categories))
    return Rows(
        *(
            _indicator(codes[lo:hi], np.arange(hi - lo), hi - lo, width)
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        )
    )


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
    feature: str,
    what: str,
    reference: pd.Series,
    current: pd.Series,
    in_distribution: pd.Series | None = None,
    label: str = "category",
    threshold: float = ALPHA,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """JS distance of a categorical feature, calibrated by same-size in-distribution samples, and
    the per-category shares."""
    ref = reference.dropna().astype(str)
    cur = current.dropna().astype(str)
    pool = (ref if in_distribution is None else in_distribution).dropna().astype(str)
    summary = _drift(feature, what, _category_rows([ref, cur, pool]), "js", threshold)
    return summary, share_table(ref.value_counts(), cur.value_counts(), len(ref), len(cur), label)


def question_terms(questions: pd.Series) -> pd.Series:
    """Content terms per question, once per question: a Series of terms indexed by question position."""
    text = questions.reset_index(drop=True).astype("string").str.replace(PLACEHOLDER_RE, " ", regex=True)
    keys = normalize_text_key(text)
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


def term_drift(
    reference: pd.Series,
    current: pd.Series,
    in_distribution: pd.Series | None = None,
    top_k: int = 30,
    threshold: float = ALPHA,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """How the question terms differ: JS distance over the ``top_k`` most frequent terms of training
    and production pooled plus "(other terms)". The table gives, per term among either side's top
    ``top_k``, the share of questions that contain it in training and in production."""
    pool = reference if in_distribution is None else in_distribution
    found = [question_terms(values) for values in (reference, current, pool)]
    ref_counts, cur_counts = found[0].value_counts(), found[1].value_counts()
    tested = ref_counts.add(cur_counts, fill_value=0).sort_values(ascending=False, kind="stable").head(top_k).index
    matrices = []
    for terms, values in zip(found, (reference, current, pool), strict=True):
        codes = tested.get_indexer(terms)
        codes[codes < 0] = len(tested)  # "(other terms)"
        matrices.append(_indicator(codes, terms.index.to_numpy(dtype=np.int64), len(values), len(tested) + 1))
    summary = _drift(
        "Question terms",
        f"the topics of production questions (top {top_k} terms)",
        Rows(*matrices, single_label=False),
        "js",
        threshold,
    )
    shown = ref_counts.head(top_k).index.union(cur_counts.head(top_k).index)
    n_ref, n_cur = len(reference), len(current)
    table = share_table(
        ref_counts.reindex(shown, fill_value=0), cur_counts.reindex(shown, fill_value=0), n_ref, n_cur, "term"
    )
    return summary, table


def length_drift(
    feature: str,
    what: str,
    reference: np.ndarray,
    current: np.ndarray,
    in_distribution: np.ndarray | None = None,
    threshold: float = ALPHA,
) -> dict[str, Any]:
    """KS distance of words per text (the counts), calibrated by same-size in-distribution samples."""
    rows, medians = _length_rows(reference, current, reference if in_distribution is None else in_distribution)
    return _drift(feature, what, rows, "ks", threshold, describe=medians)


def calibration_pool(training: pd.DataFrame, held_out: pd.DataFrame | None) -> pd.DataFrame:
    """The rows whose same-size samples say what "no drift" looks like."""
    return training if held_out is None or len(held_out) < MIN_ROWS else held_out


def length_profile(
    training: pd.DataFrame, production: pd.DataFrame, held_out: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Words per question and answer of each group, and the training/production histograms: the
    part of the report that is ready before any test runs (the tab draws it first)."""
    pool = calibration_pool(training, held_out)
    words = {
        (name, column): word_counts(frame[column])
        for name, frame in (("training", training), ("production", production), ("pool", pool))
        for column in ("question", "answer")
    }
    return {
        "words": words,
        "question_lengths": histogram(
            {"training": words["training", "question"], "production": words["production", "question"]}
        ),
        "answer_lengths": histogram(
            {"training": words["training", "answer"], "production": words["production", "answer"]}
        ),
    }


def drift_report(
    training: pd.DataFrame,
    production: pd.DataFrame,
    held_out: pd.DataFrame | None = None,
    top_k: int = 30,
    lengths: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the Drift tab shows, from training rows, production rows and held-out rows.

    ``training`` and ``held_out`` (validation and evaluation: new questions that are not drift)
    have question, answer and question_type; ``production`` has question, answer and optionally
    question_type (null where unknown). Without ``held_out``, samples of training calibrate the
    tests. Returns summary (one row per feature), question_lengths and answer_lengths (pre-binned,
    groups training/production), terms and question_types (share tables; question_types is None
    when too few production rows have a type).
    """
    question_types = None
    coverage = 0.0
    if "question_type" in production.columns and len(production):
        coverage = float(production["question_type"].notna().mean())
    with_types = coverage >= QUESTION_TYPE_MIN_COVERAGE
    threshold = ALPHA / (4 if with_types else 3)  # Bonferroni: the chance of any false alarm stays ALPHA
    pool = calibration_pool(training, held_out)
    lengths = lengths or length_profile(training, production, held_out)
    words = lengths["words"]
    rows = [
        length_drift(
            f"{column.capitalize()} length (words)",
            what,
            words["training", column],
            words["production", column],
            words["pool", column],
            threshold,
        )
        for column, what in (("question", "production question lengths"), ("answer", "the chatbot's answer lengths"))
    ]
    terms_summary, terms = term_drift(
        training["question"], production["question"], pool["question"], top_k=top_k, threshold=threshold
    )
    rows.append(terms_summary)
    if with_types:
        types_summary, question_types = categorical_drift(
            "Question type",
            "the kinds of questions asked",
            training["question_type"],
            production["question_type"],
            pool["question_type"],
            label="question_type",
            threshold=threshold,
        )
        rows.append(types_summary)
    return {
        "summary": pd.DataFrame(rows, columns=SUMMARY_COLUMNS),
        "question_lengths": lengths["question_lengths"],
        "answer_lengths": lengths["answer_lengths"],
        "terms": terms,
        "question_types": question_types,
        "question_type_coverage": coverage,
        "calibration": "held-out splits" if pool is held_out else "training",
    }

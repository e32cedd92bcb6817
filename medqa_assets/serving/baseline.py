"""The reference model behind ``medqa serve``: answer with the nearest training question's answer.

Questions are embedded with TF-IDF (word 1-2 grams, sublinear tf, l2-normalised), so the dot
product of two vectors is their cosine similarity. The training matrix is kept transposed
(term -> rows), which makes one lookup a sum over the postings of the few terms the question has,
without going through scikit-learn's per-call validation: about a hundred microseconds for
tens of thousands of rows. :meth:`NearestQuestionBaseline.scores` gives the same numbers as
``vectorizer.transform([q]) @ matrix.T`` (tested).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from medqa_assets.serving import OFFLINE_JOB_HINT, MissingInputError
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore


@dataclass(frozen=True)
class Match:
    """The nearest training row of a question."""

    index: int
    score: float
    question: str
    answer: str


def _clean_text_column(values: pd.Series) -> pd.Series:
    return values.map(lambda value: value.strip() if isinstance(value, str) else "")


class NearestQuestionBaseline:
    """TF-IDF nearest-neighbour question matcher; ``fit(frame)`` then ``answer(question)``."""

    def __init__(self) -> None:
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        self.questions: list[str] = []
        self.answers: list[str] = []
        self._postings: sparse.csr_matrix | None = None  # terms x rows
        self._analyzer = None
        self._vocabulary: dict[str, int] = {}
        self._idf: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.answers)

    @property
    def is_fitted(self) -> bool:
        return self._postings is not None

    def fit(self, frame: pd.DataFrame) -> NearestQuestionBaseline:
        """Learn from the ``question`` and ``answer`` columns; rows missing either are skipped."""
        missing = [column for column in ("question", "answer") if column not in frame.columns]
        if missing:
            raise ValueError(f"the training frame has no {', '.join(missing)} column")
        questions = _clean_text_column(frame["question"])
        answers = _clean_text_column(frame["answer"])
        usable = (questions != "") & (answers != "")
        if not usable.any():
            raise ValueError("the training frame holds no row with both a question and an answer")
        self.questions = questions[usable].tolist()
        self.answers = answers[usable].tolist()
        matrix = self.vectorizer.fit_transform(self.questions)
        self._postings = sparse.csr_matrix(matrix.T, dtype=np.float64)
        self._postings.sort_indices()
        self._analyzer = self.vectorizer.build_analyzer()
        self._vocabulary = self.vectorizer.vocabulary_
        self._idf = np.asarray(self.vectorizer.idf_, dtype=np.float64)
        return self

    def _query_terms(self, question: str) -> tuple[np.ndarray, np.ndarray]:
        """Term ids and weights of the question's TF-IDF vector (as ``vectorizer.transform``)."""
        assert self._analyzer is not None and self._idf is not None
        counts = Counter(term for term in self._analyzer(question) if term in self._vocabulary)
        if not counts:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        ids = np.fromiter((self._vocabulary[term] for term in counts), dtype=np.int64, count=len(counts))
        tf = np.fromiter((1.0 + math.log(count) for count in counts.values()), dtype=np.float64, count=len(counts))
        weights = tf * self._idf[ids]
        norm = float(np.sqrt(np.dot(weights, weights)))
        return ids, (weights / norm if norm > 0 else weights)

    def scores(self, question: str) -> np.ndarray:
        """Cosine similarity of ``question`` to every training question."""
        if self._postings is None:
            raise RuntimeError("the baseline is not fitted; call fit(frame) first")
        ids, weights = self._query_terms(question)
        size = len(self.answers)
        if ids.size == 0:
            return np.zeros(size, dtype=np.float64)
        indptr, indices, data = self._postings.indptr, self._postings.indices, self._postings.data
        starts, ends = indptr[ids], indptr[ids + 1]
        lengths = ends - starts
        rows = np.concatenate([indices[s:e] for s, e in zip(starts, ends, strict=True)])
        values = np.concatenate([data[s:e] for s, e in zip(starts, ends, strict=True)]) * np.repeat(weights, lengths)
        return np.bincount(rows, weights=values, minlength=size)

    def nearest(self, question: str) -> Match:
        """The most similar training row (the first one on ties, row 0 if no term is known)."""
        scores = self.scores(question)
        index = int(np.argmax(scores))
        return Match(
            index=index, score=float(scores[index]), question=self.questions[index], answer=self.answers[index]
        )

    def answer(self, question: str) -> str:
        return self.nearest(question).answer


def training_split_missing_message(store: ObjectStore) -> str:
    key = layout.SPLIT_KEYS["training"]
    return (
        f"the training split is missing at {store.uri(key)}; run the offline pipeline first "
        f"(`{OFFLINE_JOB_HINT}`), or check MEDQA_STORE_URL"
    )


def load_training_frame(store: ObjectStore) -> pd.DataFrame:
    """The training split's ``question`` and ``answer`` columns, or a :class:`MissingInputError`."""
    key = layout.SPLIT_KEYS["training"]
    try:
        return store.read_jsonl(key, columns=["question", "answer"])
    except FileNotFoundError:
        raise MissingInputError(training_split_missing_message(store)) from None


def baseline_from_store(store: ObjectStore | None = None) -> NearestQuestionBaseline:
    """A baseline fitted on the store's training split."""
    store = store or ObjectStore.from_settings()
    frame = load_training_frame(store)
    try:
        return NearestQuestionBaseline().fit(frame)
    except ValueError as error:
        raise MissingInputError(
            f"cannot fit the baseline on {store.uri(layout.SPLIT_KEYS['training'])}: {error}; "
            f"rebuild it with `{OFFLINE_JOB_HINT}`"
        ) from None

"""Per-pair answer metrics: ROUGE-L (stemmed), token-level F1 and chrF, from maintained libraries.

- ROUGE-L F1 with Porter stemming, as ``rouge_score.RougeScorer(["rougeL"], use_stemmer=True)``
  computes it: rouge-score's own tokenizer and NLTK's Porter stemmer (the stem of each distinct
  word is computed once), and the longest common subsequence from ``rapidfuzz`` (C++), because
  rouge-score's pure-Python LCS takes ~17 ms per MedQuAD-sized pair (30x slower; the test checks
  that the figures are identical).
- Token-level F1 as the SQuAD evaluation script defines it (lower case, punctuation and articles
  removed, bag-of-words overlap).
- chrF (character 6-grams, beta 2) from ``sacrebleu``, scaled to 0..1.

All three are lexical: they count shared words or characters. They cannot see a negation ("is
not contagious"), a changed number or dose ("take 50 mg" vs "take 500 mg"), or a swapped drug
name: such an answer scores almost as high as the reference (measured in the README).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import cache, lru_cache

import numpy as np

METRICS = ("rougeL_f1", "token_f1", "chrf")
BLIND_SPOTS = (
    "lexical metrics count shared words and characters: a negated answer, a changed number or dose, "
    "or a swapped drug name scores almost as high as the reference"
)


@cache
def _porter() -> object:
    from nltk.stem import porter  # NLTK imports in a second: only when there is something to score

    return porter.PorterStemmer()


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return _porter().stem(word)


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's tokens with its stemming rule (words longer than 3 characters are stemmed)."""
    from rouge_score import tokenize

    return [_stem(token) if len(token) > 3 else token for token in tokenize.tokenize(text, None)]


def rouge_l_f1(prediction_tokens: list[str], reference_tokens: list[str]) -> float:
    """ROUGE-L F1 (rouge-score's definition: LCS precision and recall, their harmonic mean)."""
    from rapidfuzz.distance import LCSseq

    if not prediction_tokens or not reference_tokens:
        return 0.0
    lcs = LCSseq.similarity(prediction_tokens, reference_tokens)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(prediction_tokens), lcs / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def squad_tokens(text: str) -> list[str]:
    """The SQuAD script's normalization: lower case, no punctuation, no articles, split on spaces."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split()


def token_f1(prediction_tokens: list[str], reference_tokens: list[str]) -> float:
    """SQuAD token-level F1: the harmonic mean of bag-of-words precision and recall."""
    common = Counter(prediction_tokens) & Counter(reference_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(prediction_tokens), overlap / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


@cache
def _chrf() -> object:
    from sacrebleu.metrics import CHRF

    return CHRF()


def chrf(prediction: str, reference: str) -> float:
    """sacrebleu's sentence-level chrF, 0..1."""
    return _chrf().sentence_score(prediction, [reference]).score / 100.0


def normalized_answer(text: str) -> str:
    """The text an exact-match comparison sees: lower case, single spaces."""
    return " ".join(text.lower().split())


def score_pairs(predictions: list[str], references: list[str]) -> dict[str, np.ndarray]:
    """Every metric for every (prediction, reference) pair, plus ``exact`` (0/1)."""
    scores = {name: np.zeros(len(predictions)) for name in (*METRICS, "exact")}
    reference_tokens: dict[str, tuple[list[str], list[str]]] = {}
    for index, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        if reference not in reference_tokens:
            reference_tokens[reference] = (rouge_tokens(reference), squad_tokens(reference))
        rouge_reference, squad_reference = reference_tokens[reference]
        scores["rougeL_f1"][index] = rouge_l_f1(rouge_tokens(prediction), rouge_reference)
        scores["token_f1"][index] = token_f1(squad_tokens(prediction), squad_reference)
        scores["chrf"][index] = chrf(prediction, reference)
        scores["exact"][index] = float(normalized_answer(prediction) == normalized_answer(reference))
    return scores

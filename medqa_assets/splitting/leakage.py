"""Concept-level leakage groups: rows that must land in the same split.

Two rows are linked when they share any of these keys:

- ``question``: the normalized question text;
- ``focus``: the folded focus name (case, punctuation, possessive, plural, bracketed parts and
  word order folded away: "Alzheimer's Disease" = "alzheimer disease", "Diabetes Type 1" =
  "type 1 diabetes", "Peripheral Arterial Disease (P.A.D.)" = "peripheral arterial disease");
- ``synonym``: a row's synonym that is another row's folded focus (a focus and a synonym of the
  same folded name are one key);
- ``concept``: a UMLS CUI;
- ``document``: the source document (``document_url``, else source + ``document_id``);
- ``answer``: the answer's letters and digits, lower-cased.

A plain union of everything puts most of MedQuAD in one component, mostly through boilerplate
answers shared by many unrelated foci ("The cause of most childhood brain tumors is unknown.",
the clinical-trials paragraph). An answer (or, if the rule says so, a concept or synonym) shared
by more than its hub limit of distinct folded foci is a *hub*: it does not link. Question, focus
and document keys always link.

Two kinds of component go to training whatever their hash: those holding a hub answer (so held-out
rows share no answer at all with training) and those bigger than ``max_held_out_group_share`` of
the rows (the big concept families: holding one out would swing the ratios). The splitting stage
cuts the other components by rebalanced thresholds so the 60/20/20 ratios still hold.

The default rule was chosen by measurement on MedQuAD (numbers in the README): with concepts and
synonyms linking and answer hubs above 3 foci, no held-out row shares any key with training, and
no held-out group exceeds 1% of the rows. Everything here is a pure function of the rows'
content: the same rows in any order give the same keys, components and labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medqa_assets.text import alnum_fingerprints, normalize_text_key

KEY_KINDS = ("question", "focus", "synonym", "concept", "document", "answer")
ALWAYS_LINKING = ("question", "focus", "document")
BLOCKING_KINDS = ("question", "focus", "document", "answer")  # held out: zero sharing with training
_NODE_KIND = {"question": 1, "focus": 2, "synonym": 2, "concept": 3, "document": 4, "answer": 5}

_BRACKETED = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_POSSESSIVE = re.compile(r"(?<=\w)['’]s\b|(?<=s)['’](?!\w)")
_NOT_WORD = re.compile(r"[\W_]+")
_STOP_WORDS = frozenset({"a", "an", "the", "of", "and", "or", "in", "with", "to", "for"})


@dataclass(frozen=True)
class GroupingRule:
    """When a shared key stops linking rows, and which groups may not be held out."""

    answer_hub_foci: int = 3
    """An answer shared by more distinct foci is boilerplate: it does not link, and its groups go to training."""
    concept_hub_foci: int = 0
    """A UMLS concept shared by more distinct foci does not link (0: every concept links)."""
    synonym_hub_foci: int = 0
    """A synonym/focus name shared by more distinct foci does not link as a synonym (0: always links)."""
    max_held_out_group_share: float = 0.01
    """A group holding more than this share of the rows goes to training."""

    def limit(self, kind: str) -> int:
        return {"answer": self.answer_hub_foci, "concept": self.concept_hub_foci, "synonym": self.synonym_hub_foci}[
            kind
        ]


def _singular(word: str) -> str:
    """English plural to singular, just enough to match disease names ("cells", "kidneys", "stones")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def fold_name(name: str) -> str:
    """A focus or synonym reduced to the words that identify it, in sorted order."""
    text = _POSSESSIVE.sub("", _BRACKETED.sub(" ", name.lower()))
    words = {_singular(w) for w in _NOT_WORD.sub(" ", text).split() if w not in _STOP_WORDS}
    if not words:  # a name that is only brackets or stop words: keep what it had
        words = set(_NOT_WORD.sub(" ", name.lower()).split())
    return " ".join(sorted(words))


def fold_names(values: pd.Series) -> pd.Series:
    """:func:`fold_name` per value (each distinct value folded once); missing becomes ""."""
    text = values.astype("string").fillna("")
    codes, distinct = pd.factorize(text)
    folded = np.array([fold_name(value) for value in distinct], dtype=object)
    return pd.Series(folded[codes] if len(codes) else [], index=values.index, dtype="string")


def document_keys(frame: pd.DataFrame) -> pd.Series:
    """The source document of each row: its URL, else source + id (ids repeat across sources)."""
    source = frame["document_source"].astype("string").fillna("")
    document_id = frame["document_id"].astype("string").fillna("")
    by_id = (source + "#" + document_id).where(document_id.ne(""), "")
    if "document_url" not in frame:
        return by_id
    url = frame["document_url"].astype("string").str.strip().fillna("")
    return url.where(url.ne(""), by_id)


def _exploded(frame: pd.DataFrame, column: str) -> pd.Series:
    """The ``|``-joined values of ``column``, one per line (index: row position)."""
    if column not in frame:
        return pd.Series([], dtype="string")
    values = frame[column].astype("string").reset_index(drop=True)
    values = values[values.notna() & values.ne("")].str.split("|").explode().str.strip()
    return values[values.ne("")].astype("string")


def _fingerprints(kind: str, keys: pd.Series) -> np.ndarray:
    return pd.util.hash_array(keys.to_numpy(dtype=object), categorize=True) ^ np.uint64(_NODE_KIND[kind])


def leakage_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """Every key of every row, one per line: ``row`` (position), ``kind``, ``node`` (a 64-bit
    fingerprint of the key), ``key`` (readable; an answer's first 80 characters) and ``focus``
    (the row's folded focus, or its question when it has none: hubs are counted in distinct foci).
    """
    rows = np.arange(len(frame))
    question = normalize_text_key(frame["question"]).reset_index(drop=True)
    focus = fold_names(frame["question_focus"]).reset_index(drop=True)
    document = document_keys(frame).reset_index(drop=True)
    answer = frame["answer"].astype("string").fillna("").reset_index(drop=True)
    parts = [
        pd.DataFrame({"row": rows, "kind": "question", "node": _fingerprints("question", question), "key": question}),
        pd.DataFrame({"row": rows, "kind": "focus", "node": _fingerprints("focus", focus), "key": focus}),
        pd.DataFrame({"row": rows, "kind": "document", "node": _fingerprints("document", document), "key": document}),
        pd.DataFrame(
            {
                "row": rows,
                "kind": "answer",
                "node": alnum_fingerprints(answer) ^ np.uint64(_NODE_KIND["answer"]),
                "key": answer.str.slice(0, 80).where(answer.ne(""), ""),
            }
        ),
    ]
    synonyms = _exploded(frame, "synonyms")
    if len(synonyms):
        folded = fold_names(synonyms)
        known = folded.isin(set(focus[focus.ne("")]))  # only a synonym that is some row's focus links
        folded = folded[known]
        parts.append(
            pd.DataFrame(
                {"row": folded.index, "kind": "synonym", "node": _fingerprints("synonym", folded), "key": folded}
            )
        )
    concepts = _exploded(frame, "umls_cui").str.upper()
    if len(concepts):
        parts.append(
            pd.DataFrame(
                {"row": concepts.index, "kind": "concept", "node": _fingerprints("concept", concepts), "key": concepts}
            )
        )
    keys = pd.concat([p.reset_index(drop=True) for p in parts], ignore_index=True)
    keys = keys[keys["key"].astype("string").ne("")].drop_duplicates(["row", "node"], ignore_index=True)
    identity = focus.where(focus.ne(""), "q:" + question)
    keys["focus"] = pd.factorize(identity)[0][keys["row"].to_numpy()]
    keys["kind"] = keys["kind"].astype("category")
    return keys


def hub_keys(keys: pd.DataFrame, rule: GroupingRule) -> pd.DataFrame:
    """Answer, concept and synonym keys shared by more distinct folded foci than the rule allows.

    A synonym key counts the foci of the rows whose focus it is as well as those naming it.
    Columns: ``kind``, ``node``, ``key``, ``foci``, ``rows``.
    """
    hub_kinds = [k for k in ("answer", "concept", "synonym") if rule.limit(k) > 0]
    kind = keys["kind"].astype(str).replace({"focus": "synonym"})
    candidates = keys[kind.isin(hub_kinds)].assign(kind=kind)
    spread = candidates.groupby("node").agg(
        kind=("kind", "first"), key=("key", "first"), foci=("focus", "nunique"), rows=("row", "nunique")
    )
    limit = spread["kind"].map({k: rule.limit(k) for k in hub_kinds})
    hubs = spread[spread["foci"] > limit].reset_index()
    return hubs.sort_values(["kind", "foci", "key"], ascending=[True, False, True], ignore_index=True)


@dataclass
class LeakageGroups:
    """Each row's group label and whether its group must go to training, with what decided it."""

    labels: pd.Series
    to_training: pd.Series
    keys: pd.DataFrame
    hubs: pd.DataFrame
    rule: GroupingRule
    summary: dict[str, object] = field(default_factory=dict)


def leakage_groups(frame: pd.DataFrame, rule: GroupingRule | None = None) -> LeakageGroups:
    """Connected components of rows linked by shared non-hub keys (see the module docstring).

    A group's label is the smallest fingerprint among its keys, as 16 hex digits: it depends on
    the group's content only, not on row order.
    """
    rule = rule or GroupingRule()
    keys = leakage_keys(frame)
    hubs = hub_keys(keys, rule)
    is_hub = keys["node"].isin(hubs["node"]).to_numpy()
    links = ~is_hub | keys["kind"].isin(ALWAYS_LINKING).to_numpy()
    linking = keys[links]
    codes, uniques = pd.factorize(linking["node"])
    n_rows = len(frame)
    size = n_rows + len(uniques)  # a bipartite graph: row nodes first, then key nodes
    graph = coo_matrix((np.ones(len(codes)), (linking["row"].to_numpy(), codes + n_rows)), shape=(size, size))
    _, component = connected_components(graph, directed=False)
    smallest = pd.Series(np.asarray(uniques, dtype=np.uint64)).groupby(component[n_rows:]).min()
    row_component = component[:n_rows]
    labels = pd.Series(
        [f"{value:016x}" for value in smallest.reindex(row_component).to_numpy()], index=frame.index, dtype="string"
    )
    hub_answer_rows = np.unique(keys.loc[is_hub & keys["kind"].eq("answer").to_numpy(), "row"].to_numpy())
    sizes = np.bincount(row_component)
    too_big = np.flatnonzero(sizes > rule.max_held_out_group_share * n_rows)
    forced = np.isin(row_component, np.union1d(row_component[hub_answer_rows], too_big))
    to_training = pd.Series(forced, index=frame.index)
    summary = {
        "groups": int(len(np.unique(row_component))),
        "largest_group_rows": int(sizes.max()) if len(sizes) else 0,
        "largest_held_out_group_rows": int(sizes[np.unique(row_component[~forced])].max()) if (~forced).any() else 0,
        "hubs": {str(kind): int(count) for kind, count in hubs["kind"].value_counts().sort_index().items()},
        "rows_with_hub_answer": len(hub_answer_rows),
        "groups_too_big_to_hold_out": len(too_big),
        "rows_sent_to_training": int(forced.sum()),
    }
    return LeakageGroups(labels, to_training, keys, hubs, rule, summary)


def leakage_metadata(groups: LeakageGroups, sharing: dict[str, dict]) -> dict[str, Any]:
    """The ``leakage`` entry of the split metadata: blocking counts, residual sharing, the groups."""
    return {
        "held_out_rows_sharing_with_training": sharing["blocking"],
        "blocking_kinds": list(BLOCKING_KINDS),
        "residual": sharing["residual"],
        "groups": groups.summary,
    }


def held_out_sharing(keys: pd.DataFrame, hubs: pd.DataFrame, split_of_row: np.ndarray) -> dict[str, dict]:
    """Held-out rows (validation + evaluation) that share a key with training, per kind of key.

    ``split_of_row`` gives each row position's split. Returns ``{"blocking": {kind: rows}, "residual":
    {kind: {"rows", "keys", "top"}}}``: blocking counts must be zero (an answer counts there unless
    it is a hub); residual counts what hub keys still share, with the most shared keys.
    """
    training_row = np.asarray(split_of_row, dtype=object) == "training"
    in_training = training_row[keys["row"].to_numpy()]
    kind = keys["kind"].astype(str).to_numpy()
    hub = keys["node"].isin(hubs["node"]).to_numpy()
    node = keys["node"].to_numpy()
    focus_like = (kind == "focus") | (kind == "synonym")  # one node space: a focus is a synonym of itself
    blocking: dict[str, int] = {}
    residual: dict[str, dict] = {}
    for name in KEY_KINDS:
        mine = ~in_training & (kind == name)
        if name == "focus":
            theirs = in_training & (kind == "focus")
        elif name == "synonym":  # a held-out synonym or focus that is a training focus or synonym, focus=focus apart
            mine = ~in_training & focus_like
            theirs = in_training & focus_like
        else:
            theirs = in_training & (kind == name)
        shared = mine & np.isin(node, node[theirs])
        if name == "synonym":
            shared &= ~((kind == "focus") & np.isin(node, node[in_training & (kind == "focus")]))
        hits = keys[shared]
        if name in BLOCKING_KINDS:
            blocking[name] = int(hits.loc[~hub[shared] | (name in ALWAYS_LINKING), "row"].nunique())
        if name not in ALWAYS_LINKING:
            top = hits.groupby("key")["row"].nunique().sort_values(ascending=False).head(10)
            residual[name] = {
                "rows": int(hits["row"].nunique()),
                "keys": int(hits["node"].nunique()),
                "top": [{"key": str(k), "held_out_rows": int(v)} for k, v in top.items()],
            }
    return {"blocking": blocking, "residual": residual}

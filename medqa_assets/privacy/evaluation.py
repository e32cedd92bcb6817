"""Measuring the scrubber against hand-labelled text (used by ``bench/pii.py`` and the tests).

A labelled value counts as caught when every one of its characters (white space aside) falls in
a redaction; a redaction counts as right when it overlaps a labelled value of any kind (the kind
its placeholder names is reported separately, as ``same_kind``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medqa_assets.privacy.scrub import find_spans


@dataclass
class Scores:
    found: Counter = field(default_factory=Counter)
    labelled: Counter = field(default_factory=Counter)
    right: Counter = field(default_factory=Counter)
    predicted: Counter = field(default_factory=Counter)
    same_kind: int = 0
    misses: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)

    def recall(self, kind: str | None = None) -> float:
        found = sum(self.found.values()) if kind is None else self.found[kind]
        total = sum(self.labelled.values()) if kind is None else self.labelled[kind]
        return found / total if total else 1.0

    def precision(self, kind: str | None = None) -> float:
        right = sum(self.right.values()) if kind is None else self.right[kind]
        total = sum(self.predicted.values()) if kind is None else self.predicted[kind]
        return right / total if total else 1.0


def load_labelled(path: Path) -> list[dict[str, Any]]:
    """``{"id", "field", "text", "spans": [{"kind", "value"}]}`` per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def label_spans(record: dict[str, Any]) -> list[tuple[int, int, str]]:
    """Character spans of the labelled values (a value listed twice: its 1st and 2nd occurrence)."""
    spans, seen = [], Counter()
    for span in record["spans"]:
        value, text, start = span["value"], record["text"], -1
        for _ in range(seen[value] + 1):
            start = text.find(value, start + 1)
        seen[value] += 1
        spans.append((start, start + len(value), span["kind"]))
    return spans


def score(records: list[dict[str, Any]]) -> Scores:
    scores = Scores()
    for record in records:
        text = record["text"]
        predicted = find_spans(text)
        covered = bytearray(len(text))
        for start, end, _ in predicted:
            covered[start:end] = b"\x01" * (end - start)
        labels = label_spans(record)
        for start, end, kind in labels:
            scores.labelled[kind] += 1
            if all(covered[i] or text[i].isspace() for i in range(start, end)):
                scores.found[kind] += 1
                scores.same_kind += any(p[2] == kind and p[0] < end and start < p[1] for p in predicted)
            else:
                scores.misses.append(f"{record['id']} {kind}: {text[start:end]!r}  in  {text[:160]!r}")
        for start, end, kind in predicted:
            scores.predicted[kind] += 1
            if any(s < end and start < e for s, e, _ in labels):
                scores.right[kind] += 1
            else:
                scores.false_alarms.append(f"{record['id']} {kind}: {text[start:end]!r}  in  {text[:160]!r}")
    return scores


def changed_texts(texts: list[str]) -> tuple[int, dict[str, int]]:
    """How many of ``texts`` (distinct public text, e.g. MedQuAD's answers) the scrubber changes,
    and its redactions per kind: each one is damage to public health information."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from medqa_assets.privacy.scrub import scrub_array

    values = pa.array(texts, type=pa.large_string())
    scrubbed, counts = scrub_array(values)
    return int(pc.sum(pc.not_equal(values, scrubbed)).as_py() or 0), counts

"""Scrubbing personal data from question and answer text.

Vectorized RE2 patterns through pyarrow.compute: NLP-based scrubbers (Presidio, scrubadub)
load language models and run per string, orders of magnitude below the 200,000 records/s the
retraining flow needs; these patterns cover the identifiers that matter for chat logs. A cheap
pre-filter keeps the full patterns off the (vast majority of) strings without any candidate.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE = rf"(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-]\d{{2,4}}|\d{{4}}-\d{{2}}-\d{{2}}|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|\d{{1,2}}\s+{_MONTH}\s+\d{{4}})"  # noqa: E501

# (kind, pattern, replacement), applied in this order: SSNs before phone numbers, dates of
# birth before anything that could eat their digits.
PII_PATTERNS: list[tuple[str, str, str]] = [
    ("email", r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}", "[EMAIL]"),
    (
        "url",
        r"(?i)\b(?:https?://|www\.)[^\s<>\"']*(?:[?#&][^\s<>\"']*(?:id|user|name|email|token|session|patient|member|account|dob|phone)[^\s<>\"']*=[^\s<>\"']+|/(?:users?|profiles?|members?|accounts?|u|~)/[^\s<>\"'/]+|/patients?/[^\s<>\"'/]*\d|[^\s<>\"']*\d{6,})[^\s<>\"']*",
        "[URL]",
    ),
    (
        "date_of_birth",
        rf"(?i)\b(?:d\.?o\.?b\.?|date\s+of\s+birth|birth\s*date|birthday|born(?:\s+on)?)\s*(?:is|was|:|-)?\s*{_DATE}",
        "[DOB]",
    ),
    ("ssn", r"\b\d{3}[- ]\d{2}[- ]\d{4}\b", "[SSN]"),
    ("phone", r"(?:\+?1[\s.\-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.\-])\d{3}[\s.\-]\d{4}\b", "[PHONE]"),
]
PII_KINDS = [kind for kind, _, _ in PII_PATTERNS]
# Every pattern above needs one of these; strings without any are left alone.
_CANDIDATE = r"(?i)@|\d{3}[\s.\-]\d{2}|\(\d{3}\)|www\.|://|birth|born|d\.?o\.?b"


def scrub_array(values: pa.Array) -> tuple[pa.Array, dict[str, int]]:
    """Replace personal data in a string array; returns the new array and redactions per kind."""
    counts = dict.fromkeys(PII_KINDS, 0)
    if len(values) == 0:
        return values, counts
    candidates = pc.fill_null(pc.match_substring_regex(values, _CANDIDATE), False)
    positions = pc.indices_nonzero(candidates)
    if len(positions) == 0:
        return values, counts
    subset = pc.take(values, positions)
    for kind, pattern, replacement in PII_PATTERNS:
        found = pc.count_substring_regex(subset, pattern)
        counts[kind] = int(pc.sum(found).as_py() or 0)
        if counts[kind]:
            subset = pc.replace_substring_regex(subset, pattern, replacement)
    if not any(counts.values()):
        return values, counts
    return pc.replace_with_mask(values, candidates, subset.cast(values.type)), counts


def scrub_texts(texts: list[str | None]) -> tuple[list[str | None], dict[str, int]]:
    """List convenience wrapper around :func:`scrub_array`."""
    array, counts = scrub_array(pa.array(texts, type=pa.large_string()))
    return array.to_pylist(), counts

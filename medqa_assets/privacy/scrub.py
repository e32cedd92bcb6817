"""Replacing personal data in text, string arrays and whole records.

A vectorized RE2 pre-filter (pyarrow) picks the strings that hold a candidate of any kind (a
number of a telling shape, an ``@``, a link, a cue word before a capitalized word...); only those
go through the recognizers in Python, so the vast majority of strings cost one regex pass.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from medqa_assets.privacy.allowlist import AllowList
from medqa_assets.privacy.recognizers import KINDS, PLACEHOLDERS, RECOGNIZERS, Span
from medqa_assets.settings import Settings

PII_KINDS: list[str] = list(KINDS)

_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_RELATIONS = (
    "daughter|son|wife|husband|partner|fianc|boyfriend|girlfriend|mom|mum|mother|dad|father|sister|brother|aunt|"
    "auntie|uncle|grand[a-z]*|nan|nana|granny|gran|nephew|niece|cousin|friend|kid|child|baby|twin|step[a-z]+|"
    "[a-z]+-in-law|carer|caregiver|neighbou?r|roommate"
)
_ID_WORDS = (
    "mrn|medical record|chart|member|medicare|mbi|medicaid|nhs|msp|health card|health plan|insurance|policy|claim|"
    "acct|account|licen[cs]e|dl|certificate|ref|rx|prescription|social|sin|ni|aadhaar|pan|passport|versicherten|"
    "sozialversicherung|krankenversicherung|sécurité|securite|tax id|tin|ein|case|id|beneficiary|subscriber|"
    "serial|s/n|sn|imei|vin|plate|registration|transmitter|udi|mac|meid|esn|iccid|ssn|ss#|ss no|ss number"
)
# Every recognizer needs one of these somewhere in the string (RE2 syntax).
CANDIDATE_PATTERN = "|".join(
    [
        r"@",
        r"://|www\.|[a-zA-Z0-9]\.(?:com|net|org|io|me|ly|ee|gl|co|us|app|blog|tv|uk|de|fr|ca|au|in)\b",
        r"\d{3}\)?[\s.\-]?\d{2}",  # phones, SSNs, cards, long ids
        r"\+\d|\b0\d{1,4}[\s\-]\d{2}|\b\d{3}-\d{4}\b",  # international and national phone numbers
        r"\d\.\d{1,3}\.\d{1,3}\.\d|[0-9a-fA-F]{0,4}:[0-9a-fA-F]{0,4}:[0-9a-fA-F]{0,4}:|::[0-9a-fA-F]",  # IPs
        rf"\b\d{{1,2}}/\d{{1,2}}\b|\b\d{{1,2}}[.\-]\d{{1,2}}[.\-]\d{{2}}|(?i:\b(?:{_MONTHS})[a-z]*\.?\s+\d)",  # dates
        r"(?i:\b(?:aged?|turned|turning|is|was|at|of|'s|’s)\s+(?:9\d|1[01]\d)\b)|\b(?:9\d|1[01]\d)\s*(?:y|-y|[MFmf]\b)"
        r"|\((?:age )?(?:9\d|1[01]\d)\)|, (?:9\d|1[01]\d),",  # ages over 89
        r"\b\d{1,5}[A-Za-z]?\s+(?:\S+\s+){0,3}(?i:st|street|ave|avenue|rd|road|blvd|boulevard|ln|lane|dr|drive|ct|court|"
        r"way|pl|place|ter|terrace|cres|crescent|pkwy|parkway|hwy|highway|cir|circle|sq|square|trail|trl|row|close|"
        r"mews|pike|walk|grove|gardens)\b|(?i:\d\s+(?:rue|calle|avenida|via|viale|chemin|rua|carrer)\s)"
        r"|[a-zß](?:straße|strasse|weg|gasse|allee|platz|ring|damm)\s+\d",  # street addresses
        r"\b[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}\b|\b[A-Z]\d[A-Z]\s\d[A-Z]\d\b|\b[A-Z]{2,3} \d{4,5}\b"
        r"|(?i:zip|postal|postcode|post code|pin\s*code|plz|live in|living in|i'm in|im in|we're in|near)\W+\d",  # postcodes
        rf"(?i:\b(?:{_ID_WORDS})\b)[^\n]{{0,30}}\d",  # labelled record numbers and serials
        r"\b(?:Dr|Mr|Mrs|Ms|Mx|Miss|Prof|Sr|Sra|Mme|Herr|Frau)\.?\s+[A-ZÀ-Þ]",  # titles
        rf"(?i:\b(?:{_RELATIONS}))(?:'s|’s)?,?\s+[A-ZÀ-Þ][a-zß-ÿ]",  # relatives
        r"(?i:\b(?:my name|name is|name's|i am|i'm|i’m|this is|it's me|it’s me|ich bin|je suis|je m'appelle|me llamo|soy)),?\s+[A-ZÀ-Þ]",
        r"\b(?:Hi|Hello|Hey|Dear|Thanks|Thank you|Namaste|Bonjour|Hola|Hallo|Hiya|Cheers|Regards|Best),?\s+[A-ZÀ-Þ]",
        r"\b(?:Pt|pt|PT|Patient|patient|PATIENT|Name|NAME|name|Deceased|DECEASED|Intake|Registration|Guarantor|Resident|"
        r"Client|Caller|Member|Subscriber|Attn|attention)[:.]?,?\s+[A-ZÀ-Þ]",
        r"(?i:\b(?:pt|patient|name)\s*:)\s*[a-z]|\b(?:im|i'm|i am|hi|hello|hey|thanks)\s+[a-z]",  # lower-case names
        r",\s+[A-ZÀ-Þ][a-zß-ÿ]+[.!?]|\b[A-ZÀ-Þ][a-zß-ÿ]+ and (?:I|me|my)\b",  # "Thanks for asking, Raj."
        r"[A-ZÀ-Þ][a-zß-ÿ]+ [A-ZÀ-Þ][a-zß-ÿ\-]+, (?:\d|MRN|DOB|SSN|DL)",  # "Yusuf Demir, MRN ..."
    ]
)


@cache
def default_allowlist() -> AllowList:
    """The built-in public contacts plus ``MEDQA_PII_ALLOWLIST`` (a JSON array of strings)."""
    return AllowList.from_entries(Settings.from_env().pii_allowlist)


def find_spans(text: str, allow: AllowList | None = None) -> list[Span]:
    """Non-overlapping personal-data spans, sorted; earlier kinds in ``KINDS`` win overlaps."""
    allow = allow or default_allowlist()
    taken = bytearray(len(text))
    chosen: list[Span] = []
    for kind in KINDS:
        spans = sorted(set(RECOGNIZERS[kind](text, allow)), key=lambda span: (span[0], span[0] - span[1]))
        for start, end, span_kind in spans:
            if end <= start or any(taken[start:end]):
                continue
            taken[start:end] = b"\x01" * (end - start)
            chosen.append((start, end, span_kind))
    return sorted(chosen)


def scrub_text(text: str, allow: AllowList | None = None) -> tuple[str, Counter]:
    """``text`` with each personal value replaced by its kind's placeholder; counts per kind."""
    counts: Counter = Counter()
    spans = find_spans(text, allow)
    if not spans:
        return text, counts
    parts, position = [], 0
    for start, end, kind in spans:
        parts.append(text[position:start])
        parts.append(PLACEHOLDERS[kind])
        counts[kind] += 1
        position = end
    parts.append(text[position:])
    return "".join(parts), counts


def candidate_mask(values: pa.Array) -> pa.Array:
    """Which strings may hold personal data (one vectorized RE2 pass; nulls are not candidates)."""
    return pc.fill_null(pc.match_substring_regex(values, CANDIDATE_PATTERN), False)


def scrub_array(values: pa.Array, allow: AllowList | None = None) -> tuple[pa.Array, dict[str, int]]:
    """Replace personal data in a string array; returns the new array and redactions per kind."""
    counts = dict.fromkeys(PII_KINDS, 0)
    if len(values) == 0:
        return values, counts
    candidates = candidate_mask(values)
    positions = pc.indices_nonzero(candidates)
    if len(positions) == 0:
        return values, counts
    scrubbed = []
    for text in pc.take(values, positions).to_pylist():
        new, found = scrub_text(text, allow)
        scrubbed.append(new)
        for kind, count in found.items():
            counts[kind] += count
    if not any(counts.values()):
        return values, counts
    return pc.replace_with_mask(values, candidates, pa.array(scrubbed, type=values.type)), counts


def scrub_texts(texts: list[str | None], allow: AllowList | None = None) -> tuple[list[str | None], dict[str, int]]:
    """List convenience wrapper around :func:`scrub_array`."""
    array, counts = scrub_array(pa.array(texts, type=pa.large_string()), allow)
    return array.to_pylist(), counts


def scrub_value(value: Any, counts: Counter | None = None, allow: AllowList | None = None) -> Any:
    """Every string in a JSON-like value scrubbed (keys too), recursively; other values as they are."""
    counts = counts if counts is not None else Counter()
    if isinstance(value, str):
        new, found = scrub_text(value, allow)
        counts.update(found)
        return new
    if isinstance(value, dict):
        return {scrub_value(k, counts, allow): scrub_value(v, counts, allow) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(item, counts, allow) for item in value]
    return value


def scrub_record_text(raw: str, allow: AllowList | None = None) -> str:
    """A stored record (its JSON text, or the raw text of an unreadable line) with every string
    field scrubbed: parsed and scrubbed field by field when it is JSON, as text otherwise."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return scrub_text(raw, allow)[0]
    return orjson.dumps(scrub_value(parsed, allow=allow), default=str).decode()


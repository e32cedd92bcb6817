"""Replacing personal data in text, string arrays and whole records.

Every recognizer has a trigger: a pattern that any value it finds must contain (a number of a
telling shape, an ``@``, a link, a cue word before a capitalized word...). The triggers form one
RE2 set (``google-re2``), matched once per distinct string; only the recognizers whose trigger
fired run, in Python, so most strings cost one pass of a compiled automaton. Strings repeat a lot
in chat logs (a model answers the same question the same way), so each distinct string is scrubbed
once per batch, and strings already found clean are remembered (bounded) across batches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import cache
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import re2

from medqa_assets.privacy.allowlist import AllowList
from medqa_assets.privacy.ner import ner_model
from medqa_assets.privacy.recognizers import (
    ADDRESS,
    AGE,
    CARD,
    DATE,
    DEVICE_ID,
    EMAIL,
    ID_NUMBER,
    IP,
    KINDS,
    NAME,
    PHONE,
    PLACEHOLDERS,
    RECOGNIZERS,
    SSN,
    URL,
    Span,
    find_names,
)
from medqa_assets.settings import Settings

PII_KINDS: list[str] = list(KINDS)

_MONTHS = (
    "jan|january|feb|february|mar|march|apr|april|may|june?|july?|aug|august|sept?|september|oct|october|nov|"
    "november|dec|december"
)
# Words that make "5/17" a date (a fraction otherwise): the recognizer's cues.
_DATE_CUES = (
    "on|admitted|admission|adm|discharged?|seen|labs?|appt|appointment|visit|surgery|scheduled|interrogation|"
    "interrogated|orif|repair|s/p|dated|since|signed|accessed|checked|implanted|died|death|passed away|pronounced|"
    "born|dob|birth|birthday|tested|tfts|done|telehealth|diagnosed|dx|monday|tuesday|wednesday|thursday|friday|"
    "saturday|sunday"
)
_RELATIONS = (
    "daughter|son|wife|husband|partner|fianc|boyfriend|girlfriend|mom|mum|mother|dad|father|sister|brother|aunt|"
    "auntie|uncle|grand[a-z]*|nan|nana|granny|gran|nephew|niece|cousin|friend|kid|child|baby|twin|step[a-z]+|"
    "[a-z]+-in-law|carer|caregiver|neighbou?r|roommate"
)
_ID_WORDS = (
    "mrn|medical record|chart|member|medicare|mbi|medicaid|nhs|msp|health card|health plan|insurance|policy|claim|"
    "acct|account|licen[cs]e|dl|certificate|ref|rx|prescription|social|sin|ni|aadhaar|pan|passport|"
    "versichertennummer|sozialversicherungsnummer|krankenversicherungsnummer|sécurité sociale|securite sociale|"
    "tax id|tin|ein|case|id|beneficiary|subscriber|"
    "serial|s/n|sn|imei|vin|plate|registration|transmitter|udi|mac|meid|esn|iccid|ssn|ss#|ss no|ss number"
)
# (trigger, what it can reveal: kinds, or "name.<cue>" for one kind of name cue): a recognizer
# (a name cue's pattern) runs on a string only when one of its triggers matches it.
TRIGGERS: list[tuple[str, tuple[str, ...]]] = [
    (r"@", (EMAIL, URL)),
    (r"://|www\.|[a-zA-Z0-9]\.(?:com|net|org|io|me|ly|ee|gl|co|us|app|blog|tv|uk|de|fr|ca|au|in)\b", (URL,)),
    (
        r"\(?\b\d{3}\)?[\s.\-]?\d{3}[\s.\-]\d{4}\b|\b\d{10,11}\b|\+\d|\b0\d{1,4}[\s\-]\d{2}|\(0\d{1,4}\)\s?\d"
        r"|\b\d{3}-\d{4}\b",
        (PHONE,),
    ),
    (r"\b\d{3}[- ]\d{2}[- ]\d{4}\b", (SSN,)),
    (r"\b\d{4}[ \-]?\d{4}[ \-]?\d{4}|\b\d{4}[ \-]\d{6}[ \-]\d{4,5}\b|\b\d{13,19}\b", (CARD,)),
    (r"\d\.\d{1,3}\.\d{1,3}\.\d|[0-9a-fA-F]:[0-9a-fA-F]{1,4}:|::[0-9a-fA-F]", (IP,)),
    (
        rf"\b\d{{1,2}}[/.\-]\d{{1,2}}[/.\-]\d{{2}}|\d{{4}}-\d\d-\d\d|(?i:\b(?:{_MONTHS})\.?\s+\d)|\d\s+(?i:{_MONTHS})\b"
        rf"|(?i:\b(?:{_DATE_CUES})\b)\W{{1,3}}(?:\w+\W{{1,3}})?\d{{1,2}}/\d{{1,2}}\b",
        (DATE,),
    ),
    (
        r"(?i:\b(?:aged?|turned|turning|is|was|at|of|'s|’s|i'm|i’m|im|i am)\s+(?:9\d|1[01]\d)\b)"
        r"|\b(?:9\d|1[01]\d)\s*(?:y|-y|[MF]\b)"
        r"|\((?:age )?(?:9\d|1[01]\d)\)|, (?:9\d|1[01]\d),",
        (AGE,),
    ),
    (
        r"\b(?:St|Street|Ave|Avenue|Rd|Road|Blvd|Boulevard|Ln|Lane|Dr|Drive|Ct|Court|Way|Pl|Place|Ter|Terrace|Cres|"
        r"Crescent|Pkwy|Parkway|Hwy|Highway|Cir|Circle|Sq|Square|Trail|Trl|Row|Close|Mews|Pike|Walk|Grove|Gardens|st|"
        r"ave|rd|blvd|(?i:rue|calle|avenida|via|viale|chemin|rua|carrer))\b"
        r"|(?:straße|strasse|weg|gasse|allee|platz|damm) \d",
        (ADDRESS,),
    ),
    (
        r"[A-Z]\d[A-Z\d]? \d[A-Z]|\b[A-Z]{2,3} \d{4}"
        r"|(?i:zip|zip code|zipcode|postal code|postcode|post code|pin code|pincode|plz|live in|living in|i'm in"
        r"|im in|we're in|near)\W{1,3}\d",
        (ADDRESS,),
    ),
    (rf"(?i:\b(?:{_ID_WORDS})\b)\W{{1,4}}(?:\w+\W{{1,4}}){{0,2}}[A-Za-z]{{0,5}}[\-\s]?\d", (ID_NUMBER, DEVICE_ID, SSN)),
    (r"\b(?:Dr|Mr|Mrs|Ms|Mx|Miss|Prof|Sr|Sra|Mme|Herr|Frau)\.?\s+[A-ZÀ-Þ]", ("name.title",)),
    (rf"(?i:\b(?:{_RELATIONS}))(?:'s|’s)?,?\s+[A-ZÀ-Þ][a-zß-ÿ]", ("name.relation",)),
    (
        r"(?i:\b(?:my name|name is|name's|i am|i'm|i’m|this is|it's me|it’s me|ich bin|je suis|je m'appelle|me llamo|"
        r"soy)),?\s+[A-ZÀ-Þ]",
        ("name.self",),
    ),
    (r"\b(?:Hi|Hello|Hey|Dear|Thanks|Thank you|Namaste|Bonjour|Hola|Hallo|Hiya),?\s+[A-ZÀ-Þ]", ("name.greeting",)),
    (
        r"\b(?:Pt|pt|Patient|patient|PATIENT|Name|NAME|name|Deceased|DECEASED|Intake|Registration|Guarantor|Resident|"
        r"Caller)[:,]?\s+[A-ZÀ-Þ]|name on (?:the )?card\s+[A-ZÀ-Þ]",
        ("name.label",),
    ),
    (
        r"(?i:\b(?:pt|patient|name)\s*:)\s*[a-z]|\b(?:im|i'm|i am|my name is|hi|hello|hey|thanks)\s+[a-z]",
        ("name.lower",),
    ),
    (r"[a-z], [A-ZÀ-Þ][a-zß-ÿ]+[.!?]|[a-z] and (?:I|me)\b", ("name.vocative", "name.pair")),
    (r"[a-z], (?:MRN|DOB|SSN|DL |\d{1,3} ?(?:y|[MF]\b)|\d{1,3},|[Vv]ersicherten)", ("name.lead",)),
    (
        r"[a-z,;] [A-Z][a-z]{2,}(?:'s|’s)?\s+(?:has|had|is|was|may|might|needs|becomes|should|will|can|gets|"
        r"got|said|says|wants|takes|keeps|feels|seems|started)\b|^[a-z]{3,}\s+(?:has|had|is|was)\b"
        r"|[a-z,;] [A-Z][a-z]{2,}(?:'s|’s) [a-z]",
        ("name.verb",),
    ),
]
CANDIDATE_PATTERN = "|".join(trigger for trigger, _ in TRIGGERS)
# Strings found clean, remembered per process (by length and hash) so a repeated answer is
# not scanned again; cleared when full.
_KNOWN_CLEAN_LIMIT = 500_000
_known_clean: dict[int, set[tuple[int, int]]] = {}


def forget_clean() -> None:
    """Forget which strings were found clean (benchmarks measure a cold scrubber)."""
    _known_clean.clear()


@cache
def _trigger_set() -> re2.Set:
    options = re2.Options()
    options.max_mem = 256 << 20  # room for the automaton of all triggers at once
    triggers = re2.Set.SearchSet(options)
    for pattern, _ in TRIGGERS:
        triggers.Add(pattern)
    triggers.Compile()
    return triggers


def triggered(text: str) -> set[str]:
    """What the triggers that ``text`` matches can reveal (empty: nothing personal can be in it)."""
    return {tag for index in _trigger_set().Match(text) or () for tag in TRIGGERS[index][1]}


@cache
def default_allowlist() -> AllowList:
    """The built-in public contacts plus ``MEDQA_PII_ALLOWLIST`` (a JSON array of strings)."""
    return AllowList.from_entries(Settings.from_env().pii_allowlist)


def find_spans(text: str, allow: AllowList | None = None, tags: Iterable[str] | None = None) -> list[Span]:
    """Non-overlapping personal-data spans, sorted; earlier kinds in ``KINDS`` win overlaps.
    ``tags``: what to look for (kinds and name cues; default: what ``text``'s triggers reveal)."""
    allow = allow or default_allowlist()
    wanted = triggered(text) if tags is None else set(tags)
    if ner_model() is not None:
        wanted.add(NAME)  # the model finds names without a cue: every string goes through it
    cues = {tag.split(".", 1)[1] for tag in wanted if tag.startswith(NAME + ".")}
    kinds = {tag.split(".", 1)[0] for tag in wanted}
    taken = bytearray(len(text))
    chosen: list[Span] = []
    for kind in KINDS:
        if kind not in kinds:
            continue
        found = find_names(text, allow, cues) if kind == NAME else RECOGNIZERS[kind](text, allow)
        spans = sorted(set(found), key=lambda span: (span[0], span[0] - span[1]))
        for start, end, span_kind in spans:
            if end <= start or any(taken[start:end]):
                continue
            taken[start:end] = b"\x01" * (end - start)
            chosen.append((start, end, span_kind))
    return sorted(chosen)


def scrub_text(text: str, allow: AllowList | None = None, kinds: Iterable[str] | None = None) -> tuple[str, Counter]:
    """``text`` with each personal value replaced by its kind's placeholder; counts per kind."""
    counts: Counter = Counter()
    spans = find_spans(text, allow, kinds)
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
    """Which strings match a trigger (nulls do not)."""
    triggers = _trigger_set()
    return pa.array([value is not None and bool(triggers.Match(value)) for value in values.to_pylist()])


def _scrub_distinct(texts: list[str | None], allow: AllowList) -> dict[int, tuple[str, Counter]]:
    """The changed ones of ``texts`` (distinct strings): position -> (scrubbed text, redactions)."""
    clean = _known_clean.setdefault(id(allow), set())
    if len(clean) > _KNOWN_CLEAN_LIMIT:
        clean.clear()
    triggers = _trigger_set()
    with_ner = ner_model() is not None
    changed: dict[int, tuple[str, Counter]] = {}
    for position, text in enumerate(texts):
        if text is None:
            continue
        key = (len(text), hash(text))
        if key in clean:
            continue
        tags = {tag for index in triggers.Match(text) or () for tag in TRIGGERS[index][1]}
        if tags or with_ner:
            new, found = scrub_text(text, allow, tags)
            if found:
                changed[position] = (new, found)
                continue
        clean.add(key)
    return changed


# Strings up to this many characters are screened by one vectorized pass of all triggers
# (pyarrow's RE2); longer ones, where that automaton slows down (a long answer walks through many
# of its states), are screened one by one with the RE2 set, after de-duplication.
VECTORIZED_SCREEN_MAX_CHARS = 200


def _candidates(values: pa.Array) -> np.ndarray:
    """Which strings may hold personal data: short ones that match a trigger, and every long one."""
    lengths = pc.fill_null(pc.utf8_length(values), -1).to_numpy(zero_copy_only=False)
    short = (lengths >= 0) & (lengths <= VECTORIZED_SCREEN_MAX_CHARS)
    mask = lengths > VECTORIZED_SCREEN_MAX_CHARS
    if short.all():  # the common case for questions: no copy
        return pc.fill_null(pc.match_substring_regex(values, CANDIDATE_PATTERN), False).to_numpy(zero_copy_only=False)
    positions = np.flatnonzero(short)
    if len(positions):
        screened = pc.match_substring_regex(pc.take(values, pa.array(positions)), CANDIDATE_PATTERN)
        mask[positions] = pc.fill_null(screened, False).to_numpy(zero_copy_only=False)
    return mask


def scrub_array(values: pa.Array, allow: AllowList | None = None) -> tuple[pa.Array, dict[str, int]]:
    """Replace personal data in a string array; returns the new array and redactions per kind.

    Each distinct candidate string is scrubbed once; its redactions count once per occurrence."""
    allow = allow or default_allowlist()
    counts = dict.fromkeys(PII_KINDS, 0)
    if len(values) == 0 or values.null_count == len(values):
        return values, counts
    # with a model, every string goes through it: it finds names without a cue
    mask = _candidates(values) if ner_model() is None else pc.is_valid(values).to_numpy(zero_copy_only=False)
    if not mask.any():
        return values, counts
    candidates = values if mask.all() else pc.filter(values, pa.array(mask))
    encoded = pc.dictionary_encode(candidates)
    distinct = encoded.dictionary.to_pylist()
    changed = _scrub_distinct(distinct, allow)
    if not changed:
        return values, counts
    # only the rows whose string changed are replaced (one copy of the array, not two)
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    candidate_rows = np.flatnonzero(mask)
    hit = np.isin(indices, np.fromiter(changed, dtype=indices.dtype, count=len(changed)))
    rows = candidate_rows[hit]
    for position in indices[hit].tolist():
        for kind, count in changed[position][1].items():
            counts[kind] += count
    replaced = np.zeros(len(values), dtype=bool)
    replaced[rows] = True
    new_values = pa.array([changed[position][0] for position in indices[hit].tolist()], type=values.type)
    return pc.replace_with_mask(values, pa.array(replaced), new_values), counts


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

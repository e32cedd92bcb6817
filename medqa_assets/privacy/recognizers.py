"""Recognizers of the HIPAA Safe Harbor identifiers that occur in chat text.

Each recognizer returns ``(start, end, kind)`` spans. Formats are checked with maintained
libraries where one exists (libphonenumber's port ``phonenumbers`` for phone numbers in any
country's format, ``python-stdnum`` for Luhn and SSN rules, :mod:`ipaddress`); identifiers
without a checkable format (record numbers, serials, names) need a context word, as Presidio's
recognizers do ("MRN", "serial", "my daughter", "Dr."). Public contacts are kept (:mod:`allowlist`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources

import phonenumbers
from stdnum import luhn
from stdnum.us import ssn as us_ssn

from medqa_assets.privacy.allowlist import AllowList
from medqa_assets.privacy.ner import find_person_names

Span = tuple[int, int, str]

NAME = "name"
ADDRESS = "address"
DATE = "date"
AGE = "age"
PHONE = "phone"
EMAIL = "email"
SSN = "ssn"
ID_NUMBER = "id_number"
DEVICE_ID = "device_id"
URL = "url"
IP = "ip"
CARD = "card"
KINDS: tuple[str, ...] = (EMAIL, URL, IP, CARD, SSN, ID_NUMBER, DEVICE_ID, PHONE, DATE, AGE, ADDRESS, NAME)
PLACEHOLDERS: dict[str, str] = {
    NAME: "[NAME]",
    ADDRESS: "[ADDRESS]",
    DATE: "[DATE]",
    AGE: "[AGE]",
    PHONE: "[PHONE]",
    EMAIL: "[EMAIL]",
    SSN: "[SSN]",
    ID_NUMBER: "[ID]",
    DEVICE_ID: "[DEVICE_ID]",
    URL: "[URL]",
    IP: "[IP]",
    CARD: "[CARD]",
}

_UPPER = "A-ZÀ-ÖØ-ÞĀ-Ž"
_LOWER = "a-zß-öø-ÿā-ž"
_LETTER = _UPPER + _LOWER


def _before(text: str, start: int, width: int = 40) -> str:
    return text[max(0, start - width) : start].lower()


_ORGANISATION = re.compile(
    r"\b(?:Foundation|Association|Institutes?|Center|Centre|Society|Federation|Clinic|Hospital|University|"
    r"Department|Services|Network|Alliance|Council|Academy|College|Organi[sz]ation|Program|Programme|Office|Agency|"
    r"Administration|Coalition|League|Registry|Clearinghouse|Library|Commission|Inc|LLC|Corporation|Corp|NIH|CDC|FDA|"
    r"Partnership|Suite|Floor)\b"
    r"|\bTTY\b|[Tt]oll-free|business hours|after hours|www\.|https?://"
)
_PERSONAL_CONTEXT = re.compile(
    r"\b(?:[Mm]y|[Mm]e|I|I'm|[Ii]m|[Oo]ur|[Ww]e|[Uu]s|[Mm]ine|[Pp]atient|[Pp]t|MRN|DOB|SSN|[Ss]on|[Dd]aughter|[Ww]ife|"
    r"[Hh]usband|[Mm]om|[Mm]um|[Dd]ad)\b"
)
_ORGANISATION_AFTER = re.compile(r"^.{0,40}?(?:during\s+business\s+hours|after\s+hours|\bTTY\b|www\.)", re.DOTALL)


def institutional(text: str, start: int) -> bool:
    """A contact (number, street, mailbox) listed for an organisation, as MedQuAD's resource lists
    do: an organisation word before it, and nothing personal in between."""
    window = text[max(0, start - 160) : start]
    if _PERSONAL_CONTEXT.search(window):
        return False
    return bool(_ORGANISATION.search(window)) or bool(_ORGANISATION_AFTER.match(text[start : start + 80]))


# --- e-mail, URL, IP ------------------------------------------------------------------------

_EMAIL = re.compile(rf"[{_LETTER}0-9._%+\-]+@[{_LETTER}0-9\-]+(?:\.[{_LETTER}0-9\-]+)*\.[A-Za-z]{{2,}}")


def find_emails(text: str, allow: AllowList) -> Iterator[Span]:
    for match in _EMAIL.finditer(text):
        if not allow.email_is_public(match.group()) and not institutional(text, match.start()):
            yield match.start(), match.end(), EMAIL


_URL = re.compile(
    r"(?:https?://|www\.)[^\s<>\"'()\[\]]+"
    r"|(?<![@\w.\-])(?:[a-z0-9\-]+\.)+(?:com|net|org|io|me|ly|ee|gl|co|us|app|blog|tv|fm|gg|uk|de|fr|ca|au|in|gov|edu)"
    r"(?:/[^\s<>\"'()\[\]]*)?(?![\w@])",
    re.IGNORECASE,
)
# Sites where a path names a person (a profile, a post, a shared file or a fundraiser).
_PROFILE_HOSTS = re.compile(
    r"(?:^|\.)(?:facebook|fb|instagram|twitter|x|tiktok|youtube|youtu|linkedin|reddit|github|gitlab|medium|"
    r"pinterest|strava|patientslikeme|venmo|paypal|cash|gofundme|caringbridge|justgiving|patreon|livejournal|"
    r"linktr|dropbox|box|drive\.google|docs\.google|photos\.app\.goo|goo|bit|tinyurl|zoom|us\d+web\.zoom|"
    r"healthgrades|vitals|zocdoc|ratemds|legacy|tumblr|snapchat|threads|mastodon|bsky|onlyfans|myspace|"
    r"flickr|imgur|vimeo|soundcloud|spotify|twitch|discord|telegram|t|wa|signal|calendly|mychart)"
    r"\.(?:com|net|org|me|ee|gl|ly|us|app|io|co|tv|gg|social)$",
    re.IGNORECASE,
)
# Hosts whose subdomain is one person's site.
_PERSONAL_HOSTING = re.compile(
    r"\.(?:blogspot|wordpress|substack|tumblr|github\.io|wixsite|weebly|squarespace|carrd|bandcamp|"
    r"neocities|netlify|vercel|ghost|typepad|livejournal)\.?(?:com|co|io|app|org|net)?$",
    re.IGNORECASE,
)
_IDENTIFYING_QUERY = re.compile(
    r"[?&#;](?:[a-z]+[_-])?(?:id|uid|pid|user|username|userid|name|email|token|session|sessionid|sid|patient|"
    r"patientid|member|memberid|account|mrn|dob|phone|pwd|password|rlkey|key|auth|sig)=",
    re.IGNORECASE,
)
_IDENTIFYING_PATH = re.compile(
    r"/(?:~|@|users?/|u/|profiles?/|members?/[^/?#]|patients?/\d|people/|person/|athletes/|in/|visit/|share/|"
    r"obituaries/|physician/|doctor/|proxy)",
    re.IGNORECASE,
)
_FIRST_PERSON_URL = re.compile(r"\b(?:[Mm]y|[Oo]ur|[Mm]e|I write|I'm starting|[Pp]ersonal|[Mm]ine)\b[^.!?]{0,40}$")


def _url_host_and_path(url: str) -> tuple[str, str]:
    bare = re.sub(r"^(?:https?://)", "", url, flags=re.IGNORECASE)
    host, _, rest = bare.partition("/")
    host = host.split("?")[0].split("#")[0].split(":")[0]
    return host.lower(), "/" + rest if rest or bare.endswith("/") else (
        "?" + bare.split("?", 1)[1] if "?" in host else ""
    )


def url_is_personal(url: str, before: str, allow: AllowList) -> bool:
    """A URL identifies a person when it points at someone's profile, post, page or file."""
    host, path = _url_host_and_path(url)
    if allow.value_is_public(url):
        return False
    identifying = bool(_IDENTIFYING_QUERY.search(url)) or bool(_IDENTIFYING_PATH.search(path))
    if allow.domain_is_public(host):
        return bool(
            re.search(
                r"/~|/(?:users?|profiles?|members?)/[^/?#]|/patients?/\d|[?&](?:[\w-]*id|user|token|session|mrn)=",
                url,
                re.I,
            )
        )
    if _PERSONAL_HOSTING.search(host):
        return True
    if _PROFILE_HOSTS.search(host):
        return len(path.strip("/")) > 0 or host.count(".") >= 2 and not host.startswith("www.")
    if identifying:
        return True
    return bool(_FIRST_PERSON_URL.search(before))


def find_urls(text: str, allow: AllowList) -> Iterator[Span]:
    for match in _URL.finditer(text):
        url = match.group().rstrip(".,;:!?")
        if url_is_personal(url, text[max(0, match.start() - 60) : match.start()], allow):
            yield match.start(), match.start() + len(url), URL


_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


def find_ips(text: str, allow: AllowList) -> Iterator[Span]:
    for pattern in (_IPV4, _IPV6):
        for match in pattern.finditer(text):
            value = match.group()
            if pattern is _IPV6 and value.count(":") < 2:
                continue
            try:
                ipaddress.ip_address(value)
            except ValueError:
                continue
            if pattern is _IPV4 and re.search(r"\b(?:version|v)\s*$", _before(text, match.start(), 12)):
                continue
            if not allow.value_is_public(value):
                yield match.start(), match.end(), IP


# --- numbers: cards, SSNs, phone numbers ----------------------------------------------------

_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|35|6011|64[4-9]|65|62|60|50|5[6-9])")


def find_cards(text: str, allow: AllowList) -> Iterator[Span]:
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        labelled_otherwise = re.search(r"\b(?:imei|serial|s/?n|ndc|lot)\b[\s:#.]*$", _before(text, match.start(), 20))
        plausible = 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn.is_valid(digits)
        if plausible and not labelled_otherwise:
            yield match.start(), match.end(), CARD


_SSN_CUE = (
    r"(?:ssn|ss#|ss\s*(?:no\.?|number|#)|social(?:\s+security)?(?:\s+(?:number|no\.?|#|sec\s*no))?"
    r"|social\s+sec(?:\.|urity)?\s*(?:no\.?|#|number)?)"
)
_SSN_SEPARATED = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_SSN_CUED = re.compile(rf"(?i)\b{_SSN_CUE}\b[^0-9\n]{{0,25}}?(\d{{9}}|\d{{3}}[- ]?\d{{2}}[- ]?\d{{4}})(?![\w-])")


def find_ssns(text: str, allow: AllowList) -> Iterator[Span]:
    for match in _SSN_SEPARATED.finditer(text):
        digits = match.group(1) + match.group(3) + match.group(4)
        if us_ssn.is_valid(digits) or re.search(_SSN_CUE, _before(text, match.start(), 30)):
            yield match.start(), match.end(), SSN
    for match in _SSN_CUED.finditer(text):
        yield match.start(1), match.end(1), SSN


_PHONE_CUE = re.compile(
    r"\b(?:call|called|calling|phone[sd]?|tel|telephone|mobile|mob|cell|cellphone|fax|text|txt|whatsapp|"
    r"number|reach|contact|home|work|landline|ring|line|appeler|anrufen|nummer|numéro|me)\b[^0-9\n]{0,15}$",
    re.IGNORECASE,
)
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+/.-])(?:"
    r"\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,5}(?:[\s.-]\d{1,6}){0,5}"  # international
    r"|(?:1[\s.-])?\(\d{3}\)\s?\d{3}[\s.-]?\d{4}"  # (415) 555-0132
    r"|(?:1[\s.-])?\d{3}[\s.-]\d{3}[\s.-]\d{4}"  # 415-555-0132
    r"|\d{10}"  # 4155550132
    r"|\(0\d{1,4}\)\s?\d{3,4}[\s-]?\d{3,4}"  # (02) 9876 5432
    r"|0\d{1,4}(?:[\s-]\d{2,8}){1,4}"  # 0161 496 0734, 06 12 34 56 78
    r"|\d{3}-\d{4}"  # 555-0199 (local)
    r")(?![\w/-]|\.\d)"
)
_PHONE_REGIONS = ("US", "GB", "AU", "FR", "DE", "IE", "NZ", "IN", "CA", "ES", "IT", "NL", "ZA")


def _phone_is_plausible(value: str, cued: bool) -> bool:
    digits = re.sub(r"\D", "", value)
    if value.startswith("+"):
        try:
            return phonenumbers.is_possible_number(phonenumbers.parse(value, None))
        except phonenumbers.NumberParseException:
            return False
    if re.fullmatch(r"\d{3}-\d{4}", value):
        return cued
    national = digits[1:] if len(digits) == 11 and digits.startswith("1") else digits
    if len(national) == 10 and national[0] in "23456789" and not value.startswith("0"):
        # 415-555-0132 and (415) 555-0132 are phone numbers by their shape; ten bare digits need a
        # valid exchange or a word such as "call" before them
        return cued or national[3] in "23456789" or not value.isdigit()
    if not value.lstrip("(").startswith("0"):
        return False
    for region in _PHONE_REGIONS[1:]:
        try:
            number = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number) or cued and phonenumbers.is_possible_number(number):
            return True
    return False


def find_phones(text: str, allow: AllowList) -> Iterator[Span]:
    for match in _PHONE_CANDIDATE.finditer(text):
        value = match.group().rstrip(" .-")
        before = _before(text, match.start(), 30)
        if re.search(r"\b(?:ndc|lot|cpt|icd|pmid|doi|nct|rs|ref)\b(?:\s*(?:number|no\.?|code|#))?[\s:#.]*$", before):
            continue
        digits = re.sub(r"\D", "", value)
        if allow.phone_is_public(digits) or allow.value_is_public(value) or institutional(text, match.start()):
            continue
        if _phone_is_plausible(value, bool(_PHONE_CUE.search(before))):
            yield match.start(), match.start() + len(value), PHONE


# --- identifiers that need a label: record, plan, account, licence numbers; devices ----------

_ID_TOKEN = r"(?:SN\s)?[A-Z0-9](?:[A-Z0-9]|[-/.](?=[A-Z0-9])|\s(?=[A-Z0-9]{1,3}\b|\d))*[A-Z0-9]"
_SEP = r"[\s:#.=,\-]*(?:(?:is|was|no\.?|nr\.?|number|num|id|card|#|of|on file)[\s:#.=,\-]*){0,3}"
_ID_CUES = (
    r"mrn|medical\s+record(?:\s+(?:number|no\.?|#))?|chart\s+(?:number|no\.?|#)|member(?:\s+id)?|medicare(?:\s+(?:mbi|id|number|card))?|"
    r"mbi|medicaid(?:\s+(?:id|number))?|nhs|msp|health\s+card|health\s+plan|insurance(?:\s+(?:id|number))?|"
    r"policy|claim|acct|account|licen[cs]e|dl|birth\s+certificate|certificate|authori[sz]ation\s+ref|ref|"
    r"rx\s*#?|prescription|va\s+claim|social\s+insurance|sin|ni|national\s+insurance|aadhaar|pan|passport|"
    r"versichertennummer|sozialversicherungsnummer|krankenversicherungsnummer|num[ée]ro\s+de\s+s[ée]curit[ée]\s+sociale|"
    r"tax\s+id|tin|ein|case|patient\s+id|beneficiary|subscriber|group\s+id|employee\s+id|student\s+id|id"
)
_DEVICE_CUES = (
    r"serial(?:\s*(?:number|no\.?|#))?|s/n|sn|imei|vin|licen[cs]e\s+plate|plate|registration|transmitter|"
    r"device\s+(?:id|sn)|udi|mac(?:\s+address)?|pendant\s+id|meid|esn|iccid"
)
_ID_CUED = re.compile(rf"(?i:\b(?:{_ID_CUES})\b){_SEP}(?P<value>{_ID_TOKEN})")
_DEVICE_CUED = re.compile(rf"(?i:\b(?P<cue>{_DEVICE_CUES})\b){_SEP}(?P<value>{_ID_TOKEN})")


def _identifier(value: str) -> str | None:
    """The identifier part of a token after a label, or None when it is not one."""
    value = value.strip()
    if sum(c.isdigit() for c in value) < 2 or len(value.replace(" ", "")) < 4:
        return None
    return value


def _find_labelled(pattern: re.Pattern[str], kind: str, text: str, allow: AllowList) -> Iterator[Span]:
    for match in pattern.finditer(text):
        value = _identifier(match.group("value"))
        if value is None or allow.value_is_public(value):
            continue
        if re.fullmatch(r"(?:19|20)\d\d", value) or re.match(r"1?-?8(?:00|33|44|55|66|77|88)\b", value):
            continue  # a year, a toll-free number
        start = match.start("value")
        end = start + len(value)
        if (
            kind == DEVICE_ID
            and match.group("cue").lower() in {"sn", "s/n"}
            and match.start("value") - match.end("cue") <= 2
        ):
            start = match.start("cue")  # "SN 2217-44B9": the prefix is part of the serial as written
        yield start, end, kind


def find_id_numbers(text: str, allow: AllowList) -> Iterator[Span]:
    yield from _find_labelled(_ID_CUED, ID_NUMBER, text, allow)


def find_device_ids(text: str, allow: AllowList) -> Iterator[Span]:
    yield from _find_labelled(_DEVICE_CUED, DEVICE_ID, text, allow)


# --- dates tied to a person, ages over 89 ---------------------------------------------------

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
    r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_FULL_DATE = re.compile(
    rf"(?i)(?<![\w/.-])(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-](?:\d{{4}}|\d{{2}})|\d{{4}}-\d{{2}}-\d{{2}}"
    rf"|{_MONTH}\s+{_DAY},?\s+\d{{4}}|{_DAY}\s+{_MONTH},?\s+\d{{4}})(?![\w/-]|\.\d)"
)
_PARTIAL_DATE = re.compile(
    rf"(?<![\w/.-])(?:(?:0?[1-9]|1[0-2])/(?:[12]\d|3[01]|0?[1-9])|(?i:{_MONTH})\s+{_DAY}|(?i:{_MONTH})\s+\d{{4}})(?![\w/-]|\.\d)"
)
_DATE_CUE = re.compile(
    r"\b(?:on|admitted|admission|adm|discharged?|seen|labs?|appt|appointment|visit|surgery|scheduled|"
    r"interrogation|interrogated|orif|repair|s/p|dated|since|signed|accessed|checked|implanted|died|death|"
    r"passed\s+away|pronounced|born|dob|birth|birthday|tested|tfts|done|telehealth|diagnosed|dx|"
    r"(?:mon|tues|wednes|thurs|fri|satur|sun)day)\b[^;\n]{0,24}$",
    re.IGNORECASE,
)


# The cues above but "on" and "since", which public events share ("On May 15, 2012 the FDA ...").
_STRONG_DATE_CUE = re.compile(_DATE_CUE.pattern.replace(r"\b(?:on|", r"\b(?:", 1), re.IGNORECASE)
_PUBLIC_DATE_CUE = re.compile(
    r"(?:\b(?:updated|published|revised|reviewed|as\s+of|effective|released|approved|announced|retrieved|"
    r"modified|copyright|posted|issued|enacted|signed\s+into\s+law)|(?-i:\bAccessed)|©)\W{0,3}(?:on\s+)?$",
    re.IGNORECASE,
)
_PERSON_WORDS = re.compile(
    r"\b(?:i|i'm|im|me|my|our|we|he|she|his|her|him|pt|patient|mom|mum|dad|son|daughter|wife|husband|"
    r"grand\w*|baby|dob|born|died|admitted|discharged|seen|visit|appt|appointment|surgery|scheduled)\b",
    re.IGNORECASE,
)


def _sentence(text: str, start: int, end: int) -> str:
    left = max(
        text.rfind(". ", 0, start), text.rfind("\n", 0, start), text.rfind("? ", 0, start), text.rfind("! ", 0, start)
    )
    right = min((i for i in (text.find(". ", end), text.find("\n", end)) if i >= 0), default=len(text))
    return text[left + 1 : right]


def find_dates(text: str, allow: AllowList) -> Iterator[Span]:
    public: list[tuple[int, int]] = []
    for match in _FULL_DATE.finditer(text):
        value = match.group()
        public.append(match.span())
        if re.fullmatch(r"\d{1,2}[.-]\d{1,2}[.-]\d{2}", value):
            continue  # 1.2.10, 3-6-12: more often ranges and versions than dates
        before = _before(text, match.start(), 30)
        if _PUBLIC_DATE_CUE.search(text[max(0, match.start() - 30) : match.start()]) or re.match(
            r"[;:]\s*\d", text[match.end() : match.end() + 4]
        ):
            continue  # a citation's or a public event's date
        before = _before(text, match.start(), 45)
        strong_cue = _STRONG_DATE_CUE.search(before)
        if not (strong_cue or _PERSON_WORDS.search(_sentence(text, match.start(), match.end()))):
            continue
        public.pop()
        yield match.start(), match.end(), DATE
    for match in _PARTIAL_DATE.finditer(text):
        value = match.group()
        if any(start <= match.start() < end for start, end in public):
            continue  # part of a date judged public above
        month_year = re.fullmatch(rf"(?i){_MONTH}\s+\d{{4}}", value)
        before = _before(text, match.start(), 30)
        if _PUBLIC_DATE_CUE.search(text[max(0, match.start() - 30) : match.start()]):
            continue
        if month_year:
            if re.search(
                r"\b(?:diagnosed|dx|since|born|died|passed\s+away|admitted|discharged)\b[^.;\n]{0,12}$", before
            ):
                yield match.start(), match.end(), DATE
            continue
        if value[0].isalpha() and value[0].islower():
            continue  # "may 2 ..."
        ordinal = re.search(r"\d(?:st|nd|rd|th)$", value)
        if (ordinal and value[0].isalpha()) or _DATE_CUE.search(before):
            yield match.start(), match.end(), DATE


_OLD = r"(?:9\d|1[01]\d|120)"
_PERSON = (
    r"(?:i|i'm|im|i am|he|she|he's|she's|they|grand\w*|great-grand\w*|nan|nana|gran|mum|mom|mother|dad|father|"
    r"aunt|uncle|husband|wife|patient|pt|resident|neighbou?r|client|dad's|mum's|mom's)"
)
_AGE = re.compile(
    rf"(?i)(?:\b(?:aged?|turned|turning|at|is|was|of|'s|’s|i'm|i’m|im|i am)\s+(?P<a>{_OLD})\b"
    r"(?!\s*(?:%|mg|kg|lb|bpm|mmhg|°|f\b|c\b|degrees|/|\.\d|x|ml|percent|cm|mm))"
    rf"|\b(?P<b>{_OLD})(?:\s*(?:y/?o\b|yo\b|yrs?\b|years?\b|-years?-old|-year\b)|(?-i:[MF])\b)"
    rf"|\((?:age\s+)?(?P<c>{_OLD})\)"
    rf"|(?<=[{_LETTER}]),\s+(?P<d>{_OLD}),)"
)


def find_ages(text: str, allow: AllowList) -> Iterator[Span]:
    for match in _AGE.finditer(text):
        group = next(name for name in "abcd" if match.group(name))
        start, end = match.span(group)
        before = _before(text, match.start(), 30)
        if group == "a":
            cue = match.group()[: match.start(group) - match.start()].strip().lower()
            weak = cue in {"is", "was", "'s", "’s", "at", "of"}
            of_a_person = re.search(rf"\b{_PERSON}\b[^.!?\d]{{0,25}}$", before + cue)
            if weak and not of_a_person and not (cue == "at" and re.match(r"\s*,", text[end:])):
                continue
        if re.search(
            r"\b(?:fever|temperature|temp|above|below|over|under|up\s+to|until|by|after|before)\b\W*(?:age\s+)?$",
            before,
        ):
            continue  # 101F is a fever; "up to age 90" is a rule, not a person
        yield start, end, AGE


# --- addresses and postal codes -------------------------------------------------------------

_STREET_TYPES = (
    r"St|Street|Ave|Avenue|Rd|Road|Blvd|Boulevard|Ln|Lane|Dr|Drive|Ct|Court|Way|Pl|Place|Ter|Terrace|"
    r"Cres|Crescent|Pkwy|Parkway|Hwy|Highway|Cir|Circle|Sq|Square|Trail|Trl|Row|Close|Mews|Pike|Walk|Grove|Gardens"
)
_UNIT = r"(?:apt|apartment|suite|ste|unit|flat|fl|#|no\.?)\.?\s*#?[\w/-]+"
_STREET = re.compile(
    rf"(?:(?i:{_UNIT}),?\s+|(?i:unit|flat|apt|suite)\s+(?=\d{{1,5}}/))?"
    rf"\b\d{{1,5}}[A-Za-z]?(?:/\d{{1,5}})?\s+"
    rf"(?:(?:[NSEW]|North|South|East|West|n|s|e|w)\.?\s+)?"
    rf"(?:(?:[{_UPPER}0-9][\w'’.-]*|\d+(?:st|nd|rd|th))\s+){{0,3}}?"
    rf"(?:{_STREET_TYPES}|(?i:st|ave|rd|street|road|avenue|lane|drive|blvd))\b\.?"
    rf"(?:,?\s*(?i:{_UNIT}))?"
)
_STREET_PREFIXED = re.compile(
    rf"\b\d{{1,5}}\s+(?i:rue|calle|avenida|via|viale|avenue|boulevard|chemin|rua|carrer)\s+(?:[{_LETTER}'’-]+\s?){{1,4}}"
    rf"|\b[{_UPPER}][{_LOWER}]+(?:straße|strasse|weg|gasse|allee|platz|damm)\s+\d{{1,4}}[a-z]?"
)
_STREET_CUED = re.compile(
    rf"(?i:\b(?:live|lives|living|i'm|im|we're|at|address(?:\s+is)?:?)\s+(?:at\s+)?)(?P<value>\d{{1,5}}[A-Za-z]?\s+[{_UPPER}][{_LOWER}]+)(?=,)"
)
_POSTCODES = re.compile(
    r"\b[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}\b"  # UK
    r"|\b[A-Z]\d[A-Z]\s\d[A-Z]\d\b"  # Canada
    r"|(?<=\b(?:AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM"
    r"|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY) )\d{5}(?:-\d{4})?\b"
    r"|(?<=\b(?:NSW|VIC|QLD|TAS|ACT) )\d{4}\b"
)
_POSTCODE_CUED = re.compile(
    r"(?i:\b(?:zip(?:\s*code)?|postal\s+code|postcode|post\s+code|pin\s*code|plz|code\s+postal|"
    r"(?:live|living|i'm|im|we're|based|located)\s+in|near)\b)[\s:#]*(?P<value>\d{5}(?:-\d{4})?|\d{6}|[A-Z]\d[A-Z]\s?\d[A-Z]\d)\b"
)


def find_addresses(text: str, allow: AllowList) -> Iterator[Span]:
    streets: list[tuple[int, int]] = []
    for pattern in (_STREET, _STREET_PREFIXED):
        for match in pattern.finditer(text):
            value = match.group().rstrip(" ,")
            if allow.value_is_public(value) or allow.address_is_public(value) or institutional(text, match.start()):
                continue
            streets.append((match.start(), match.start() + len(value)))
    for match in _STREET_CUED.finditer(text):
        streets.append(match.span("value"))
    for start, end in streets:
        yield start, end, ADDRESS
        tail = re.match(
            rf"[,\s]+(?:[{_UPPER}][{_LETTER}.'-]+\s?){{0,3}},?\s*(?:[A-Z]{{2,3}}\s+)?(\d{{4,5}}(?:-\d{{4}})?)\b",
            text[end : end + 60],
        )
        if tail:
            yield end + tail.start(1), end + tail.end(1), ADDRESS
    for match in _POSTCODES.finditer(text):
        if not allow.postcode_is_public(match.group()) and not institutional(text, match.start()):
            yield match.start(), match.end(), ADDRESS
    for match in _POSTCODE_CUED.finditer(text):
        if not allow.postcode_is_public(match.group("value")):
            yield match.start("value"), match.end("value"), ADDRESS


# --- names ----------------------------------------------------------------------------------


def _word_list(name: str) -> frozenset[str]:
    text = resources.files("medqa_assets.privacy").joinpath(f"data/{name}").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


@cache
def first_names() -> frozenset[str]:
    """Given names that are not also common English words (see ``data/make_word_lists.py``)."""
    return _word_list("first_names.txt")


@cache
def common_words() -> frozenset[str]:
    """Words MedQuAD writes in lower case: capitalized, they start a sentence or a title, not a name."""
    return _word_list("common_words.txt") | NOT_NAMES


_NAME_WORD = rf"(?:O['’]|Mc|Mac|D['’])?[{_UPPER}][{_LOWER}]+(?:[-'’][{_UPPER}][{_LOWER}]+)?"
_NAME_CHAIN = rf"{_NAME_WORD}(?:\s(?:{_NAME_WORD}))" + "{0,3}"
# Capitalized words that follow a cue but are not names (besides MedQuAD's lower-case words).
NOT_NAMES = frozenset(
    [
        "i",
        "i'm",
        "im",
        "a",
        "an",
        "the",
        "my",
        "your",
        "our",
        "his",
        "her",
        "their",
        "its",
        "this",
        "that",
        "these",
        "those",
        "it",
        "he",
        "she",
        "they",
        "we",
        "you",
        "me",
        "him",
        "them",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "am",
        "do",
        "does",
        "did",
        "can",
        "could",
        "should",
        "would",
        "will",
        "may",
        "might",
        "must",
        "shall",
        "have",
        "has",
        "had",
        "not",
        "no",
        "yes",
        "ok",
        "okay",
        "so",
        "just",
        "also",
        "please",
        "thanks",
        "thank",
        "sorry",
        "fine",
        "good",
        "well",
        "great",
        "here",
        "there",
        "again",
        "new",
        "now",
        "today",
        "what",
        "when",
        "where",
        "why",
        "how",
        "who",
        "which",
        "if",
        "and",
        "or",
        "but",
        "because",
        "about",
        "after",
        "before",
        "for",
        "from",
        "in",
        "into",
        "of",
        "on",
        "to",
        "with",
        "at",
        "by",
        "as",
        "up",
        "out",
        "over",
        "under",
        "hi",
        "hello",
        "hey",
        "dear",
        "all",
        "any",
        "some",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "doctor",
        "doc",
        "nurse",
        "patient",
        "pt",
        "dr",
        "mr",
        "mrs",
        "ms",
        "mum",
        "mom",
        "dad",
        "father",
        "mother",
        "son",
        "daughter",
        "wife",
        "husband",
        "sister",
        "brother",
        "organisation",
        "organization",
        "foundation",
        "association",
        "society",
        "institute",
        "center",
        "centre",
        "network",
        "alliance",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "medicare",
        "medicaid",
        "nhs",
        "er",
        "ed",
        "icu",
        "gp",
        "hiv",
        "covid",
        "tylenol",
        "advil",
    ]
)
_EPONYM_AFTER = re.compile(
    rf"^(?:['’]s)?(?:\s+[{_UPPER}][\w'’-]*)*\s+(?i:disease|syndrome|sign|signs|score|scale|test|palsy|phenomenon|anomaly|"
    r"lymphoma|sarcoma|tumou?r|stages?|criteria|classification|cells?|reflex|maneuver|manoeuvre|procedure|operation|"
    r"clinic|university|hospital|center|centre|institute|foundation|county|college|school|medical|health|type|"
    r"street|avenue|road|drive|lane|boulevard|method|formula|equation|effect|law|rule|index|ulcer|disorder|"
    r"virus|vaccine|diet|ataxia|dystrophy|an(?:a)?emia|encephalopathy|fever|node|nodes|duct|esophagus|deficiency|"
    r"model|dysplasia|malformation|anomalies|cyst|nevus|lesion|fracture|contracture|neuropathy|myopathy)\b"
)
_TITLE = r"(?:Dr|Mr|Mrs|Ms|Mx|Miss|Prof|Sr|Sra|Mme|Herr|Frau)\.?"
_RELATION = (
    r"(?:daughter|son|wife|husband|partner|fianc[ée]e?|boyfriend|girlfriend|mom|mum|mother|dad|father|"
    r"sister|brother|aunt|auntie|uncle|grandson|granddaughter|grandma|grandpa|grandmother|grandfather|"
    r"nan|nana|granny|gran|nephew|niece|cousin|friend|kid|child|baby|twin|stepson|stepdaughter|"
    r"(?:mother|father|son|daughter|brother|sister)-in-law|carer|caregiver|neighbou?r|roommate)"
)
_SELF = (
    r"(?:my\s+name\s+is|my\s+name's|name\s+is|i\s+am|i'm|i’m|this\s+is|it's\s+me|it’s\s+me|ich\s+bin|je\s+suis"
    r"|je\s+m'appelle|me\s+llamo|soy|mi\s+nombre\s+es)"
)
_CUE_BEFORE_RELATION = re.compile(
    r"(?:\b(?:my|our|your|his|her|their|pt's|pt’s|patient's|patient’s|contact|with|for|and)\s+|(?:^|[.!?:;—–(-]\s*))$",
    re.IGNORECASE,
)
# Each cue is its own pattern, so that one cue cannot hide another ("attention Dr. Rosen").
_TITLE_CUE = re.compile(rf"\b{_TITLE}\s+(?P<value>{_NAME_CHAIN})")
_RELATION_CUE = re.compile(rf"\b(?i:{_RELATION}),?\s+(?P<value>{_NAME_CHAIN})")
_LABEL_CUE = re.compile(
    rf"\b(?:Pt|pt|Patient|patient|PATIENT|Deceased|DECEASED|Intake|Registration|Guarantor|Resident|Caller|chart\s+of\s+pt)"
    rf"(?::\s+(?P<value>{_NAME_CHAIN})|\s+(?P<full>{_NAME_WORD}(?:\s{_NAME_CHAIN}|(?=\s*[(,]))))"
    rf"|\b(?:[Nn]ame(?:\s+on\s+(?:the\s+)?card)?|NAME)[:,]?\s+(?P<named>{_NAME_CHAIN})"
)
# Each cue is its own pattern, so that one cue cannot hide another ("attention Dr. Rosen"); a
# pattern runs only when its trigger (``scrub.TRIGGERS``, tag ``name.<cue>``) matched the text.
NAME_CUE_PATTERNS: dict[str, tuple[re.Pattern[str], ...]] = {
    "title": (_TITLE_CUE,),
    "relation": (_RELATION_CUE,),
    "self": (re.compile(rf"\b(?i:{_SELF}),?\s+(?P<value>{_NAME_CHAIN})"),),
    "greeting": (
        re.compile(
            rf"\b(?:Hi|Hello|Hey|Dear|Thanks|Thank\s+you|Namaste|Bonjour|Hola|Hallo|Hiya),?\s+(?P<value>{_NAME_CHAIN})"
        ),
        re.compile(rf"\b(?:Hi|Hello|Hey|Dear|Thanks)\s+{_NAME_WORD}\s+(?:and|&)\s+(?P<value>{_NAME_CHAIN})"),
    ),
    "label": (_LABEL_CUE,),
    "lead": (
        re.compile(
            rf"(?:^|[.;:—–-]\s+)(?P<value>{_NAME_CHAIN}),\s+"
            r"(?=\d{1,3}\s*(?:y/o|yo|[MF]\b|,)|MRN|DOB|SSN|DL\b|aged?\b|[Vv]ersicherten)"
        ),
    ),
    "pair": (re.compile(rf"(?P<value>{_NAME_WORD})\s+and\s+(?:I|me)\b"),),
}
NAME_CUES = frozenset(NAME_CUE_PATTERNS) | {"lower", "vocative", "verb"}
_HISTORICAL = re.compile(
    r"\b(?:named\s+(?:after|for)|described\s+by|discovered\s+by|identified\s+by|headed\s+by|led\s+by|"
    r"developed\s+by|first\s+\w+\s+by|according\s+to)\s*$",
    re.IGNORECASE,
)


def _historical(text: str, start: int, end: int) -> bool:
    """A physician named in the history of medicine ("named after Dr. Alois Alzheimer", "In 1906, Dr. ...")."""
    if re.match(r"\s+of\s+(?:the\s+)?[A-Z]", text[end : end + 12]):
        return True  # named with an institution: "Dr. Daniel Kastner of the National Human Genome ..."
    return bool(_HISTORICAL.search(text[max(0, start - 30) : start])) or bool(
        re.search(r"(?<![/.\d-])1(?:[5-8]\d|9[0-5])\d(?![/\d-])", _sentence(text, start, end))
    )


_NAME_LABEL_LOWER = re.compile(rf"(?i:\b(?:pt|patient|name)\s*:)\s+(?P<value>[{_LOWER}]+(?:\s[{_LOWER}]+)?)\b")
_NAME_SELF_LOWER = re.compile(rf"\b(?:im|i'm|i am|my name is|hi|hello|hey|thanks)\s+(?=(?P<value>[{_LOWER}]+)\b)")
_NAME_VOCATIVE = re.compile(rf",\s+(?P<value>{_NAME_WORD})(?=[.!?]|$)")
_VOCATIVE_CUE = re.compile(
    r"\b(?:thanks|thank you|sorry|hi|hello|dear|received|question|welcome|congratulations)\b", re.I
)
_NAME_THEN_VERB = re.compile(
    rf"(?:^(?=[{_LOWER}])|(?<=[\s(\"“])(?=[{_UPPER}]))(?P<value>[{_UPPER}]?[{_LOWER}]{{2,}})(?=(?:['’]s\s+[{_LOWER}])|\s+(?:has|had|is|was|may|might|needs|becomes|"
    r"should|will|can|gets|got|said|says|wants|takes|keeps|feels|seems|started|keeps)\b)"
)
_PREPOSITION_BEFORE = re.compile(r"\b(?:in|of|to|from|at|the|a|an|by|near|into|on|for|with|about)\s+$", re.IGNORECASE)


def _is_name_word(word: str) -> bool:
    folded = word.lower().rstrip("'’s") if re.search(r"['’]s$", word) else word.lower()
    return folded not in common_words() or folded in first_names()


def _trim_name(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Drop words that are not names from both ends of a matched chain (and a trailing 's)."""
    words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text[start:end])]
    while words and text[words[-1][0] : words[-1][1]].lower().rstrip("'’s") in NOT_NAMES:
        words.pop()
    while words and not _is_name_word(text[words[0][0] : words[0][1]]):
        words.pop(0)
    if not words or text[words[0][0] : words[0][1]].isupper():
        return None
    start, end = words[0][0], words[-1][1]
    if re.search(r"['’]s$", text[start:end]):
        end -= 2
    if _EPONYM_AFTER.match(text[end : end + 80]):
        return None
    return start, end


def find_names(text: str, allow: AllowList, cues: frozenset[str] | set[str] = NAME_CUES) -> Iterator[Span]:
    """Names after a cue; ``cues``: which kinds of cue to look for (those whose trigger matched)."""
    historical: set[str] = set()
    patterns = [p for cue, group in NAME_CUE_PATTERNS.items() if cue in cues for p in group]
    for pattern in patterns:
        for match in pattern.finditer(text):
            group = next((g for g in ("named", "full") if match.groupdict().get(g)), "value")
            if pattern is _RELATION_CUE and not _CUE_BEFORE_RELATION.search(
                text[max(0, match.start() - 20) : match.start()]
            ):
                continue
            trimmed = _trim_name(text, match.start(group), match.end(group))
            if not trimmed or allow.value_is_public(text[trimmed[0] : trimmed[1]]):
                continue
            if pattern is _TITLE_CUE and (
                _historical(text, match.start(), trimmed[1]) or text[trimmed[0] : trimmed[1]].split()[-1] in historical
            ):
                historical.add(text[trimmed[0] : trimmed[1]].split()[-1])
                continue
            if group == "named" and re.search(
                r"\b(?:brand|generic|trade|drug|chemical|common|scientific|product)\s+$",
                text[max(0, match.start() - 12) : match.start()],
                re.I,
            ):
                continue
            yield trimmed[0], trimmed[1], NAME
    names = first_names()
    for match in _NAME_LABEL_LOWER.finditer(text) if "lower" in cues else ():
        if match.group("value").split()[0] not in common_words():
            yield match.start("value"), match.end("value"), NAME
    for match in _NAME_SELF_LOWER.finditer(text) if "lower" in cues else ():
        if match.group("value") in names:
            yield match.start("value"), match.end("value"), NAME
    for match in _NAME_VOCATIVE.finditer(text) if "vocative" in cues else ():
        word = match.group("value")
        sentence = text[max(0, text.rfind(".", 0, match.start()) + 1) : match.start()]
        if _is_name_word(word) and _VOCATIVE_CUE.search(sentence):
            yield match.start("value"), match.end("value"), NAME
    for match in _NAME_THEN_VERB.finditer(text) if "verb" in cues else ():
        word = match.group("value")
        if (
            word.lower() not in names
            or (word[0].islower() and match.start() > 0)
            or _EPONYM_AFTER.match(text[match.end() : match.end() + 80])
        ):
            continue
        if _PREPOSITION_BEFORE.search(text[max(0, match.start() - 8) : match.start()]) or re.search(
            r"\b(?:st\.?|saint|san|santa)\s+$", text[max(0, match.start() - 7) : match.start()], re.IGNORECASE
        ):
            continue
        yield match.start("value"), match.end("value"), NAME
    for start, end in find_person_names(text):  # only with MEDQA_PII_NER_MODEL
        trimmed = _trim_name(text, start, end)
        if trimmed and not allow.value_is_public(text[trimmed[0] : trimmed[1]]):
            yield trimmed[0], trimmed[1], NAME


RECOGNIZERS: dict[str, Callable[[str, AllowList], Iterator[Span]]] = {
    EMAIL: find_emails,
    URL: find_urls,
    IP: find_ips,
    CARD: find_cards,
    SSN: find_ssns,
    ID_NUMBER: find_id_numbers,
    DEVICE_ID: find_device_ids,
    PHONE: find_phones,
    DATE: find_dates,
    AGE: find_ages,
    ADDRESS: find_addresses,
    NAME: find_names,
}

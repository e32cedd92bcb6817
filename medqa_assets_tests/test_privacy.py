"""The personal-data scrubber: floors on the hand-labelled set, every kind, public information kept,
the allow-list setting, records scrubbed field by field."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from medqa_assets.medquad.sources import bundled_dir
from medqa_assets.privacy import scrub
from medqa_assets.privacy.evaluation import changed_texts, load_labelled, score
from medqa_assets.privacy.recognizers import KINDS, PLACEHOLDERS
from medqa_assets.settings import ConfigurationError

LABELLED = Path(__file__).parent / "data" / "pii" / "labelled.jsonl"


@pytest.fixture(scope="module")
def labelled_scores():
    return score(load_labelled(LABELLED))


def test_labelled_set_recall_overall(labelled_scores) -> None:
    assert sum(labelled_scores.labelled.values()) >= 400
    assert labelled_scores.recall() >= 0.97, labelled_scores.misses


@pytest.mark.parametrize("kind", KINDS)
def test_labelled_set_floors_per_kind(labelled_scores, kind: str) -> None:
    assert labelled_scores.labelled[kind] >= 25, f"the labelled set needs 25 values of {kind}"
    assert labelled_scores.recall(kind) >= 0.9, [m for m in labelled_scores.misses if f" {kind}:" in m]
    assert labelled_scores.precision(kind) >= 0.95, [m for m in labelled_scores.false_alarms if f" {kind}:" in m]


# One sentence per kind and form, with the value that must go; written for these tests.
EXAMPLES = [
    ("name", "Hello, my name is Gwen Abara and my knee hurts.", "Gwen Abara"),
    ("name", "My son Tobias has a rash on his legs.", "Tobias"),
    ("name", "Dr. Okwuosa said my A1c is fine.", "Okwuosa"),
    ("name", "Pt: harriet quinn, 71F, fall at home.", "harriet quinn"),
    ("address", "We live at 2218 Birchwood Ave, can you find a clinic?", "2218 Birchwood Ave"),
    ("address", "Send it to 14 Larkspur Close, Bristol BS8 1QT please.", "BS8 1QT"),
    ("address", "Which hospitals are near 60614?", "60614"),
    ("date", "She was admitted on 03/02/2024 with pneumonia.", "03/02/2024"),
    ("date", "My dad was born on July 9, 1941.", "July 9, 1941"),
    ("age", "My grandmother is 96 and has a bad cough.", "96"),
    ("age", "Pt is a 92 y/o male with CHF.", "92"),
    ("phone", "Please call me back at (503) 555-0177.", "(503) 555-0177"),
    ("phone", "My mobile is +44 7700 900456 if you need it.", "+44 7700 900456"),
    ("email", "Write to me at tess.marlow77@gmail.com please.", "tess.marlow77@gmail.com"),
    ("ssn", "My social security number is 318-44-2907.", "318-44-2907"),
    ("id_number", "My MRN is 00771245, can you look it up?", "00771245"),
    ("id_number", "Medicare number 4TR8-JK2-LM55 was rejected.", "4TR8-JK2-LM55"),
    ("device_id", "My insulin pump serial is PZ4418823K and it beeps.", "PZ4418823K"),
    ("device_id", "Our car VIN is 1HGCM82633A004352, for the mileage form.", "1HGCM82633A004352"),
    (
        "url",
        "My blog is https://www.facebook.com/tess.marlow.77 if you want it.",
        "https://www.facebook.com/tess.marlow.77",
    ),
    (
        "url",
        "Results: https://portal.example-labs.com/view?patient_id=88123",
        "https://portal.example-labs.com/view?patient_id=88123",
    ),
    ("ip", "The portal blocks my IP 81.92.14.207 for some reason.", "81.92.14.207"),
    ("ip", "It logged in from 2001:db8:4f2a::17 last night.", "2001:db8:4f2a::17"),
    ("card", "Charge my visa 4111 1111 1111 1111 for the copay.", "4111 1111 1111 1111"),
]
KEPT = [
    "Take ibuprofen 400 mg every 6 to 8 hours; do not exceed 1200 mg a day.",
    "Call the NIDDK Health Information Center at 1-800-860-8747 or visit www.niddk.nih.gov.",
    "E-mail nihinfo@od.nih.gov for questions about NIH research.",
    "A blood pressure of 120/80 mm Hg is normal; an HbA1c of 6.5% or higher indicates diabetes.",
    "Parkinson disease was first described in 1817. Huntington disease is inherited.",
    "The ICD-10 code E11.9 means type 2 diabetes without complications.",
    "My 85 year old mother has Alzheimer's disease and forgets her pills.",
    "Is a TSH of 4.5 mIU/L high? My grandmother had thyroid disease.",
    "The FDA approved the vaccine in December 2023 for adults 60 and older.",
    "Mutations in the BRCA1 gene on chromosome 17 raise the risk of breast cancer.",
]


@pytest.mark.parametrize(("kind", "text", "value"), EXAMPLES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(EXAMPLES)])
def test_each_kind_is_replaced_by_its_placeholder(kind: str, text: str, value: str) -> None:
    scrubbed, counts = scrub.scrub_text(text)
    assert value not in scrubbed, scrubbed
    assert PLACEHOLDERS[kind] in scrubbed, scrubbed
    assert counts[kind] >= 1


@pytest.mark.parametrize("text", KEPT)
def test_public_health_information_is_kept(text: str) -> None:
    assert scrub.scrub_text(text) == (text, {})


def test_medquad_is_left_almost_untouched() -> None:
    """MedQuAD is public: its agency contacts, eponyms, doses and dates are not personal data."""
    frame = pd.read_parquet(bundled_dir() / "medquad.parquet", columns=["question", "answer"])
    for column in ("question", "answer"):
        texts = frame[column].dropna().drop_duplicates().tolist()
        changed, counts = changed_texts(texts)
        assert changed / len(texts) <= 0.0005, (column, changed, counts)


def test_the_allowlist_setting_keeps_a_public_number(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "Call our clinic's nurse line at 503-555-0199 after 5pm."
    assert "[PHONE]" in scrub.scrub_text(text)[0]
    monkeypatch.setenv("MEDQA_PII_ALLOWLIST", json.dumps(["503-555-0199", "clinic.example.org"]))
    scrub.default_allowlist.cache_clear()
    try:
        assert scrub.scrub_text(text)[0] == text
        assert scrub.scrub_text("See https://clinic.example.org/patient-guide for more.")[1] == {}
    finally:
        monkeypatch.delenv("MEDQA_PII_ALLOWLIST")
        scrub.default_allowlist.cache_clear()


def test_a_malformed_allowlist_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDQA_PII_ALLOWLIST", "1-800-555-0100")
    scrub.default_allowlist.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match="MEDQA_PII_ALLOWLIST"):
            scrub.default_allowlist()
    finally:
        monkeypatch.delenv("MEDQA_PII_ALLOWLIST")
        scrub.default_allowlist.cache_clear()


def test_every_string_of_a_record_is_scrubbed_field_by_field() -> None:
    record = {
        "question": "my email is tess.marlow77@gmail.com",
        "symptoms": ["fever", "call me at 503-555-0177"],
        "user": {"name": "Tess", "note": "SSN 318-44-2907"},
        "latency_ms": 12.5,
    }
    stored = scrub.scrub_record_text(json.dumps(record))
    for secret in ("tess.marlow77@gmail.com", "503-555-0177", "318-44-2907"):
        assert secret not in stored
    parsed = json.loads(stored)
    assert parsed["latency_ms"] == 12.5 and parsed["symptoms"][0] == "fever"
    broken = '{"question": "ssn 318-44-2907", "answer": '  # not JSON: scrubbed as text
    assert "318-44-2907" not in scrub.scrub_record_text(broken)


def test_a_repeated_string_is_scrubbed_once_and_counted_per_occurrence() -> None:
    texts = ["write to tess.marlow77@gmail.com"] * 3 + [None, "no personal data here", ""]
    scrubbed, counts = scrub.scrub_texts(texts)
    assert scrubbed[:3] == ["write to [EMAIL]"] * 3
    assert scrubbed[3:] == [None, "no personal data here", ""]
    assert counts["email"] == 3
    array = pa.array(["plain text"] * 4, type=pa.large_string())
    assert scrub.scrub_array(array)[0] is array  # nothing to change: the same array back


def test_the_dashboard_scrubs_log_text_it_shows_even_from_an_older_store() -> None:
    from dashboard import data

    frame = pd.DataFrame({"record": ['{"question": "SSN 318-44-2907"}', None], "reason": ["non_answer", "x"]})
    shown = data.scrubbed(frame, ["record"])
    assert "318-44-2907" not in shown["record"][0] and "[SSN]" in shown["record"][0]
    assert shown["record"][1] is None and list(shown["reason"]) == ["non_answer", "x"]


@pytest.fixture
def ner_model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real spaCy pipeline on disk (a blank English one with an entity ruler: no model can be
    downloaded here), loaded through MEDQA_PII_NER_MODEL exactly like en_core_web_sm would be."""
    import spacy

    from medqa_assets.privacy.ner import ner_model

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Oyelami"}, {"label": "PERSON", "pattern": "Mateo"}])
    nlp.to_disk(tmp_path / "model")
    monkeypatch.setenv("MEDQA_PII_NER_MODEL", str(tmp_path / "model"))
    ner_model.cache_clear()
    scrub.forget_clean()
    yield tmp_path / "model"
    monkeypatch.delenv("MEDQA_PII_NER_MODEL")
    ner_model.cache_clear()
    scrub.forget_clean()


def test_an_installed_ner_model_finds_names_without_a_cue(ner_model_dir: Path) -> None:
    texts = ["Oyelami has had a fever for 3 days", "Call your pediatrician if Mateo becomes very sleepy."]
    scrubbed, counts = scrub.scrub_texts(texts)
    assert scrubbed == ["[NAME] has had a fever for 3 days", "Call your pediatrician if [NAME] becomes very sleepy."]
    assert counts["name"] == 2


def test_without_a_model_those_names_need_a_cue() -> None:
    for text in ("Oyelami has had a fever for 3 days", "Call your pediatrician if Mateo becomes very sleepy."):
        assert scrub.scrub_text(text)[0] == text


def test_a_missing_ner_model_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from medqa_assets.privacy.ner import ner_model

    monkeypatch.setenv("MEDQA_PII_NER_MODEL", "en_core_web_nonexistent")
    ner_model.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match="MEDQA_PII_NER_MODEL"):
            scrub.scrub_text("hello")
    finally:
        monkeypatch.delenv("MEDQA_PII_NER_MODEL")
        ner_model.cache_clear()

"""Names found by a named-entity recognizer, where one is installed (``MEDQA_PII_NER_MODEL``).

The rule recognizers find names after a cue ("my name is", "Dr.", "my daughter ..."); a
statistical model also finds the rest ("jessica has had a fever"). No model can be downloaded on
the platform's own machines, so this is optional: install spaCy (``pip install -e ".[ner]"``) and a
model (``python -m spacy download en_core_web_sm``, or a model directory copied in), then set
``MEDQA_PII_NER_MODEL=en_core_web_sm`` (or the directory). Every distinct string then goes through
the model, which costs far more than the rules (see the README's Privacy section).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

from medqa_assets.settings import PII_NER_MODEL_VAR, ConfigurationError, Settings

PERSON_LABELS = frozenset({"PERSON", "PER"})


@cache
def ner_model() -> Any | None:
    """The configured spaCy pipeline, loaded once per process; None when none is configured."""
    name = Settings.from_env().pii_ner_model
    if not name:
        return None
    try:
        import spacy
    except ImportError:
        raise ConfigurationError(
            f'{PII_NER_MODEL_VAR}={name!r} needs spaCy: pip install -e ".[ner]", or unset {PII_NER_MODEL_VAR}'
        ) from None
    try:
        return spacy.load(name, exclude=["parser", "lemmatizer", "textcat"])
    except OSError as error:
        raise ConfigurationError(
            f"{PII_NER_MODEL_VAR}={name!r} is not an installed spaCy model or a model directory "
            f"({str(error).splitlines()[0][:160]}); install one, e.g. python -m spacy download en_core_web_sm"
        ) from None


def find_person_names(text: str) -> Iterator[tuple[int, int]]:
    """Character spans the model labels as a person."""
    model = ner_model()
    if model is None:
        return
    for entity in model(text).ents:
        if entity.label_ in PERSON_LABELS:
            yield entity.start_char, entity.end_char

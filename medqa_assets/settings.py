"""The one place where the platform reads its configuration from the environment.

Every variable here is part of the public contract (``shared/contracts.md`` section 1).
Bad values fail fast with a message that names the variable to change.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

STORE_URL_VAR = "MEDQA_STORE_URL"
S3_ENDPOINT_VAR = "MEDQA_S3_ENDPOINT_URL"
PRODUCTION_SETS_VAR = "MEDQA_PRODUCTION_SETS"
MEDQUAD_SOURCE_VAR = "MEDQA_MEDQUAD_SOURCE"
MLFLOW_TRACKING_URI_VAR = "MLFLOW_TRACKING_URI"
SENSOR_SETTLE_SECONDS_VAR = "MEDQA_SENSOR_SETTLE_SECONDS"
RETIRE_AFTER_SECONDS_VAR = "MEDQA_RETIRE_AFTER_SECONDS"
NON_ANSWER_TEXTS_VAR = "MEDQA_NON_ANSWER_TEXTS"
PII_ALLOWLIST_VAR = "MEDQA_PII_ALLOWLIST"
RAW_RETENTION_DAYS_VAR = "MEDQA_RAW_RETENTION_DAYS"
PII_NER_MODEL_VAR = "MEDQA_PII_NER_MODEL"

DEFAULT_STORE_URL = "object_store"
DEFAULT_PRODUCTION_SETS = 5
DEFAULT_MEDQUAD_SOURCE = "bundled"
DEFAULT_SETTLE_SECONDS = 5.0
# A consumed raw file is deleted only after nobody wrote to it for this long: a writer holding
# the file open may still append, and those bytes must reach a later version.
DEFAULT_RETIRE_AFTER_SECONDS = 600.0
# Raw inputs (snapshots of production logs, quarantined files) are deleted after this many days.
DEFAULT_RAW_RETENTION_DAYS = 30


class ConfigurationError(ValueError):
    """A setting is missing or malformed; the message names the variable to change."""


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a whole number; set {name} to e.g. {default}") from None
    if value < 1:
        raise ConfigurationError(f"{name}={value} must be at least 1; set {name} to e.g. {default}")
    return value


def _non_negative_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number of seconds; set {name} to e.g. {default}") from None
    if value < 0:
        raise ConfigurationError(f"{name}={value} must not be negative")
    return value


def _text_list(name: str, example: str = "Timed out waiting ...") -> tuple[str, ...] | None:
    """A JSON array of strings, e.g. '["Timed out waiting for model response.", "Service busy"]'."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigurationError(f"{name} must be a JSON array of strings, e.g. {name}='[\"{example}\"]'")
    return tuple(value)


@dataclass(frozen=True)
class Settings:
    """A snapshot of the platform's environment variables."""

    store_url: str = DEFAULT_STORE_URL
    s3_endpoint_url: str | None = None
    production_sets: int = DEFAULT_PRODUCTION_SETS
    medquad_source: str = DEFAULT_MEDQUAD_SOURCE
    mlflow_tracking_uri: str | None = None
    sensor_settle_seconds: float = DEFAULT_SETTLE_SECONDS
    retire_after_seconds: float = DEFAULT_RETIRE_AFTER_SECONDS
    non_answer_texts: tuple[str, ...] | None = None  # None: the platform's default list
    pii_allowlist: tuple[str, ...] = ()  # public numbers, domains, e-mails kept besides the defaults
    raw_retention_days: int = DEFAULT_RAW_RETENTION_DAYS
    pii_ner_model: str | None = None  # a spaCy model (package name or directory) that finds names too
    # Credentials are read here only so they can be handed to the S3 client; never logged.
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            store_url=os.environ.get(STORE_URL_VAR, "").strip() or DEFAULT_STORE_URL,
            s3_endpoint_url=os.environ.get(S3_ENDPOINT_VAR, "").strip() or None,
            production_sets=_positive_int(PRODUCTION_SETS_VAR, DEFAULT_PRODUCTION_SETS),
            medquad_source=os.environ.get(MEDQUAD_SOURCE_VAR, "").strip() or DEFAULT_MEDQUAD_SOURCE,
            mlflow_tracking_uri=os.environ.get(MLFLOW_TRACKING_URI_VAR, "").strip() or None,
            sensor_settle_seconds=_non_negative_float(SENSOR_SETTLE_SECONDS_VAR, DEFAULT_SETTLE_SECONDS),
            retire_after_seconds=_non_negative_float(RETIRE_AFTER_SECONDS_VAR, DEFAULT_RETIRE_AFTER_SECONDS),
            non_answer_texts=_text_list(NON_ANSWER_TEXTS_VAR),
            pii_allowlist=_text_list(PII_ALLOWLIST_VAR, "1-800-555-0100") or (),
            raw_retention_days=_positive_int(RAW_RETENTION_DAYS_VAR, DEFAULT_RAW_RETENTION_DAYS),
            pii_ner_model=os.environ.get(PII_NER_MODEL_VAR, "").strip() or None,
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
        )

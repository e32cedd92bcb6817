"""Object keys of the store, relative to its root (``shared/contracts.md`` section 2).

Everything that reads or writes the store takes its keys from here, so the layout that the
training code and the other teams depend on is written down exactly once.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime

MEDQUAD_RAW = "data/medquad-raw/medquad.parquet"
MEDQUAD_CLEAN = "data/medquad-clean/medquad_clean.parquet"

SPLIT_NAMES: tuple[str, ...] = ("training", "validation", "evaluation")
SPLIT_KEYS: dict[str, str] = {
    "training": "data/dataset-split/training/training.json",
    "validation": "data/dataset-split/validation/validation.json",
    "evaluation": "data/dataset-split/evaluation/testing.json",
}
SPLIT_METADATA = "data/dataset-split/metadata.json"

PRODUCTION_SETS_PREFIX = "data/production/sets/"
RAW_LOGS_PREFIX = "data/production/retraining_data_raw/"
CLAIMS_PREFIX = RAW_LOGS_PREFIX + "_claims/"
TRANSFORMED_PREFIX = "data/production/retraining_data_transformed/"
VERSION_TRACKER = TRANSFORMED_PREFIX + "version_tracker.txt"
ARCHIVE_PREFIX = "data/production/production_data_archive/"
QUARANTINE_PREFIX = "data/production/retraining_data_quarantine/"

_VERSION_RE = re.compile(r"^v([1-9][0-9]*)$")


def production_set_name(number: int) -> str:
    return f"set{number}"


def production_set_key(name: str) -> str:
    return f"{PRODUCTION_SETS_PREFIX}{name}.json"


def version_name(number: int) -> str:
    return f"v{number}"


def version_number(name: str) -> int:
    """``"v12"`` -> 12; anything else is not a version."""
    match = _VERSION_RE.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a retraining version name (v1, v2, ...)")
    return int(match.group(1))


def is_version_name(name: str) -> bool:
    return bool(_VERSION_RE.match(name))


def retraining_data_key(version: str) -> str:
    return f"{TRANSFORMED_PREFIX}{version}/retraining_data.json"


def retraining_metadata_key(version: str) -> str:
    return f"{TRANSFORMED_PREFIX}{version}/metadata.json"


def manifest_key(version: str) -> str:
    """The claim of a version: which raw files (with sizes and sha256) make it up."""
    return f"{TRANSFORMED_PREFIX}{version}/manifest.json"


def claim_key(version: str) -> str:
    """An open claim: present from the sensor's tick until the version is complete."""
    return f"{CLAIMS_PREFIX}{version}.json"


def archive_prefix(version: str) -> str:
    return f"{ARCHIVE_PREFIX}{version}/"


def quarantine_prefix(version: str) -> str:
    return f"{QUARANTINE_PREFIX}{version}/"


def object_key_for_asset(asset_path: list[str]) -> str:
    """Where the offline IO manager stores an asset (by its key path)."""
    name = "/".join(asset_path)
    if name == "medquad_raw":
        return MEDQUAD_RAW
    if name == "medquad_clean":
        return MEDQUAD_CLEAN
    if len(asset_path) == 2 and asset_path[0] == "dataset_split" and asset_path[1] in SPLIT_KEYS:
        return SPLIT_KEYS[asset_path[1]]
    if len(asset_path) == 2 and asset_path[0] == "production_sets":
        return production_set_key(asset_path[1])
    raise KeyError(f"no object key is defined for asset {name!r}")


_UNSAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_object_name(name: str) -> str:
    """A file name made safe as the last part of a key: no separators, spaces or ``..``."""
    cleaned = _UNSAFE_NAME_RE.sub("_", os.path.basename(name.replace("\\", "/"))).strip("._")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    return cleaned or "log"


def new_raw_log_key(original_name: str, when: datetime | None = None) -> str:
    """A key under ``retraining_data_raw/`` that sorts by time and keeps the original name."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    stamp = when.strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{RAW_LOGS_PREFIX}{stamp}-{uuid.uuid4().hex[:8]}-{safe_object_name(original_name)}"

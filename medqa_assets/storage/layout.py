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
TRANSFORMED_PREFIX = "data/production/retraining_data_transformed/"
VERSION_TRACKER = TRANSFORMED_PREFIX + "version_tracker.txt"
ARCHIVE_PREFIX = "data/production/production_data_archive/"
QUARANTINE_PREFIX = "data/production/retraining_data_quarantine/"
# The platform's own coordination state. Serving apps write under raw/ only, so nothing they
# write can pose as a claim or a ledger entry.
CONTROL_PREFIX = "data/production/retraining_control/"
CLAIMS_PREFIX = CONTROL_PREFIX + "claims/"
LEDGER_KEY = CONTROL_PREFIX + "ledger.json"
MAX_NAME_BYTES = 255  # one path segment, on every file system the store runs on

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


def identities_key(version: str) -> str:
    """The identities (16 bytes each, sorted) of every record version N accounted for."""
    return f"{TRANSFORMED_PREFIX}{version}/identities.bin"


def question_fingerprints_key(version: str) -> str:
    """The fingerprints (8 bytes each, sorted, unique) of the questions version N holds."""
    return f"{TRANSFORMED_PREFIX}{version}/questions.bin"


def untouched_evaluation_key(version: str) -> str:
    """The evaluation rows no version published up to N holds a question of (JSON Lines)."""
    return f"{TRANSFORMED_PREFIX}{version}/evaluation_untouched.json"


def manifest_key(version: str) -> str:
    """The claim of a version: which raw files (with sizes and sha256) make it up."""
    return f"{TRANSFORMED_PREFIX}{version}/manifest.json"


def claim_key(version: str) -> str:
    """A version's claim: taken by its run's first step, it reserves N and lists its files."""
    return f"{CLAIMS_PREFIX}{version}.json"


def raw_relative_path(raw_key: str) -> str:
    """The part of a raw key below ``retraining_data_raw/`` (kept in archive and quarantine)."""
    if not is_normalized_raw_key(raw_key):
        raise ValueError(f"{raw_key!r} is not a normalized key under {RAW_LOGS_PREFIX}")
    return raw_key[len(RAW_LOGS_PREFIX) :]


def archived_key(version: str, raw_key: str) -> str:
    """Where version N keeps what it consumed of a raw file: its path below raw/, so names never collide."""
    return archive_prefix(version) + raw_relative_path(raw_key)


def quarantined_file_key(version: str, raw_key: str) -> str:
    return quarantine_prefix(version) + "files/" + raw_relative_path(raw_key)


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a normalized store key (``None`` if it is one)."""
    if not key or key.startswith("/"):
        return "absolute or empty key"
    if "\\" in key or "\x00" in key:
        return "backslash or NUL in the name"
    for part in key.split("/"):
        if part in ("", ".", ".."):
            return "empty, '.' or '..' path segment"
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            return f"a path segment longer than {MAX_NAME_BYTES} bytes"
    return None


def is_normalized_raw_key(key: str) -> bool:
    """True for a key a serving app may have written: below raw/, normalized, not a temporary name."""
    return (
        key.startswith(RAW_LOGS_PREFIX)
        and len(key) > len(RAW_LOGS_PREFIX)
        and key_problem(key) is None
        and not key.rsplit("/", 1)[-1].startswith(".tmp-")
    )


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
    prefix = f"{when.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:8]}-"
    name = safe_object_name(original_name)
    room = MAX_NAME_BYTES - len(prefix)
    if len(name) > room:  # keep the start and the extension of a long name
        stem, dot, extension = name.rpartition(".")
        extension = f".{extension}" if dot and len(extension) <= 16 else ""
        name = name[: room - len(extension)] + extension
    return f"{RAW_LOGS_PREFIX}{prefix}{name}"

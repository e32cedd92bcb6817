"""The retraining loop's own state: claims, the consumption ledger and the version tracker.

Everything here lives under ``retraining_control/`` (or, for published versions, next to their
output), never under ``retraining_data_raw/``: serving apps write raw/, so whatever is there is
input, never instruction. Every control document is validated when read; a malformed one is
reported and left aside, never trusted and never fatal.

- A *claim* ``retraining_control/claims/vN.json`` is created exclusively by version N's run: it
  reserves N and lists the raw files the sensor decided on. When N is published the claim moves
  to ``retraining_data_transformed/vN/claim.json``.
- The *ledger* records, per raw file still in raw/, how many of its bytes were consumed and by
  which version, with a fingerprint of what was consumed: a file that keeps growing is taken by
  byte range, a file rewritten in place is taken again whole.
- The *tracker* only moves forward, by compare-and-set, and only to versions with rows.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any

from medqa_assets.storage.layout import (
    CLAIMS_PREFIX,
    LEDGER_KEY,
    TRANSFORMED_PREFIX,
    VERSION_TRACKER,
    claim_key,
    is_normalized_raw_key,
    is_version_name,
    version_number,
)
from medqa_assets.storage.object_store import ObjectStore


class MalformedControl(ValueError):
    """A control document that does not have the shape the platform writes."""


@dataclass(frozen=True)
class DecidedFile:
    """A raw file as the sensor saw it when it decided: its key, size and change token."""

    key: str
    size: int
    token: str | None

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "token": self.token}


@dataclass(frozen=True)
class Decision:
    """What the sensor decided: version N is made of these files. Travels in the run's config."""

    decision_id: str
    version: str
    decided_at: str
    files: tuple[DecidedFile, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "version": self.version,
            "decided_at": self.decided_at,
            "files": [f.as_json() for f in self.files],
        }

    @property
    def keys(self) -> list[str]:
        return [f.key for f in self.files]

    @classmethod
    def from_json(cls, body: Any, expected_version: str | None = None) -> Decision:
        """Validate a decision or claim body; raises :class:`MalformedControl` naming what is wrong."""
        if not isinstance(body, dict):
            raise MalformedControl("not a JSON object")
        version = body.get("version")
        if not isinstance(version, str) or not is_version_name(version):
            raise MalformedControl(f"version {version!r} is not v1, v2, ...")
        if expected_version is not None and version != expected_version:
            raise MalformedControl(f"names {version}, expected {expected_version}")
        decision_id, decided_at, files = body.get("decision_id"), body.get("decided_at"), body.get("files")
        if not isinstance(decision_id, str) or not decision_id or not isinstance(decided_at, str):
            raise MalformedControl("decision_id or decided_at missing")
        if not isinstance(files, list) or not files:
            raise MalformedControl("no files listed")
        decided = []
        for entry in files:
            if not isinstance(entry, dict):
                raise MalformedControl("a file entry is not an object")
            key, size, token = entry.get("key"), entry.get("size"), entry.get("token")
            if not isinstance(key, str) or not is_normalized_raw_key(key):
                raise MalformedControl(f"{str(key)[:200]!r} is not a normalized key under retraining_data_raw/")
            if not isinstance(size, int) or size < 0 or not (token is None or isinstance(token, str)):
                raise MalformedControl(f"bad size or token for {key!r}")
            decided.append(DecidedFile(key, size, token))
        if len({f.key for f in decided}) != len(decided):
            raise MalformedControl("a file is listed twice")
        return cls(decision_id=decision_id, version=version, decided_at=decided_at, files=tuple(decided))


@dataclass(frozen=True)
class ControlState:
    """What a tick reads of the control state: open claims, and malformed documents set aside."""

    claims: dict[str, Decision]
    malformed: dict[str, str]  # key -> why it was not trusted
    reserved_numbers: frozenset[int]  # numbers taken by claims, malformed ones included


def read_control_state(store: ObjectStore) -> ControlState:
    claims: dict[str, Decision] = {}
    malformed: dict[str, str] = {}
    numbers: set[int] = set()
    for info in store.list(CLAIMS_PREFIX):
        name = posixpath.basename(info.key).removesuffix(".json")
        if info.key != claim_key(name) or not is_version_name(name):
            malformed[info.key] = "not named claims/vN.json"
            continue
        numbers.add(version_number(name))
        try:
            claims[name] = Decision.from_json(json.loads(store.read_bytes(info.key)), expected_version=name)
        except FileNotFoundError:  # completed between listing and reading
            continue
        except (ValueError, UnicodeDecodeError) as error:
            malformed[info.key] = f"malformed claim: {error}"[:300]
    return ControlState(claims=claims, malformed=malformed, reserved_numbers=frozenset(numbers))


def completed_claim_key(version: str) -> str:
    return f"{TRANSFORMED_PREFIX}{version}/claim.json"


def read_claim(store: ObjectStore, version: str) -> Decision | None:
    """Version N's claim, open or completed; ``None`` if there is none (malformed ones raise)."""
    for key in (claim_key(version), completed_claim_key(version)):
        with contextlib.suppress(FileNotFoundError):
            return Decision.from_json(json.loads(store.read_bytes(key)), expected_version=version)
    return None


def take_claim(store: ObjectStore, decision: Decision) -> bool:
    """Create version N's claim exclusively. ``True`` if this decision holds it (now or from an
    earlier attempt of the same decision), ``False`` if another decision took N first."""
    try:
        store.write_json(claim_key(decision.version), decision.as_json(), exclusive=True)
        return True
    except FileExistsError:
        existing = read_claim(store, decision.version)
        return existing is not None and existing.decision_id == decision.decision_id


def close_claim(store: ObjectStore, version: str) -> None:
    """Keep the claim next to the version's output and remove the open one (idempotent)."""
    with contextlib.suppress(FileNotFoundError):
        body = store.read_bytes(claim_key(version))
        store.write_bytes(completed_claim_key(version), body)
        store.delete(claim_key(version))


def published_versions(store: ObjectStore) -> list[str]:
    return [d for d in store.list_dirs(TRANSFORMED_PREFIX) if is_version_name(d)]


# -- tracker ----------------------------------------------------------------------------------
def read_tracker(store: ObjectStore) -> int:
    """The newest complete version number (0 when there is none)."""
    try:
        text = store.read_text(VERSION_TRACKER).strip()
    except FileNotFoundError:
        return 0
    return int(text) if text.isdigit() else 0


def advance_tracker(store: ObjectStore, number: int) -> int:
    """Move the tracker to ``number`` unless it is at or past it: a compare-and-set, so two
    versions finishing together never leave it on the lower one."""

    def forward(current: bytes | None) -> bytes | None:
        text = (current or b"").decode("utf-8", "replace").strip()
        return f"{number}\n".encode() if not text.isdigit() or int(text) < number else None

    stored = store.update_bytes(VERSION_TRACKER, forward)
    return int(stored.decode().strip()) if stored else number


# -- ledger -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Consumed:
    """How much of a raw file versions have taken: bytes ``[0, end)``, fingerprinted."""

    end: int
    token: str | None  # the file's change token when it was consumed
    head_sha256: str  # of bytes [0, min(end, FINGERPRINT_BYTES))
    tail_sha256: str  # of bytes [max(0, end - FINGERPRINT_BYTES), end)
    version: str
    consumed_at: float  # when the file last changed, as the snapshot saw it (seconds)

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


FINGERPRINT_BYTES = 4096


def read_ledger(store: ObjectStore) -> dict[str, Consumed]:
    """The ledger; an unreadable one counts as empty (files are then taken again whole and the
    cross-version duplicate check drops what was already published)."""
    try:
        body = json.loads(store.read_bytes(LEDGER_KEY))
        return {key: Consumed(**entry) for key, entry in body["files"].items() if is_normalized_raw_key(key)}
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def update_ledger(
    store: ObjectStore, upserts: dict[str, Consumed] | None = None, removals: set[str] | None = None
) -> None:
    """Record consumption (never moving a file back to an earlier version) and forget retired files."""
    upserts, removals = upserts or {}, removals or set()

    def change(body: Any) -> Any:
        files = body.get("files", {}) if isinstance(body, dict) else {}
        files = {k: v for k, v in files.items() if isinstance(v, dict) and is_normalized_raw_key(k)}
        for key, entry in upserts.items():
            known = files.get(key)
            known_version = str((known or {}).get("version"))
            if is_version_name(known_version) and version_number(known_version) > version_number(entry.version):
                continue
            files[key] = entry.as_json()
        for key in removals:
            files.pop(key, None)
        return {"files": files}

    store.update_json(LEDGER_KEY, change)

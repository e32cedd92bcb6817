"""What a sensor tick decides, from the store alone, without writing anything.

The tick reads raw/, the control state, the ledger and the published versions, and returns a
:class:`TickPlan`: the open claims whose runs must be (re)requested, or a new :class:`Decision`
(the next version number and its settled files), plus what it saw and will not take. The run
acts on the decision; a preview of the tick, or a tick whose cursor is never committed, leaves
the store exactly as it was.

One version is decided at a time: while a claim is open, or a decision is waiting for its run,
nothing new is decided, so two versions never compete for a file and the tracker's order is the
order of the versions.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from medqa_assets.retraining.control import (
    Consumed,
    DecidedFile,
    Decision,
    published_versions,
    read_control_state,
    read_ledger,
    read_tracker,
)
from medqa_assets.storage.layout import RAW_LOGS_PREFIX, is_normalized_raw_key, version_name, version_number
from medqa_assets.storage.object_store import IgnoredEntry, ObjectInfo, ObjectStore


@dataclass
class TickPlan:
    open_claims: list[Decision] = field(default_factory=list)  # claimed, not yet published: (re)run
    waiting: Decision | None = None  # decided by an earlier tick, its run not started yet
    decision: Decision | None = None  # new: the next version
    unsettled: int = 0  # files still being written
    retirable: list[str] = field(default_factory=list)  # consumed, untouched for the retire time: to delete
    ignored: list[IgnoredEntry] = field(default_factory=list)
    malformed: dict[str, str] = field(default_factory=dict)

    @property
    def skip_reason(self) -> str | None:
        if self.open_claims or self.waiting or self.decision or self.retirable:
            return None
        if self.unsettled:
            return f"{self.unsettled} file(s) under retraining_data_raw/ are still being written"
        return "no settled new files under retraining_data_raw/"


def is_consumed(info: ObjectInfo, consumed: Consumed | None, settled: bool) -> bool:
    """Nothing new in this file since a version consumed it (a trailing partial line waits until settled)."""
    if consumed is None or info.etag != consumed.token:
        return False
    return info.size <= consumed.end or not settled


def plan_tick(
    store: ObjectStore,
    settle_seconds: float,
    previous: Decision | None = None,
    previous_alive: bool = True,
    now: float | None = None,
    max_files: int | None = None,
    retire_after_seconds: float | None = None,
) -> TickPlan:
    """Decide from the store's state. ``previous`` is the last tick's decision (from the cursor);
    ``previous_alive`` says whether its run may still take the claim (queued or running)."""
    now = time.time() if now is None else now
    control = read_control_state(store)
    listing, ignored = store.scan(RAW_LOGS_PREFIX)
    plan = TickPlan(ignored=ignored, malformed=control.malformed)
    published = published_versions(store)
    plan.open_claims = [control.claims[v] for v in sorted(control.claims, key=version_number)]
    if (
        previous is not None
        and previous_alive
        and previous.version not in control.claims
        and previous.version not in published
    ):
        plan.waiting = previous
    if plan.open_claims or plan.waiting:
        return plan

    ledger = read_ledger(store)
    pending: list[ObjectInfo] = []
    for info in listing:
        if not is_normalized_raw_key(info.key):
            plan.ignored.append(IgnoredEntry(info.key, "name not usable as a store key"))
            continue
        settled = info.mtime is None or now - info.mtime >= settle_seconds
        consumed = ledger.get(info.key)
        if is_consumed(info, consumed, settled):
            quiet = info.mtime is None or now - info.mtime >= (retire_after_seconds or 0)
            if retire_after_seconds is not None and consumed and info.size == consumed.end and quiet:
                plan.retirable.append(info.key)
            continue
        if not settled:
            plan.unsettled += 1
            continue
        pending.append(info)
    if max_files:
        pending = pending[:max_files]
    if not pending:
        return plan
    taken = [read_tracker(store), *control.reserved_numbers, *(version_number(v) for v in published)]
    plan.decision = Decision(
        decision_id=uuid.uuid4().hex,
        version=version_name(max(taken) + 1),
        decided_at=datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        files=tuple(DecidedFile(info.key, info.size, info.etag) for info in pending),
    )
    return plan

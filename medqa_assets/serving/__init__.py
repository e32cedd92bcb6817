"""Serving side of the platform: the reference endpoint, the traffic simulator and log ingestion.

The submodules are imported on demand (``baseline`` pulls in scikit-learn, ``endpoint`` FastAPI),
so this package only holds what they share: the user-facing error and time-ordered log keys.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from medqa_assets.storage import layout

OFFLINE_JOB_HINT = "dagster job execute -m medqa_assets.definitions -j offline_etl"
ANSWER_PATH = "/api/v1/answer"


class CommandError(RuntimeError):
    """A problem the person running a command can fix; the message says how (no traceback)."""


class MissingInputError(CommandError):
    """An object the command reads (a split, a production set) is not in the store."""


class RawLogKeyClock:
    """Hands out ``retraining_data_raw/`` keys whose time stamps strictly increase.

    :func:`layout.new_raw_log_key` stamps keys to the microsecond; two keys cut within the same
    microsecond would then sort by their random suffix. This clock moves the stamp forward by a
    microsecond when needed, so the keys of one writer always sort in the order they were made.
    """

    def __init__(self) -> None:
        self._last: datetime | None = None
        self._lock = threading.Lock()

    def next_key(self, original_name: str) -> str:
        with self._lock:
            when = datetime.now(UTC)
            if self._last is not None and when <= self._last:
                when = self._last + timedelta(microseconds=1)
            self._last = when
        return layout.new_raw_log_key(original_name, when)


__all__ = ["ANSWER_PATH", "OFFLINE_JOB_HINT", "CommandError", "MissingInputError", "RawLogKeyClock"]

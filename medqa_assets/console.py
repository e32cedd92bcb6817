"""What the platform prints on a terminal: compact run logs, and one line for a problem a person can fix.

Dagster's default console logger prints every engine event at DEBUG level and each error with its
stack trace twice (the step and the run). A user running ``dg launch`` or ``dagster job execute``
needs the few lines that say what happened and, when something failed, the message that names the
setting to change. ``MEDQA_VERBOSE=1`` (or ``--verbose`` on the platform's own commands) brings the
full output and tracebacks back. The event log in the Dagster instance is not affected: the UI
always has every event.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import dagster as dg

VERBOSE_VAR = "MEDQA_VERBOSE"
EXIT_USAGE = 2

# Events worth a line at the default level; everything else is in the instance's event log.
_SHOWN_EVENTS = frozenset(
    {
        dg.DagsterEventType.RUN_SUCCESS,
        dg.DagsterEventType.RUN_FAILURE,
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
    }
)
# The engine's notice for each step skipped after a failure repeats what the failure said.
_SKIPPED_STEP_NOTICE = "Dependencies for step "


def verbose() -> bool:
    return os.environ.get(VERBOSE_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def one_line(text: str) -> str:
    """``text`` as a single line (messages may be wrapped for readability in code)."""
    return " ".join(str(text).split())


def error_summary(error: Any) -> str:
    """The message of a Dagster ``SerializableErrorInfo`` without class name or stack trace."""
    message = one_line(getattr(error, "message", "") or str(error))
    cls_name = getattr(error, "cls_name", None)
    for prefix in (f"{cls_name}: ", "dagster._core.definitions.events.Failure: "):
        if cls_name and message.startswith(prefix):
            return message[len(prefix) :]
    head, separator, rest = message.partition(": ")
    return rest if separator and "." in head and " " not in head else message


class CompactRunFormatter(logging.Formatter):
    """``HH:MM:SS job step: message``; a failed step's error as one line."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        where = " ".join(filter(None, [meta.get("job_name"), meta.get("step_key")]))
        stamp = self.formatTime(record, "%H:%M:%S")
        if event is None:
            return f"{stamp} {where}: {one_line(meta.get('orig_message', record.getMessage()))}"
        kind = event.event_type
        error = getattr(event.event_specific_data, "error", None)
        if kind == dg.DagsterEventType.STEP_FAILURE and error is not None:
            return f"{stamp} {where}: error: {error_summary(error)}"
        if kind == dg.DagsterEventType.RUN_FAILURE:
            return f"{stamp} {where}: run failed (the error is above; {VERBOSE_VAR}=1 shows tracebacks)"
        if kind == dg.DagsterEventType.RUN_SUCCESS:
            return f"{stamp} {where}: run succeeded"
        if kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            return (
                f"{stamp} {where}: materialized {event.event_specific_data.materialization.asset_key.to_user_string()}"
            )
        if kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            verdict = "passed" if evaluation.passed else "FAILED"
            return f"{stamp} {where}: check {evaluation.asset_key.to_user_string()}:{evaluation.check_name} {verdict}"
        return f"{stamp} {where}: {one_line(meta.get('orig_message', ''))}"


class _CompactFilter(logging.Filter):
    """The platform's own messages at or above ``threshold``, and the few engine events that matter
    (Dagster logs some of those, such as materializations, at DEBUG)."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if event is None:  # a message of the platform's own code, or an engine notice
            return record.levelno >= self.threshold and not str(meta.get("orig_message", "")).startswith(
                _SKIPPED_STEP_NOTICE
            )
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            return not event.event_specific_data.passed
        return event.event_type in _SHOWN_EVENTS


@dg.logger(
    {
        "log_level": dg.Field(str, is_required=False, default_value="INFO", description="The logger's threshold."),
    },
    description="Compact console output (MEDQA_VERBOSE=1 for Dagster's full output with tracebacks).",
)
def compact_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    if verbose():  # Dagster's own format at DEBUG: every event, errors with their stack traces
        logger = logging.Logger("dagster", level=logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s - dagster - %(levelname)s - %(message)s"))
    else:
        logger = logging.Logger("medqa", level=logging.DEBUG)
        handler.setFormatter(CompactRunFormatter())
        handler.addFilter(_CompactFilter(logging.getLevelName(init_context.logger_config["log_level"].upper())))
    logger.addHandler(handler)
    return logger


@contextlib.contextmanager
def exit_on_user_error(*errors: type[BaseException], program: str = "error") -> Iterator[None]:
    """Turn a problem the user can fix into ``<program>: <message>`` on stderr and exit code 2.

    With ``MEDQA_VERBOSE=1`` the exception propagates with its traceback.
    """
    try:
        yield
    except errors as error:
        if verbose():
            raise
        print(f"{program}: {one_line(str(error)) or type(error).__name__}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


# Dagster instantiates a job's loggers only when the run config names them: every job of the platform
# carries this as its default run config, so the compact logger is what a terminal shows.
COMPACT_LOGGING_RUN_CONFIG: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

"""Which executor runs the steps (``MEDQA_EXECUTOR``): the job code is the same for all of them."""

from __future__ import annotations

import os

import dagster as dg

from medqa_assets.settings import ConfigurationError

EXECUTOR_VAR = "MEDQA_EXECUTOR"
EXECUTORS = ("multiprocess", "in_process", "celery")


def executor_from_env() -> dg.ExecutorDefinition:
    """``in_process`` (default), ``multiprocess``, or ``celery`` (broker and backend from
    ``MEDQA_CELERY_BROKER_URL`` / ``MEDQA_CELERY_BACKEND_URL``).

    In-process is the default because the platform's steps run one after another and hand data
    frames to each other: a process per step only adds start-up time (about a second each, the
    imports) on one machine. The deployment picks ``multiprocess`` or ``celery`` explicitly.
    """
    name = os.environ.get(EXECUTOR_VAR, "").strip().lower() or "in_process"
    if name == "multiprocess":
        return dg.multi_or_in_process_executor
    if name == "in_process":
        return dg.in_process_executor
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(
            {"broker": {"env": "MEDQA_CELERY_BROKER_URL"}, "backend": {"env": "MEDQA_CELERY_BACKEND_URL"}},
            name="celery",
        )
    raise ConfigurationError(f"{EXECUTOR_VAR}={name!r} is not one of {', '.join(EXECUTORS)}; set {EXECUTOR_VAR}")

"""Executor selection by MEDQA_EXECUTOR."""

from __future__ import annotations

import pytest

from medqa_assets.executors import executor_from_env
from medqa_assets.settings import ConfigurationError


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("", "in_process"),
        ("in_process", "in_process"),
        ("multiprocess", "multi_or_in_process_executor"),
        ("celery", "celery"),
    ],
)
def test_executor_follows_the_setting(monkeypatch: pytest.MonkeyPatch, value: str, name: str) -> None:
    monkeypatch.setenv("MEDQA_EXECUTOR", value)
    assert executor_from_env().name == name


def test_unknown_executor_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDQA_EXECUTOR", "spark")
    with pytest.raises(ConfigurationError, match="MEDQA_EXECUTOR"):
        executor_from_env()

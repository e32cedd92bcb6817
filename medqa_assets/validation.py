"""Lazy pandera validation that returns structured findings (counts and a sample), not exceptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors


@dataclass
class ValidationReport:
    """What a lazy pandera validation found: counts, and a sample of failing rows."""

    schema: str
    rows: int
    failure_count: int = 0
    failures_by_check: dict[str, int] = field(default_factory=dict)
    failure_sample: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.failure_count == 0

    def summary(self) -> str:
        if self.passed:
            return f"{self.schema}: {self.rows} rows valid"
        return f"{self.schema}: {self.failure_count} failures ({self.failures_by_check})"


def validate_frame(schema: pa.DataFrameSchema, frame: pd.DataFrame, sample_size: int = 10) -> ValidationReport:
    """Run ``schema`` lazily so every failure is collected, not just the first."""
    report = ValidationReport(schema=schema.name or "schema", rows=len(frame))
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        report.failure_count = len(cases)
        keys = cases["column"].astype(str).fillna("") + ":" + cases["check"].astype(str)
        report.failures_by_check = {str(k): int(v) for k, v in keys.value_counts().items()}
        sample = cases[["column", "check", "index", "failure_case"]].head(sample_size).astype(str)
        sample["failure_case"] = sample["failure_case"].str.slice(0, 200)
        report.failure_sample = sample.to_dict("records")
    return report

"""pandera schemas of the offline datasets, and a validator that returns structured findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from medqa_assets.medquad.xml_reader import LAVITA_COLUMNS

_text = pa.Column("string", nullable=True)
_required_text = pa.Column(
    "string",
    checks=[pa.Check.str_length(min_value=1), pa.Check(lambda s: s.eq(s.str.strip()), name="trimmed")],
    nullable=False,
)

MEDQUAD_RAW_SCHEMA = pa.DataFrameSchema(
    {
        name: pa.Column("string", nullable=name not in ("question_id", "question_type", "question"))
        for name in LAVITA_COLUMNS
    },
    strict=True,
    ordered=True,
    name="medquad_raw",
)

QA_SCHEMA = pa.DataFrameSchema(
    {
        "row_id": pa.Column("string", unique=True, nullable=False),
        "question_id": _text,
        "document_id": _text,
        "document_source": _text,
        "question_type": pa.Column("string", nullable=False),
        "question_focus": _text,
        "synonyms": _text,
        "question": _required_text,
        "answer": _required_text,
    },
    unique=["question", "answer"],
    strict=True,
    name="medquad_qa",
)


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

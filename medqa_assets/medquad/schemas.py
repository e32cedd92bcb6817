"""pandera schemas of MedQuAD as loaded (raw) and as cleaned (the rows every split carries)."""

from __future__ import annotations

import pandera.pandas as pa

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
        "document_url": _text,
        "question_type": pa.Column("string", nullable=False),
        "question_focus": _text,
        "umls_cui": _text,
        "synonyms": _text,
        "question": _required_text,
        "answer": _required_text,
    },
    unique=["question", "answer"],
    strict=True,
    name="medquad_qa",
)

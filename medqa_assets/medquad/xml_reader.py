"""Converter from the original MedQuAD XML distribution to the lavita/MedQuAD column layout.

The original distribution is one XML document per focus (disease, drug, ...), each holding
several question-answer pairs. lavita/MedQuAD flattens that into one row per pair with 13
string columns; multi-valued annotations are joined with ``|``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

LAVITA_COLUMNS: list[str] = [
    "document_id",
    "document_source",
    "document_url",
    "category",
    "umls_cui",
    "umls_semantic_types",
    "umls_semantic_group",
    "synonyms",
    "question_id",
    "question_focus",
    "question_type",
    "question",
    "answer",
]


def _text(element: ET.Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text


def _joined(parent: ET.Element | None, path: str) -> str | None:
    if parent is None:
        return None
    values = [e.text.strip() for e in parent.iterfind(path) if e.text and e.text.strip()]
    return "|".join(values) if values else None


def parse_document(xml_bytes: bytes) -> list[dict[str, str | None]]:
    """Rows (one per QA pair) of one MedQuAD XML document."""
    root = ET.fromstring(xml_bytes)
    annotations = root.find("FocusAnnotations")
    umls = annotations.find("UMLS") if annotations is not None else None
    group = _text(umls.find("SemanticGroup")) if umls is not None else None
    document = {
        "document_id": root.get("id"),
        "document_source": root.get("source"),
        "document_url": root.get("url"),
        "category": _text(annotations.find("Category")) if annotations is not None else None,
        "umls_cui": _joined(umls, "CUIs/CUI"),
        "umls_semantic_types": _joined(umls, "SemanticTypes/SemanticType"),
        "umls_semantic_group": group.strip() or None if group else None,
        "synonyms": _joined(annotations, "Synonyms/Synonym"),
        "question_focus": _text(root.find("Focus")),
    }
    rows = []
    for pair in root.iterfind("QAPairs/QAPair"):
        question = pair.find("Question")
        answer = _text(pair.find("Answer"))
        rows.append(
            {
                **document,
                "question_id": question.get("qid") if question is not None else None,
                "question_type": question.get("qtype") if question is not None else None,
                "question": _text(question),
                "answer": answer if answer and answer.strip() else None,
            }
        )
    return rows


def iter_xml_files(root: Path) -> Iterator[Path]:
    """The XML documents of a MedQuAD distribution, in a stable (sorted) order."""
    for directory, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.endswith(".xml"):
                yield Path(directory) / name


def _parse_file(path: Path) -> list[dict[str, str | None]]:
    try:
        return parse_document(path.read_bytes())
    except ET.ParseError as error:
        raise ValueError(f"{path} is not valid MedQuAD XML: {error}") from error


def read_medquad_xml(root: str | os.PathLike[str]) -> pd.DataFrame:
    """All QA pairs under ``root`` as a DataFrame with the 13 lavita/MedQuAD columns.

    Serial on purpose: parsing holds the GIL, and threads or processes measured slower here.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise FileNotFoundError(f"MedQuAD XML directory {root_path} does not exist")
    files = list(iter_xml_files(root_path))
    if not files:
        raise FileNotFoundError(f"MedQuAD XML directory {root_path} holds no .xml files")
    rows = [row for path in files for row in _parse_file(path)]
    return pd.DataFrame.from_records(rows, columns=LAVITA_COLUMNS).astype("string")

"""MedQuAD sources: the project's XML converter, the bundled snapshot, files, and the hub loader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from medqa_assets.medquad.build_bundle import build, tree_digest
from medqa_assets.medquad.sources import SourceError, bundled_dir, load_medquad
from medqa_assets.medquad.xml_reader import LAVITA_COLUMNS, parse_document, read_medquad_xml

DOCUMENT = b"""<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000001" source="GHR" url="https://ghr.nlm.nih.gov/condition/x">
<Focus>Example syndrome</Focus>
<FocusAnnotations>
  <Category>Disease</Category>
  <UMLS><CUIs><CUI>C1</CUI><CUI>C2</CUI></CUIs><SemanticTypes><SemanticType>T047</SemanticType></SemanticTypes>
  <SemanticGroup>Disorders</SemanticGroup></UMLS>
  <Synonyms><Synonym>ES</Synonym><Synonym>Example disease</Synonym></Synonyms>
</FocusAnnotations>
<QAPairs>
  <QAPair pid="1"><Question qid="0000001-1" qtype="information">What is Example syndrome ?</Question>
  <Answer>A condition.</Answer></QAPair>
  <QAPair pid="2"><Question qid="0000001-2" qtype="symptoms">What are the symptoms of Example syndrome ?</Question>
  <Answer></Answer></QAPair>
</QAPairs>
</Document>"""


def test_parse_document_yields_lavita_rows() -> None:
    rows = parse_document(DOCUMENT)
    assert len(rows) == 2
    first = rows[0]
    assert set(first) == set(LAVITA_COLUMNS)
    assert first["umls_cui"] == "C1|C2"
    assert first["synonyms"] == "ES|Example disease"
    assert first["question_type"] == "information"
    assert first["category"] == "Disease"
    assert rows[1]["answer"] is None  # empty answers are missing, not ""


def test_shipped_xml_subset_converts_like_the_bundled_snapshot(medquad_xml_subset: Path) -> None:
    """The 60 original documents shipped with the tests, through the XML source, give exactly the rows
    the bundled snapshot holds for those documents: the converter and the bundle agree without the
    full distribution."""
    loaded = load_medquad(str(medquad_xml_subset))
    assert loaded.kind == "xml" and list(loaded.frame.columns) == LAVITA_COLUMNS
    frame = loaded.frame
    assert frame["document_source"].nunique() == 12  # every collection is represented
    assert frame["answer"].isna().sum() > 0  # the MedlinePlus collections ship without answers
    bundled = load_medquad("bundled").frame
    document = ["document_source", "document_id", "document_url", "question_focus"]  # ids and URLs repeat
    documents = set(frame[document].itertuples(index=False))
    mine = bundled[[row in documents for row in bundled[document].itertuples(index=False)]]
    order = [*document, "question_id", "question"]
    pd.testing.assert_frame_equal(
        frame.sort_values(order).reset_index(drop=True), mine.sort_values(order).reset_index(drop=True)
    )


def test_build_bundle_on_the_subset_records_provenance(tmp_path: Path, medquad_xml_subset: Path) -> None:
    provenance = build(medquad_xml_subset, tmp_path)
    assert provenance["source_xml_files"] == 60
    assert provenance["rows"] == len(read_medquad_xml(medquad_xml_subset))
    assert provenance["sha256"] == hashlib.sha256((tmp_path / "medquad.parquet").read_bytes()).hexdigest()
    assert provenance["source_tree_sha256"] == tree_digest(medquad_xml_subset)[0]


@pytest.mark.slow
def test_full_xml_distribution_matches_the_dataset_card(shared_medquad: Path) -> None:
    frame = read_medquad_xml(shared_medquad)
    assert list(frame.columns) == LAVITA_COLUMNS
    assert len(frame) == 47441
    assert int(frame["answer"].isna().sum()) == 31034


@pytest.mark.slow
def test_bundled_snapshot_is_the_converted_xml_with_provenance(shared_medquad: Path) -> None:
    provenance = json.loads((bundled_dir() / "provenance.json").read_text())
    data = (bundled_dir() / "medquad.parquet").read_bytes()
    assert provenance["sha256"] == hashlib.sha256(data).hexdigest()
    assert provenance["rows"] == 47441
    assert provenance["source_tree_sha256"] == tree_digest(shared_medquad)[0]
    loaded = load_medquad("bundled")
    assert loaded.kind == "bundled" and len(loaded.frame) == 47441


@pytest.mark.slow
def test_converter_rebuilds_the_bundle_byte_for_byte(tmp_path: Path, shared_medquad: Path) -> None:
    provenance = build(shared_medquad, tmp_path)
    assert (tmp_path / "medquad.parquet").read_bytes() == (bundled_dir() / "medquad.parquet").read_bytes()
    assert provenance["rows"] == 47441


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_lavita_layout_files(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame(parse_document(DOCUMENT))
    path = tmp_path / f"medquad{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    loaded = load_medquad(str(path))
    assert list(loaded.frame.columns) == LAVITA_COLUMNS and len(loaded.frame) == 2


def test_xml_directory_source(tmp_path: Path) -> None:
    (tmp_path / "1_Example_QA").mkdir()
    (tmp_path / "1_Example_QA" / "0000001.xml").write_bytes(DOCUMENT)
    loaded = load_medquad(str(tmp_path))
    assert loaded.kind == "xml" and len(loaded.frame) == 2


def test_hub_source_loads_through_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hf://owner/name goes through datasets.load_dataset; a local dataset folder stands in for the hub."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "lavita" / "MedQuAD" / "data"
    data_dir.mkdir(parents=True)
    pd.DataFrame(parse_document(DOCUMENT)).to_parquet(data_dir / "train-00000-of-00001.parquet")
    loaded = load_medquad("hf://lavita/MedQuAD")
    assert loaded.kind == "huggingface"
    assert len(loaded.frame) == 2 and list(loaded.frame.columns) == LAVITA_COLUMNS
    assert loaded.provenance["dataset"] == "lavita/MedQuAD"


def test_hub_source_failure_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match="MEDQA_MEDQUAD_SOURCE"):
        load_medquad("hf://nobody/no-such-dataset@v0")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/no/such/place", "does not exist"),
        ("hf://", "names no dataset"),
    ],
)
def test_bad_sources_name_the_setting(source: str, message: str) -> None:
    with pytest.raises(SourceError, match=message) as error:
        load_medquad(source)
    assert "MEDQA_MEDQUAD_SOURCE" in str(error.value)


def test_unsupported_file_and_wrong_columns(tmp_path: Path) -> None:
    csv = tmp_path / "medquad.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(SourceError, match="unsupported file type"):
        load_medquad(str(csv))
    wrong = tmp_path / "wrong.parquet"
    pd.DataFrame({"question": ["q"], "answer": ["a"]}).to_parquet(wrong)
    with pytest.raises(SourceError, match="lacks the lavita/MedQuAD column"):
        load_medquad(str(wrong))

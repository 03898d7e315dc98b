"""A BEIR folder given as an extra dataset is checked before any work, and every defect is named with its file:
missing files, malformed JSON lines, queries or judgements missing, a score that is not an integer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eft.retrieval.beir import BeirFormatError, check_beir, load_beir


def _beir(folder: Path, corpus=None, queries=None, qrels=None) -> Path:
    (folder / "qrels").mkdir(parents=True)
    lines = corpus or [json.dumps({"_id": "d1", "title": "", "text": "a passage"}),
                       json.dumps({"_id": "d2", "title": "", "text": "another"})]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "queries.jsonl").write_text("\n".join(queries or [json.dumps({"_id": "q1", "text": "a question"})])
                                          + "\n")
    (folder / "qrels" / "test.tsv").write_text(qrels if qrels is not None else "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def test_a_well_formed_folder_passes_and_loads(tmp_path):
    folder = _beir(tmp_path / "ok")
    check_beir(folder)
    corpus, queries, qrels = load_beir(folder)
    assert set(corpus) == {"d1", "d2"} and queries == {"q1": "a question"} and qrels == {"q1": {"d1": 1}}


@pytest.mark.parametrize("name, damage, words", [
    ("no queries file", lambda f: (f / "queries.jsonl").unlink(), "queries.jsonl is missing"),
    ("no qrels", lambda f: (f / "qrels" / "test.tsv").unlink(), "qrels/test.tsv is missing"),
    ("no corpus", lambda f: (f / "corpus.jsonl").unlink(), "corpus.jsonl is missing"),
    ("empty corpus", lambda f: (f / "corpus.jsonl").write_text("\n"), "corpus.jsonl is empty"),
    ("truncated corpus line", lambda f: (f / "corpus.jsonl").write_text('{"_id": "d1", "te\n'),
     "corpus.jsonl line 1 is not JSON"),
    ("query without text", lambda f: (f / "queries.jsonl").write_text('{"_id": "q1"}\n'),
     "queries.jsonl line 1: expected a JSON object with _id and text"),
    ("no queries", lambda f: (f / "queries.jsonl").write_text(""), "queries.jsonl has no queries"),
    ("header-only qrels", lambda f: (f / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"),
     "has no judgements"),
    ("bad score", lambda f: (f / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n"),
     "test.tsv line 2: expected query-id, corpus-id and an integer score"),
])
def test_each_defect_is_named_with_its_file(tmp_path, name, damage, words):
    folder = _beir(tmp_path / "bad")
    damage(folder)
    with pytest.raises(BeirFormatError, match=words):
        check_beir(folder)


def test_a_malformed_corpus_line_past_the_first_is_named_when_loading(tmp_path):
    folder = _beir(tmp_path / "late", corpus=[json.dumps({"_id": "d1", "title": "", "text": "fine"}), '{"_id": "d2"'])
    check_beir(folder)  # reads only the corpus's first line
    with pytest.raises(BeirFormatError, match="is not a readable BEIR dataset"):
        load_beir(folder)

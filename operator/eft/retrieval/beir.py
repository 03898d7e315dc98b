"""Writing and reading BEIR datasets (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from eft.records import Chunk, QuestionRecord


def write_beir(folder: Path, chunks: list[Chunk], questions: list[QuestionRecord], split: str = "test") -> None:
    """Corpus = every chunk (its full text, heading line included, as `text`; empty `title` so every consumer
    encodes exactly the same string); queries and qrels = the given questions and their positive chunks."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps({"_id": c.id, "title": "", "text": c.text,
                                "metadata": {"source": c.source, "headings": c.headings}}, ensure_ascii=False) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as f:
        for q in questions:
            f.write(json.dumps({"_id": q.question_id, "text": q.question,
                                "metadata": {"hop_count": q.hop_count, "query_type": q.query_type}},
                               ensure_ascii=False) + "\n")
    with (folder / "qrels" / f"{split}.tsv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["query-id", "corpus-id", "score"])
        for q in questions:
            for sid in q.segment_ids:
                w.writerow([q.question_id, sid, 1])


def load_beir(folder: Path, split: str = "test") -> tuple[dict[str, dict], dict[str, str], dict[str, dict[str, int]]]:
    """(corpus, queries, qrels) with BEIR's own loader, so extra datasets in BEIR format load the same way.

    Raises `BeirFormatError` naming the folder when a file is missing or cannot be parsed."""
    from beir.datasets.data_loader import GenericDataLoader

    check_beir(folder, split)
    try:
        corpus, queries, qrels = GenericDataLoader(data_folder=str(folder)).load(split=split)
    except (ValueError, KeyError, IndexError) as err:  # JSONDecodeError is a ValueError
        raise BeirFormatError(f"{folder} is not a readable BEIR dataset: {type(err).__name__}: {err}") from None
    return corpus, queries, qrels


class BeirFormatError(ValueError):
    """A BEIR folder with a missing, empty or malformed file; the message names the file."""


def check_beir(folder: Path, split: str = "test") -> None:
    """Cheap check of a BEIR folder before any work: `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv`
    exist; the corpus's first line is a JSON object with `_id` and `text`; every query line is JSON with `_id`
    and `text`; the qrels have a header and at least one `query-id corpus-id score` row.

    Raises `BeirFormatError` naming the file and what was expected."""
    folder = Path(folder)
    corpus, queries, qrels = folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"
    for path in (corpus, queries, qrels):
        if not path.is_file():
            raise BeirFormatError(f"no BEIR dataset at {folder}: {path.relative_to(folder)} is missing")

    def record(path: Path, n: int, line: str) -> None:
        try:
            obj = json.loads(line)
        except ValueError as err:
            raise BeirFormatError(f"{path} line {n} is not JSON: {err}") from None
        if not isinstance(obj, dict) or "_id" not in obj or "text" not in obj:
            raise BeirFormatError(f"{path} line {n}: expected a JSON object with _id and text")

    with corpus.open(encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), None)
    if first is None:
        raise BeirFormatError(f"{corpus} is empty")
    record(corpus, 1, first)
    with queries.open(encoding="utf-8") as f:
        n_queries = 0
        for n, line in enumerate(f, 1):
            if line.strip():
                record(queries, n, line)
                n_queries += 1
    if not n_queries:
        raise BeirFormatError(f"{queries} has no queries")
    with qrels.open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if r]
    bad = next((i for i, r in enumerate(rows[1:], 2) if len(r) < 3 or not r[2].strip().lstrip("-").isdigit()), None)
    if bad is not None:
        raise BeirFormatError(f"{qrels} line {bad}: expected query-id, corpus-id and an integer score")
    if len(rows) < 2:
        raise BeirFormatError(f"{qrels} has no judgements (a header line, then query-id corpus-id score rows)")


def passage_text(doc: dict) -> str:
    """The text encoded for a BEIR corpus entry: title and text joined as BEIR's dense retrievers do."""
    title = (doc.get("title") or "").strip()
    return f"{title} {doc['text']}".strip() if title else doc["text"]

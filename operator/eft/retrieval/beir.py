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
    """(corpus, queries, qrels) with BEIR's own loader, so extra datasets in BEIR format load the same way."""
    from beir.datasets.data_loader import GenericDataLoader

    corpus, queries, qrels = GenericDataLoader(data_folder=str(folder)).load(split=split)
    return corpus, queries, qrels


def passage_text(doc: dict) -> str:
    """The text encoded for a BEIR corpus entry: title and text joined as BEIR's dense retrievers do."""
    title = (doc.get("title") or "").strip()
    return f"{title} {doc['text']}".strip() if title else doc["text"]

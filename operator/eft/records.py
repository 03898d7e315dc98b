"""The records the sdg stage writes and every later stage reads (the recipe's schema): shared by the corpus
reader (chunks), both generators, prep and train, so it sits below all of them.

Files in `DIR/sdg/`:
- `chunks.jsonl`: one `Chunk` per line (the corpus every later stage retrieves over);
- `questions.jsonl`: one `QuestionRecord` per line (only questions that passed the quality threshold).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Literal

from pydantic import BaseModel, Field

#: Anything but letters and digits, in any script (the underscore counts as a separator, as in MAX_SIZE).
_NON_WORD = re.compile(r"[\W_]+")


def normalise_question(text: str) -> str:
    """Lower case, with every run of non-letters and non-digits as one space: twins differ only in case,
    punctuation and spacing (prep merges them; the LLM generator drops them within a unit). Letters of every
    script count (an ASCII-only rule made every Japanese or Cyrillic question the empty string, so all of them
    were merged into one)."""
    return _NON_WORD.sub(" ", text.lower()).strip()


QueryType = Literal["factual", "procedural", "conceptual", "comparative", "troubleshooting", "keyword", "other"]
ReasoningType = Literal["lookup", "inference", "synthesis", "comparison", "causal", "multi_step", "other"]


class Chunk(BaseModel):
    id: str = Field(..., description="Stable content-derived id (sha1 prefix of the normalised text).")
    text: str
    source: str = Field(..., description="File path relative to the corpus folder.")
    headings: list[str] = Field(default_factory=list, description="Heading path, outermost first.")
    doc_id: str = Field(..., description="Id of the source document.")
    position: int = Field(..., ge=0, description="Order of the chunk within its document.")
    tokens: int = Field(0, ge=0, description="Length in base-model tokens.")

    @property
    def title(self) -> str:
        return " > ".join(self.headings)


class QuestionRecord(BaseModel):
    question_id: str
    question: str = Field(..., min_length=3)
    answer: str = ""
    query_type: str = "other"
    reasoning_type: str = "other"
    question_complexity: int = Field(2, ge=1, le=5)
    segment_ids: list[str] = Field(..., min_length=1, description="Ids of the positive chunks.")
    hop_count: int = Field(1, ge=1, le=3)
    quality_score: float = Field(0.0, ge=0.0, le=10.0)
    generator: Literal["llm", "offline"] = "llm"
    scores: dict[str, float] = Field(default_factory=dict, description="Judge scores by criterion.")


def write_jsonl(path: Path, records: Iterable[BaseModel | dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for r in records:
                data = r.model_dump(mode="json") if isinstance(r, BaseModel) else r
                f.write(json.dumps(data, ensure_ascii=False) + "\n")
                n += 1
        tmp.replace(path)
    except BaseException:  # a full disk or an interrupt: no half-written file left behind
        tmp.unlink(missing_ok=True)
        raise
    return n


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_chunks(path: Path) -> list[Chunk]:
    return [Chunk.model_validate(d) for d in read_jsonl(path)]


def read_questions(path: Path) -> list[QuestionRecord]:
    return [QuestionRecord.model_validate(d) for d in read_jsonl(path)]

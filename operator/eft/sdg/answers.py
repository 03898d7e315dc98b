"""What the `llm` generator's models answer: the JSON found in a chat answer (fences, reasoning tags and
prose tolerated), the lenient schemas of a generated question and of a judge's scores, and their validation
into question dicts and per-question scores. A useless answer raises `MalformedAnswer` (the caller re-asks)."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from eft.api.spec import SdgSpec
from eft.records import normalise_question
from eft.sdg import prompts
from eft.sdg.units import Unit

#: The judge's criteria (0-10 each); `overall` decides against `spec.sdg.qualityThreshold`.
CRITERIA = ("relevance", "accuracy", "context_support", "clarity", "overall")

# Questions that talk about the prompt instead of the subject are useless as search queries.
_REFERS_TO_PROMPT = re.compile(
    r"\b(?:the|this|these|each|both|above|given|provided|following)\s+(?:passages?|excerpts?|snippets?)\b"
    r"|\b(?:given|provided|above|following)\s+(?:text|context|documents?|segments?)\b"
    r"|\baccording to the (?:text|context|document|documentation|author)\b|\bpassage\s+\d\b",
    re.IGNORECASE,
)


class MalformedAnswer(ValueError):
    """The model's answer is not the JSON we asked for."""


_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"```(?:json|JSON|javascript)?[ \t]*\n?(.*?)```", re.S)


def extract_json(text: str | None) -> Any:
    """The JSON object in a model's answer: bare, in a ```json fence, or after/among prose."""
    if not text or not text.strip():
        raise MalformedAnswer("empty answer")
    t = _THINK.sub("", text)
    if "</think>" in t:  # reasoning without an opening tag (some chat templates strip it)
        t = t.rsplit("</think>", 1)[1]
    t = t.strip()
    for candidate in [t, *(m.group(1).strip() for m in _FENCE.finditer(t))]:
        try:
            obj = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(obj, (dict, list)):
            return obj
    decoder = json.JSONDecoder()
    for m in re.finditer(r"[{\[]", t):
        try:
            obj, _ = decoder.raw_decode(t, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict) or (isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj)):
            return obj
    raise MalformedAnswer(f"no JSON object in the answer: {t[:120]!r}")


def _as_int_list(v: Any) -> list[int]:
    if v is None:
        return []
    if isinstance(v, (int, float, str)):
        v = [v]
    out: list[int] = []
    for x in v if isinstance(v, (list, tuple)) else []:
        if isinstance(x, bool):
            continue
        if isinstance(x, (int, float)):
            out.append(int(x))
        elif isinstance(x, str):
            out.extend(int(d) for d in re.findall(r"\d+", x))
    return out


def _norm_label(v: Any, allowed: tuple[str, ...]) -> str:
    s = re.sub(r"[\s\-]+", "_", str(v or "").strip().lower())
    if s in allowed:
        return s
    for a in allowed:  # "multi-step reasoning" -> multi_step, "Procedural question" -> procedural
        if a != "other" and a in s:
            return a
    return "other"


class GeneratedQuestion(BaseModel):
    """One question as the generator returns it (lenient about key names and value formats)."""

    model_config = ConfigDict(extra="ignore")
    question: str = Field(validation_alias=AliasChoices("question", "query", "q"))
    answer: str = Field("", validation_alias=AliasChoices("answer", "a", "reference_answer"))
    query_type: str = Field("other", validation_alias=AliasChoices("query_type", "queryType", "type"))
    reasoning_type: str = Field("other", validation_alias=AliasChoices("reasoning_type", "reasoningType"))
    complexity: int | None = Field(None, validation_alias=AliasChoices(
        "complexity", "question_complexity", "questionComplexity"))
    passages: list[int] = Field(default_factory=list, validation_alias=AliasChoices(
        "passages", "passage_ids", "segment_ids", "segments", "passage_numbers", "sources"))

    @field_validator("question", mode="before")
    @classmethod
    def _question(cls, v: Any) -> str:
        s = " ".join(str(v).split()) if isinstance(v, str) else ""
        if len(s) < 8 or len(s.split()) < 2:
            raise ValueError("question missing or too short")
        return s

    @field_validator("answer", mode="before")
    @classmethod
    def _answer(cls, v: Any) -> str:
        return " ".join(str(v).split()) if v is not None else ""

    @field_validator("query_type", mode="before")
    @classmethod
    def _qt(cls, v: Any) -> str:
        return _norm_label(v, prompts.QUERY_TYPES)

    @field_validator("reasoning_type", mode="before")
    @classmethod
    def _rt(cls, v: Any) -> str:
        return _norm_label(v, prompts.REASONING_TYPES)

    @field_validator("complexity", mode="before")
    @classmethod
    def _complexity(cls, v: Any) -> int | None:
        nums = _as_int_list(v) if not isinstance(v, float) else [round(v)]
        return nums[0] if nums else None

    @field_validator("passages", mode="before")
    @classmethod
    def _passages(cls, v: Any) -> list[int]:
        return _as_int_list(v)


class JudgeScores(BaseModel):
    """One judge evaluation; scores clamped to 0-10; overall defaults to the mean of the other four."""

    model_config = ConfigDict(extra="ignore")
    index: int | None = Field(None, validation_alias=AliasChoices("index", "id", "question_index", "i"))
    relevance: float
    accuracy: float
    context_support: float = Field(validation_alias=AliasChoices(
        "context_support", "contextSupport", "context-support", "support", "groundedness"))
    clarity: float
    overall: float | None = Field(None, validation_alias=AliasChoices("overall", "overall_score", "score"))

    @field_validator("relevance", "accuracy", "context_support", "clarity", "overall", mode="before")
    @classmethod
    def _score(cls, v: Any) -> Any:
        if isinstance(v, str):  # "8", "8/10", "8.5 - good"
            m = re.search(r"-?\d+(?:\.\d+)?", v)
            v = float(m.group()) if m else v
        return v

    @model_validator(mode="after")
    def _clamp(self) -> "JudgeScores":
        for name in CRITERIA[:4]:
            setattr(self, name, min(10.0, max(0.0, float(getattr(self, name)))))
        if self.overall is None:
            self.overall = sum(getattr(self, n) for n in CRITERIA[:4]) / 4
        self.overall = min(10.0, max(0.0, float(self.overall)))
        return self

    def as_dict(self) -> dict[str, float]:
        return {n: round(float(getattr(self, n)), 3) for n in CRITERIA}


def _items(data: Any, keys: tuple[str, ...]) -> list:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for k in keys:
            if isinstance(data.get(k), list):
                return data[k]
        if len(data) == 1 and isinstance(next(iter(data.values())), list):
            return next(iter(data.values()))
        return [data]
    raise MalformedAnswer("answer is not a JSON object")


def parse_generation(data: Any, unit: Unit, spec: SdgSpec, counts: Counter) -> list[dict]:
    """Validated questions of one unit (passage numbers turned into chunk ids); raises MalformedAnswer."""
    items = _items(data, ("questions", "qa_pairs", "pairs", "items", "results"))
    lo, hi = spec.complexity.min, spec.complexity.max
    n = len(unit.chunks)
    out: list[dict] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        try:
            q = GeneratedQuestion.model_validate(item)
        except ValidationError:
            counts["invalid_questions"] += 1
            continue
        if _REFERS_TO_PROMPT.search(q.question):
            counts["dropped_refers_to_passage"] += 1
            continue
        passages = sorted({p for p in q.passages if 1 <= p <= n})
        if n == 1:
            passages = [1]
        elif not passages:
            counts["invalid_passages"] += 1  # a multi-hop question must say which passages it needs
            continue
        norm = normalise_question(q.question)
        if norm in seen:
            counts["duplicates"] += 1
            continue
        seen.add(norm)
        target = unit.complexities[min(i, len(unit.complexities) - 1)]
        out.append({
            "question": q.question,
            "answer": q.answer,
            "query_type": q.query_type,
            "reasoning_type": q.reasoning_type,
            "complexity": min(hi, max(lo, q.complexity if q.complexity is not None else target)),
            "passages": passages,
            "segment_ids": [unit.chunks[p - 1].id for p in passages],
        })
        if len(out) >= spec.questions_per_chunk:
            break
    if not out:
        raise MalformedAnswer(f"no usable question among {len(items)} item(s)")
    return out


def parse_judge(data: Any, n_questions: int) -> dict[int, dict[str, float]]:
    """Scores by 1-based question index; raises MalformedAnswer when none is usable."""
    items = _items(data, ("evaluations", "scores", "judgements", "judgments", "results", "questions"))
    scores: dict[int, dict[str, float]] = {}
    for pos, item in enumerate(items, start=1):
        try:
            s = JudgeScores.model_validate(item)
        except ValidationError:
            continue
        idx = s.index if s.index is not None else pos
        if 1 <= idx <= n_questions and idx not in scores:
            scores[idx] = s.as_dict()
    if not scores:
        raise MalformedAnswer("no usable evaluation in the judge's answer")
    return scores

"""The `llm` question generator: synthetic questions from an OpenAI-compatible chat endpoint, judged by an LLM.

`generate_llm_questions(chunks, spec, work_dir, progress, api_key)` is the whole public API. It

1. plans *generation units* from the chunks (seeded): single chunks, and for a `spec.multi_hop_fraction`
   share of units a group of 2-3 related chunks (neighbours in one document, preferring chunks under the same
   heading path), at most `spec.max_chunks` chunks in all;
2. asks `spec.model` for `spec.questions_per_chunk` questions per unit (JSON: question, answer, query_type,
   reasoning_type, complexity, the passages the answer needs), validates the answer with pydantic and retries
   malformed ones;
3. asks the judge (`spec.judge_model` or `spec.model`) to score every question on relevance, accuracy,
   context support, clarity and overall (0-10), and keeps those with overall >= `spec.quality_threshold`.

Each finished unit is appended to `work_dir/llm_progress.jsonl` (questions with their scores, before the
threshold is applied), keyed by a hash of the unit's chunks, models, counts and prompt version: a re-run with
the same inputs reads finished units back instead of paying for them again, and a changed threshold needs no
new requests.

Failures: 401/403/404 and an endpoint that cannot be reached at all raise `InvalidInput` at once (naming
`spec.sdg.apiKeySecretRef`, `spec.sdg.model` or `spec.sdg.endpoint`); 429, 5xx, timeouts and connection
errors are retried with exponential backoff and jitter (Retry-After honoured, capped); a unit whose requests
still fail is not recorded and the run ends with `StageFailed` (retryable: the re-run resumes), as it does
at once when several units in a row fail. Units whose answers stay malformed are skipped and counted; when
every unit is malformed the model is unusable and `InvalidInput` is raised.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from eft.api.spec import SdgSpec
from eft.errors import InvalidInput, StageFailed
from eft.progress import Progress
from eft.sdg import prompts
from eft.sdg.records import Chunk, QuestionRecord

log = logging.getLogger("eft.sdg.llm")

PROGRESS_FILE = "llm_progress.jsonl"

#: Exponential backoff: attempt n waits about BACKOFF_BASE_SECONDS * 2**n (with jitter), at most
#: BACKOFF_MAX_SECONDS; a server's Retry-After is honoured up to RETRY_AFTER_MAX_SECONDS. Tests shrink these.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
RETRY_AFTER_MAX_SECONDS = 120.0

#: Chunks at most this far apart (positions in one document) count as related for multi-hop units, as do
#: chunks sharing a heading path.
NEIGHBOUR_WINDOW = 3

CRITERIA = ("relevance", "accuracy", "context_support", "clarity", "overall")

_TRANSIENT_STATUS = {408, 409, 425, 429}
# Questions that talk about the prompt instead of the subject are useless as search queries.
_REFERS_TO_PROMPT = re.compile(
    r"\b(?:the|this|these|each|both|above|given|provided|following)\s+(?:passages?|excerpts?|snippets?)\b"
    r"|\b(?:given|provided|above|following)\s+(?:text|context|documents?|segments?)\b"
    r"|\baccording to the (?:text|context|document|documentation|author)\b|\bpassage\s+\d\b",
    re.IGNORECASE,
)


# ----------------------------------------------------------------------------- public API
def generate_llm_questions(chunks: list[Chunk], spec: SdgSpec, work_dir: Path, progress: Progress,
                           api_key: str | None = None) -> tuple[list[QuestionRecord], dict]:
    """Returns the kept questions (in unit order) and a stats dict (counts, token usage)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    key = api_key or os.environ.get(spec.api_key_env) or "EMPTY"
    runner = _Runner(spec, work_dir, progress, key)
    units = plan_units(chunks, spec)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(runner.run(units))
    # Called from inside an event loop (a notebook, an async caller): run on a private loop in a thread.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(runner.run(units))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target, name="eft-sdg-llm")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


# ----------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class Unit:
    """One generation request: 1 chunk (single-hop) or 2-3 related chunks (multi-hop)."""

    index: int
    chunks: tuple[Chunk, ...]
    complexities: tuple[int, ...]
    key: str

    @property
    def multi_hop(self) -> bool:
        return len(self.chunks) > 1

    @property
    def chunk_ids(self) -> list[str]:
        return [c.id for c in self.chunks]


def _shared_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _related(seed: Chunk, n: int, doc_chunks: list[Chunk], used: set[str]) -> list[Chunk]:
    """Up to `n` unused chunks of the seed's document related to it: same heading path first, then nearest."""
    scored = []
    for c in doc_chunks:
        if c.id == seed.id or c.id in used:
            continue
        shared = _shared_prefix(seed.headings, c.headings) if seed.headings and c.headings else 0
        distance = abs(c.position - seed.position)
        if distance <= NEIGHBOUR_WINDOW or shared > 0:
            scored.append((-shared, distance, c.position, c))
    scored.sort(key=lambda t: t[:3])
    return [t[3] for t in scored[:n]]


def plan_units(chunks: Sequence[Chunk], spec: SdgSpec) -> list[Unit]:
    """Seeded plan of generation units using at most `spec.max_chunks` chunks, each chunk in one unit."""
    by_id: dict[str, Chunk] = {}
    for c in chunks:
        by_id.setdefault(c.id, c)
    pool = list(by_id.values())
    if not pool:
        return []
    budget = min(spec.max_chunks or len(pool), len(pool))
    rng = random.Random(spec.seed)
    docs: dict[str, list[Chunk]] = defaultdict(list)
    for c in pool:
        docs[c.doc_id].append(c)
    for d in docs.values():
        d.sort(key=lambda c: c.position)

    hop_lo, hop_hi = max(2, spec.hops.min), min(3, spec.hops.max)
    multi_allowed = hop_hi >= 2
    single_allowed = spec.hops.min <= 1
    fraction = 0.0 if not multi_allowed else (spec.multi_hop_fraction if single_allowed else 1.0)
    c_lo, c_hi = spec.complexity.min, spec.complexity.max
    judge_model = spec.judge_model or spec.model

    order = sorted(pool, key=lambda c: (c.doc_id, c.position, c.id))
    rng.shuffle(order)
    used: set[str] = set()
    groups: list[list[Chunk]] = []
    n_multi = 0
    for seed in order:
        if len(used) >= budget:
            break
        if seed.id in used:
            continue
        group = [seed]
        # Multi-hop when the share so far is below the target (round half up): an exact, seeded share.
        if multi_allowed and n_multi < math.floor(fraction * (len(groups) + 1) + 0.5):
            size = min(rng.randint(hop_lo, hop_hi), budget - len(used))
            partners = _related(seed, size - 1, docs[seed.doc_id], used) if size >= 2 else []
            if partners and len(partners) + 1 >= hop_lo:
                group = sorted([seed, *partners], key=lambda c: c.position)
        if len(group) == 1 and not single_allowed:
            continue  # this chunk has no related partner and single-hop questions are not wanted
        groups.append(group)
        n_multi += len(group) > 1
        used.update(c.id for c in group)

    units = []
    for i, group in enumerate(groups):
        lo = c_lo if len(group) == 1 else max(c_lo, min(c_hi, 3))  # multi-hop questions are not trivial
        complexities = tuple(rng.randint(lo, c_hi) for _ in range(spec.questions_per_chunk))
        key_data = {
            "v": prompts.PROMPT_VERSION, "chunks": [c.id for c in group], "model": spec.model,
            "judge": judge_model, "n": spec.questions_per_chunk, "complexities": complexities,
            "range": [c_lo, c_hi],
        }
        key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:24]
        units.append(Unit(i, tuple(group), complexities, key))
    return units


# ----------------------------------------------------------------------------- answer parsing
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


def normalise_question(text: str) -> str:
    return re.sub(r"[^\w]+", " ", text.lower()).strip()


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


# ----------------------------------------------------------------------------- the run
class _TransientFailure(Exception):
    """A request still failed (429/5xx/timeout/connection) after all retries."""


class _Aborted(Exception):
    """Another unit hit a fatal error: stop without sending more requests."""


class _Rejected(Exception):
    """The endpoint rejected the request itself (HTTP 400/413/422): retrying the same request cannot help."""


def _usage() -> dict[str, int]:
    return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


def _backoff(attempt: int) -> float:
    d = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * (2 ** attempt))
    return d / 2 + random.uniform(0, d / 2)


def _error_detail(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    msg: Any = None
    if isinstance(body, dict):
        msg = body.get("message") or body.get("error") or body.get("detail")
        if isinstance(msg, dict):
            msg = msg.get("message") or msg
    return str(msg or exc)[:200]


class _Runner:
    def __init__(self, spec: SdgSpec, work_dir: Path, progress: Progress, api_key: str):
        self.spec = spec
        self.work_dir = work_dir
        self.progress = progress
        self.api_key = api_key
        self.judge_model = spec.judge_model or spec.model
        self.progress_path = work_dir / PROGRESS_FILE
        self.counts: Counter = Counter()
        self.usage = {"generation": _usage(), "judge": _usage()}
        self.any_success = False
        self.consecutive_failures = 0
        self.use_response_format = True
        self.aborted = False
        self.failures: list[str] = []
        self.client: Any = None

    # -- progress file
    def _load_done(self) -> dict[str, dict]:
        done: dict[str, dict] = {}
        if not self.progress_path.exists():
            return done
        with self.progress_path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line torn by an interrupted write
                # Only units that produced judged questions count as done; malformed ones are asked again
                # (the model or its server may have been fixed since).
                if isinstance(rec, dict) and isinstance(rec.get("key"), str) and rec.get("status") == "ok":
                    done[rec["key"]] = rec
        return done

    def _append(self, entry: dict) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self.progress_path.open("a+", encoding="utf-8") as f:
            if f.tell() > 0:  # make sure a torn last line does not swallow this record
                f.seek(f.tell() - 1)
                last = f.read(1)
                f.seek(0, os.SEEK_END)
                if last != "\n":
                    f.write("\n")
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    # -- requests
    async def _chat(self, kind: str, model: str, messages: list[dict], temperature: float) -> str | None:
        import openai

        spec = self.spec
        attempt = 0
        while True:
            if self.aborted:
                raise _Aborted()
            self.counts["requests"] += 1
            self.counts[f"{kind}_requests"] += 1
            kwargs: dict[str, Any] = {}
            if self.use_response_format:
                kwargs["response_format"] = {"type": "json_object"}
            wait: float | None = None
            try:
                resp = await self.client.chat.completions.create(
                    model=model, messages=messages, temperature=temperature,
                    max_tokens=spec.max_output_tokens, **kwargs)
            except openai.APIStatusError as e:
                status = e.status_code
                if status in (401, 403):
                    raise self._auth_error(status, e) from None
                if status == 404:
                    raise self._not_found(model, e) from None
                if status in (400, 413, 422):
                    text = _error_detail(e).lower()
                    if self.use_response_format and ("response_format" in text or "json_object" in text
                                                     or "response format" in text):
                        log.info("the endpoint does not accept response_format; asking for JSON in the prompt only")
                        self.use_response_format = False
                        self.counts["retries"] += 1
                        continue
                    raise _Rejected(f"HTTP {status}: {_error_detail(e)}") from None
                if status == 429:
                    self.counts["rate_limited"] += 1
                    ra = _retry_after(e)
                    wait = None if ra is None else min(ra, RETRY_AFTER_MAX_SECONDS)
                elif status >= 500 or status in _TRANSIENT_STATUS:
                    self.counts["server_errors"] += 1
                else:
                    raise _Rejected(f"HTTP {status}: {_error_detail(e)}") from None
                last = f"HTTP {status}: {_error_detail(e)}"
            except openai.APITimeoutError:
                self.counts["timeouts"] += 1
                last = f"timed out after {spec.request_timeout_seconds:g} s"
            except openai.APIConnectionError as e:
                self.counts["connection_errors"] += 1
                cause = e.__cause__ or e
                last = f"connection error: {type(cause).__name__}: {cause}"
                if attempt >= spec.max_retries and not self.any_success:
                    raise InvalidInput(
                        f"cannot reach the LLM endpoint {spec.endpoint} ({attempt + 1} attempt(s); {last}). "
                        "Check spec.sdg.endpoint: the OpenAI-compatible base URL, e.g. http://vllm.llm.svc:8000/v1",
                        field="spec.sdg.endpoint") from None
            else:
                self.any_success = True
                usage = getattr(resp, "usage", None)
                if usage is not None:
                    u = self.usage[kind]
                    p, c = int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
                    u["prompt_tokens"] += p
                    u["completion_tokens"] += c
                    u["total_tokens"] += int(usage.total_tokens or (p + c))
                choice = resp.choices[0] if resp.choices else None
                if choice is not None and choice.finish_reason == "length":
                    self.counts["truncated"] += 1
                return choice.message.content if choice is not None and choice.message else None
            if attempt >= spec.max_retries:
                raise _TransientFailure(last)
            attempt += 1
            self.counts["retries"] += 1
            delay = wait if wait is not None else _backoff(attempt - 1)
            log.debug("%s request failed (%s); retry %d/%d in %.2fs", kind, last, attempt, spec.max_retries, delay)
            await asyncio.sleep(delay)

    def _auth_error(self, status: int, e: Exception) -> InvalidInput:
        spec = self.spec
        if self.api_key == "EMPTY":
            how = (f"no API key was given: set spec.sdg.apiKeySecretRef (a Secret in the cluster) or the "
                   f"{spec.api_key_env} environment variable (locally)")
        else:
            how = (f"check the key in the Secret named by spec.sdg.apiKeySecretRef (or the {spec.api_key_env} "
                   f"environment variable)" + (" and that it may use this model" if status == 403 else ""))
        what = "rejected the API key" if status == 401 else "refused access with this API key"
        return InvalidInput(f"the LLM endpoint {spec.endpoint} {what} (HTTP {status}: {_error_detail(e)}); {how}",
                            field="spec.sdg.apiKeySecretRef")

    def _not_found(self, model: str, e: Exception) -> InvalidInput:
        field = "spec.sdg.judgeModel" if model != self.spec.model else "spec.sdg.model"
        return InvalidInput(
            f"model {model!r} was not found at {self.spec.endpoint} (HTTP 404: {_error_detail(e)}). Check {field}, "
            "and that spec.sdg.endpoint is the OpenAI-compatible base URL (usually ending in /v1)", field=field)

    async def _ask(self, kind: str, model: str, messages: list[dict], temperature: float,
                   parse: Callable[[Any], Any]) -> Any | None:
        """One JSON answer parsed by `parse`; malformed answers are re-asked up to max_retries, then None."""
        for attempt in range(self.spec.max_retries + 1):
            content = await self._chat(kind, model, messages, temperature)
            try:
                return parse(extract_json(content))
            except MalformedAnswer as e:
                self.counts["malformed"] += 1
                self.counts[f"malformed_{kind}"] += 1
                log.debug("malformed %s answer (%s)", kind, e)
                if attempt < self.spec.max_retries:
                    self.counts["retries"] += 1
        return None

    # -- one unit
    async def _unit(self, unit: Unit) -> dict:
        local: Counter = Counter()
        entry: dict[str, Any] = {
            "key": unit.key, "unit": unit.index, "chunk_ids": unit.chunk_ids, "status": "ok", "questions": [],
        }
        await self._fill_unit(unit, entry, local)
        entry["counts"] = dict(local)
        return entry

    async def _fill_unit(self, unit: Unit, entry: dict, local: Counter) -> None:
        spec = self.spec
        messages = prompts.generation_messages(unit.chunks, spec.questions_per_chunk, unit.complexities,
                                               (spec.complexity.min, spec.complexity.max))
        try:
            generated = await self._ask("generation", spec.model, messages, spec.temperature,
                                        lambda d: parse_generation(d, unit, spec, local))
        except _Rejected as e:
            entry.update(status="rejected", error=str(e))
            return
        if generated is None:
            entry["status"] = "malformed"
            return
        try:
            scores = await self._ask("judge", self.judge_model, prompts.judge_messages(unit.chunks, generated), 0.0,
                                     lambda d: parse_judge(d, len(generated)))
        except _Rejected as e:
            entry.update(status="rejected", error=str(e))
            return
        if scores is None:
            entry["status"] = "judge_malformed"
            return
        for i, q in enumerate(generated, start=1):
            q = dict(q)
            q.pop("passages", None)
            q["scores"] = scores.get(i, {})
            entry["questions"].append(q)

    async def _unit_task(self, unit: Unit, sem: asyncio.Semaphore, task) -> None:
        async with sem:
            if self.aborted:
                return
            try:
                entry = await self._unit(unit)
            except _Aborted:
                return
            except (InvalidInput, StageFailed):
                self.aborted = True
                raise
            except _TransientFailure as e:
                self.counts["failed_units"] += 1
                self.failures.append(str(e))
                self.consecutive_failures += 1
                log.warning("generation unit %d failed after %d retries: %s", unit.index, self.spec.max_retries, e)
                if self.consecutive_failures >= self.spec.concurrency + 2:
                    self.aborted = True
                    raise StageFailed(self._failure_message("the endpoint keeps failing")) from None
                return
        self.consecutive_failures = 0
        entry["finishedAt"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if entry["status"] != "rejected":  # a rejected request may succeed once the spec is fixed
            self._append(entry)
        self.results[unit.key] = entry
        task.advance()

    def _failure_message(self, why: str) -> str:
        done = len(self.results)
        return (f"{why}: {self.counts['failed_units']} generation unit(s) failed after {self.spec.max_retries} "
                f"retries (last error: {self.failures[-1] if self.failures else '?'}; endpoint "
                f"{self.spec.endpoint}). {done} finished unit(s) are saved in {self.progress_path}; "
                "a re-run resumes from there")

    async def run(self, units: list[Unit]) -> tuple[list[QuestionRecord], dict]:
        import openai

        t0 = time.monotonic()
        spec = self.spec
        done = self._load_done()
        self.results: dict[str, dict] = {u.key: done[u.key] for u in units if u.key in done}
        self.resumed_units = len(self.results)
        pending = [u for u in units if u.key not in self.results]
        with self.progress.task("questions generated", total=len(units)) as task:
            if self.results:
                task.advance(len(self.results))
                log.info("resuming: %d of %d generation units already finished in %s",
                         len(self.results), len(units), self.progress_path)
            if pending:
                self.client = openai.AsyncOpenAI(base_url=spec.endpoint, api_key=self.api_key,
                                                 timeout=spec.request_timeout_seconds, max_retries=0)
                sem = asyncio.Semaphore(spec.concurrency)
                tasks = [asyncio.create_task(self._unit_task(u, sem, task)) for u in pending]
                try:
                    for fut in asyncio.as_completed(tasks):
                        await fut
                except BaseException:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
                finally:
                    await self.client.close()
        if self.failures:
            raise StageFailed(self._failure_message("the LLM endpoint failed"))
        return self._assemble(units, time.monotonic() - t0)

    # -- results
    def _assemble(self, units: list[Unit], seconds: float) -> tuple[list[QuestionRecord], dict]:
        spec = self.spec
        statuses: Counter = Counter()
        c = self.counts
        records: list[QuestionRecord] = []
        seen: set[str] = set()
        hops: Counter = Counter()
        quality: list[float] = []
        for unit in units:
            entry = self.results[unit.key]
            statuses[entry.get("status", "ok")] += 1
            for k, v in (entry.get("counts") or {}).items():
                c[k] += v
            for q in entry.get("questions", []):
                c["generated"] += 1
                overall = (q.get("scores") or {}).get("overall")
                if overall is None:
                    c["unjudged"] += 1
                    continue
                c["judged"] += 1
                if overall < spec.quality_threshold:
                    c["dropped_below_threshold"] += 1
                    continue
                norm = normalise_question(q["question"])
                if norm in seen:
                    c["duplicates"] += 1
                    continue
                seen.add(norm)
                qid = hashlib.sha256(f"{unit.key}\n{norm}".encode()).hexdigest()[:16]
                rec = QuestionRecord(
                    question_id=qid, question=q["question"], answer=q.get("answer", ""),
                    query_type=q.get("query_type", "other"), reasoning_type=q.get("reasoning_type", "other"),
                    question_complexity=q.get("complexity", spec.complexity.min), segment_ids=q["segment_ids"],
                    hop_count=len(q["segment_ids"]), quality_score=float(overall), generator="llm",
                    scores=q["scores"],
                )
                records.append(rec)
                hops[rec.hop_count] += 1
                quality.append(rec.quality_score)

        n = len(units)
        if n and statuses["malformed"] == n:
            raise InvalidInput(
                f"the answers of model {spec.model!r} at {spec.endpoint} could not be parsed as the JSON asked "
                f"for in any of the {n} generation unit(s) (after {spec.max_retries} retries each); check that "
                "spec.sdg.model is an instruction-following chat model", field="spec.sdg.model")
        if n and statuses["malformed"] + statuses["judge_malformed"] == n and statuses["judge_malformed"]:
            field = "spec.sdg.judgeModel" if spec.judge_model else "spec.sdg.model"
            raise InvalidInput(
                f"the judge model {self.judge_model!r} never returned parsable scores (JSON) in any of the {n} "
                f"generation unit(s); check {field}", field=field)
        if n and statuses["rejected"] == n:
            errors = [self.results[u.key].get("error", "") for u in units]
            raise InvalidInput(f"the LLM endpoint {spec.endpoint} rejected every request ({errors[-1]}); check "
                               "spec.sdg.model and spec.sdg.maxOutputTokens", field="spec.sdg")

        total = _usage()
        for u in self.usage.values():
            for k in total:
                total[k] += u[k]
        stats = {
            "generator": "llm", "model": spec.model, "judgeModel": self.judge_model, "endpoint": spec.endpoint,
            "units": n,
            "single_hop_units": sum(1 for u in units if not u.multi_hop),
            "multi_hop_units": sum(1 for u in units if u.multi_hop),
            "chunks_used": sum(len(u.chunks) for u in units),
            "resumed_units": self.resumed_units,
            "malformed_units": statuses["malformed"], "judge_malformed_units": statuses["judge_malformed"],
            "rejected_units": statuses["rejected"],
            "requests": c["requests"], "generation_requests": c["generation_requests"],
            "judge_requests": c["judge_requests"], "retries": c["retries"], "rate_limited": c["rate_limited"],
            "server_errors": c["server_errors"], "timeouts": c["timeouts"], "connection_errors": c["connection_errors"],
            "malformed": c["malformed"], "truncated": c["truncated"],
            "generated": c["generated"], "judged": c["judged"], "unjudged": c["unjudged"], "kept": len(records),
            "dropped_below_threshold": c["dropped_below_threshold"], "duplicates": c["duplicates"],
            "invalid_questions": c["invalid_questions"] + c["invalid_passages"] + c["dropped_refers_to_passage"],
            "hop_counts": {str(k): hops[k] for k in sorted(hops)},
            "mean_quality": round(sum(quality) / len(quality), 3) if quality else None,
            "usage": {"generation": dict(self.usage["generation"]), "judge": dict(self.usage["judge"]),
                      "total": total},
            "seconds": round(seconds, 2),
        }
        return records, stats

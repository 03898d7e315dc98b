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

The parts live in their own modules: `eft.sdg.units` (planning), `eft.sdg.answers` (answer JSON and its
schemas), `eft.sdg.chat` (the HTTP client and its retry policy); this module is the run itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from eft.api.spec import SdgSpec
from eft.errors import InvalidInput, StageFailed
from eft.progress import Progress
from eft.records import Chunk, QuestionRecord, normalise_question
from eft.sdg import prompts
from eft.sdg.answers import parse_generation, parse_judge
from eft.sdg.chat import Aborted, ChatClient, Rejected, TransientFailure, new_usage
from eft.sdg.units import Unit, plan_units

log = logging.getLogger("eft.sdg.llm")

PROGRESS_FILE = "llm_progress.jsonl"


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


# ----------------------------------------------------------------------------- the run
class _Runner:
    """One generator run: finished units read back from the progress file, the rest asked concurrently,
    each finished unit appended to the progress file, and the kept questions assembled with the stats."""

    def __init__(self, spec: SdgSpec, work_dir: Path, progress: Progress, api_key: str):
        self.spec = spec
        self.work_dir = work_dir
        self.progress = progress
        self.counts: Counter = Counter()
        self.chat = ChatClient(spec, api_key, self.counts)
        self.judge_model = spec.judge_model or spec.model
        self.progress_path = work_dir / PROGRESS_FILE
        self.consecutive_failures = 0
        self.failures: list[str] = []

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
    # -- one unit
    async def _unit(self, unit: Unit) -> dict:
        local: Counter = Counter()
        entry: dict[str, Any] = {
            "key": unit.key, "unit": unit.index, "chunk_ids": unit.chunk_ids, "status": "ok", "questions": [],
        }
        await self._fill_unit(unit, entry, local)
        entry["counts"] = dict(local)
        return entry

    async def _answer(self, entry: dict, missing: str, kind: str, model: str, messages: list[dict],
                      temperature: float, parse: Callable[[Any], Any]) -> Any | None:
        """The parsed answer, or None after marking `entry` "rejected" (the endpoint refused the request) or
        `missing` (the answers stayed malformed)."""
        try:
            answer = await self.chat.ask(kind, model, messages, temperature, parse)
        except Rejected as e:
            entry.update(status="rejected", error=str(e))
            return None
        if answer is None:
            entry["status"] = missing
        return answer

    async def _fill_unit(self, unit: Unit, entry: dict, local: Counter) -> None:
        spec = self.spec
        messages = prompts.generation_messages(unit.chunks, spec.questions_per_chunk, unit.complexities,
                                               (spec.complexity.min, spec.complexity.max))
        generated = await self._answer(entry, "malformed", "generation", spec.model, messages, spec.temperature,
                                       lambda d: parse_generation(d, unit, spec, local))
        if generated is None:
            return
        scores = await self._answer(entry, "judge_malformed", "judge", self.judge_model,
                                    prompts.judge_messages(unit.chunks, generated), 0.0,
                                    lambda d: parse_judge(d, len(generated)))
        if scores is None:
            return
        for i, q in enumerate(generated, start=1):
            q = dict(q)
            q.pop("passages", None)
            q["scores"] = scores.get(i, {})
            entry["questions"].append(q)

    async def _unit_task(self, unit: Unit, sem: asyncio.Semaphore, task) -> None:
        async with sem:
            if self.chat.aborted:
                return
            try:
                entry = await self._unit(unit)
            except Aborted:
                return
            except (InvalidInput, StageFailed):
                self.chat.aborted = True
                raise
            except TransientFailure as e:
                self.counts["failed_units"] += 1
                self.failures.append(str(e))
                self.consecutive_failures += 1
                log.warning("generation unit %d failed after %d retries: %s", unit.index, self.spec.max_retries, e)
                if self.consecutive_failures >= self.spec.concurrency + 2:
                    self.chat.aborted = True
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
                self.chat.open()
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
                    await self.chat.close()
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

        total = new_usage()
        for u in self.chat.usage.values():
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
            "usage": {"generation": dict(self.chat.usage["generation"]), "judge": dict(self.chat.usage["judge"]),
                      "total": total},
            "seconds": round(seconds, 2),
        }
        return records, stats

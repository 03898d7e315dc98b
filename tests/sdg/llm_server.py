"""Test helper: a small OpenAI-compatible chat server that answers like an LLM would, with fault modes.

It serves `POST /v1/chat/completions` and `GET /v1/models` on 127.0.0.1 (a free port) from a background
thread. For a generation prompt it reads the numbered `<passage>` blocks and writes questions built from
terms in those passages (multi-hop questions combine terms of every passage and cite them all), in varying
answer styles (bare JSON, a ```json fence after some prose, JSON between sentences). One question in three is
deliberately vague ("What does it do ...?"): the judge, which scores by how well a question's words are
supported by the passages, rates those below 7, so threshold filtering is exercised. Every 200 answer carries
`usage` (whitespace token counts), and the server keeps the totals it reported.

Fault modes (constructor arguments): `api_key` (401 without the right bearer token), `models` (404 for
others), `rate_limit_first` (429 with Retry-After for the first N requests), `error_500_every` (every Nth
request fails with 500), `malformed_first` (prose instead of JSON for the first N generation requests),
`garbage` (prose for everything), `garbage_if` (prose for generation prompts containing this text),
`fail_after_units` (503 for every request once N units have been judged), `reject_response_format` (400 when a
request carries `response_format`, as some servers do), `bad_request` (400 with this message for everything),
`slow_first` + `delay_seconds` (the first N requests answer only after a delay, to provoke client timeouts).

Usage:
    with FakeLLM(rate_limit_first=2) as llm:
        spec = SdgSpec(endpoint=llm.url, model=llm.model)
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections import Counter

from aiohttp import web

STOPWORDS = set("""a an and are as at be by can do does for from has have how i in is it its of on or that the this to
was what when where which while who why will with you your not into than then them they their there these those
should would could about after before each other more most only over same such also been being both every does""".split())
#: Wording of the generated question templates; the judge scores support by the other (content) words.
TEMPLATE_WORDS = set("configure together happens matter settings affect interact during upgrade".split())

_PASSAGE = re.compile(r'<passage id="(\d+)"[^\n]*>\n(.*?)\n</passage>', re.S)
_QUESTIONS = re.compile(r"<questions>\n(.*?)\n</questions>", re.S)


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9][a-z0-9_\-]*", text.lower()) if len(w) > 3 and w not in STOPWORDS]


def key_terms(text: str, n: int = 4) -> list[str]:
    """Salient terms of a passage: code-ish tokens and capitalised names first, then long words."""
    seen: list[str] = []
    for t in re.findall(r"`([^`]+)`", text) + re.findall(r"\b[A-Z][A-Za-z0-9]+(?:[A-Z][a-z0-9]+)+\b|\b[a-z]+_[a-z_]+\b", text):
        if t not in seen:
            seen.append(t)
    for w in sorted(set(words(text)), key=lambda w: (-len(w), w)):
        if w not in (s.lower() for s in seen):
            seen.append(w)
    return seen[:n]


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]


QUERY_TYPES = ["procedural", "factual", "conceptual", "troubleshooting", "comparative"]
REASONING_TYPES = ["lookup", "inference", "synthesis", "causal", "multi_step"]


class FakeLLM:
    def __init__(self, *, model: str = "test/generator-1", models: tuple[str, ...] | None = None,
                 api_key: str | None = None, rate_limit_first: int = 0, retry_after: str | None = "30",
                 error_500_every: int = 0, malformed_first: int = 0, garbage: bool = False,
                 garbage_if: str | None = None, fail_after_units: int | None = None,
                 reject_response_format: bool = False, bad_request: str | None = None,
                 slow_first: int = 0, delay_seconds: float = 0.0):
        self.model = model
        self.models = set(models or (model,))
        self.api_key = api_key
        self.rate_limit_first = rate_limit_first
        self.retry_after = retry_after
        self.error_500_every = error_500_every
        self.malformed_first = malformed_first
        self.garbage = garbage
        self.garbage_if = garbage_if
        self.fail_after_units = fail_after_units
        self.reject_response_format = reject_response_format
        self.bad_request = bad_request
        self.slow_first = slow_first
        self.delay_seconds = delay_seconds
        # what the server saw and answered
        self.requests = 0
        self.by_kind: Counter = Counter()          # generation / judge requests received (any outcome)
        self.statuses: Counter = Counter()         # HTTP status -> count
        self.usage = {k: {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0} for k in ("generation", "judge")}
        self.generated_units: list[tuple[str, ...]] = []  # passages (first 60 chars) of answered generation requests
        self.judged_units = 0
        self._gen_count = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "FakeLLM":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_get("/v1/models", self._list_models)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.SockSite(self._runner, sock).start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-llm", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake LLM server did not start")

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    # ------------------------------------------------------------------ handlers
    def _error(self, status: int, message: str, headers: dict | None = None, code: str | None = None) -> web.Response:
        self.statuses[status] += 1
        body = {"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error",
                          "code": code}}
        return web.json_response(body, status=status, headers=headers)

    async def _list_models(self, request: web.Request) -> web.Response:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Invalid API key", code="invalid_api_key")
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in sorted(self.models)]})

    async def _chat(self, request: web.Request) -> web.Response:
        self.requests += 1
        n = self.requests
        body = await request.json()
        messages = body.get("messages", [])
        prompt = "\n".join(str(m.get("content", "")) for m in messages)
        kind = "judge" if "<questions>" in prompt else "generation"
        self.by_kind[kind] += 1

        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Incorrect API key provided.", code="invalid_api_key")
        if body.get("model") not in self.models:
            return self._error(404, f"The model `{body.get('model')}` does not exist or you do not have access to it.",
                               code="model_not_found")
        if n <= self.slow_first:
            await asyncio.sleep(self.delay_seconds)  # the client times out before this answer
        if self.bad_request is not None:
            return self._error(400, self.bad_request)
        if self.reject_response_format and "response_format" in body:
            return self._error(400, "response_format is not supported by this server")
        if n <= self.rate_limit_first:
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
            return self._error(429, "Rate limit reached, please slow down.", headers=headers, code="rate_limit_exceeded")
        if self.error_500_every and n % self.error_500_every == 0:
            return self._error(500, "internal error (simulated)")
        if self.fail_after_units is not None and self.judged_units >= self.fail_after_units:
            return self._error(503, "service unavailable (simulated outage)")

        passages = [(int(i), text) for i, text in _PASSAGE.findall(prompt)]
        if kind == "generation":
            self._gen_count += 1
            if (self.garbage or self._gen_count <= self.malformed_first
                    or (self.garbage_if is not None and self.garbage_if in prompt)):
                content = self._garbage(self._gen_count)
            else:
                content = self._style(self._generate(prompt, passages), n)
                self.generated_units.append(tuple(t[:60] for _, t in passages))
        else:
            if self.garbage:
                content = self._garbage(n)
            else:
                content = self._style(self._judge(prompt, passages), n)
                self.judged_units += 1
        return self._completion(kind, body.get("model"), prompt, content)

    def _completion(self, kind: str, model: str, prompt: str, content: str) -> web.Response:
        p, c = len(prompt.split()), len(content.split())
        u = self.usage[kind]
        u["prompt_tokens"] += p
        u["completion_tokens"] += c
        u["total_tokens"] += p + c
        self.statuses[200] += 1
        return web.json_response({
            "id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        })

    # ------------------------------------------------------------------ "LLM" answers
    @staticmethod
    def _garbage(n: int) -> str:
        return [
            "I'm sorry, but I can't help with producing that list right now.",
            '{"questions": [{"question": "How do I enable the',  # truncated JSON
            "Sure! Here are some questions:\n1. What is it?\n2. How does it work?",
        ][n % 3]

    @staticmethod
    def _style(obj: dict, n: int) -> str:
        text = json.dumps(obj, indent=1)
        return [
            text,
            f"Here are the questions you asked for:\n```json\n{text}\n```",
            f"<think>The user wants JSON.</think>\nSure. {text}\nLet me know if you need more.",
        ][n % 3]

    def _generate(self, prompt: str, passages: list[tuple[int, str]]) -> dict:
        m = re.search(r"exactly (\d+)", prompt)
        count = int(m.group(1)) if m else 2
        m = re.search(r"Aim for these complexities, one per question: ([\d, ]+)", prompt)
        complexities = [int(x) for x in m.group(1).split(",")] if m else [3] * count
        terms = [key_terms(text) for _, text in passages]
        numbers = [i for i, _ in passages]
        questions = []
        for k in range(count):
            if k % 3 == 2:  # a vague question, as weak generators write; the judge should reject it
                q = {"question": "What does it do and why would someone use it?", "passages": numbers}
            elif len(passages) == 1:
                t = terms[0]
                a, b = t[k % len(t)], t[(k + 1) % len(t)]
                template = ["How do I configure {a} together with {b}?", "What happens to {a} when {b} is set?",
                            "Why does {a} matter for {b}?", "Which {b} settings affect {a}?"][k % 4]
                q = {"question": template.format(a=a, b=b), "passages": [numbers[0]]}
            else:
                picked = [t[k % len(t)] for t in terms]
                q = {"question": f"How does {picked[0]} interact with " + " and ".join(picked[1:])
                                 + " during an upgrade?", "passages": numbers}
            q.update({
                "answer": " ".join(first_sentence(text) for _, text in passages),
                "query_type": QUERY_TYPES[k % len(QUERY_TYPES)],
                "reasoning_type": "synthesis" if len(passages) > 1 else REASONING_TYPES[k % len(REASONING_TYPES)],
                "complexity": complexities[k % len(complexities)],
            })
            questions.append(q)
        return {"questions": questions}

    def _judge(self, prompt: str, passages: list[tuple[int, str]]) -> dict:
        items = json.loads(_QUESTIONS.search(prompt).group(1))
        vocabulary = set(words(" ".join(t for _, t in passages)))
        evaluations = []
        for it in items:
            qw = [w for w in words(it["question"]) if w not in TEMPLATE_WORDS]
            support = sum(w in vocabulary for w in qw) / max(1, len(qw))
            good = support >= 0.5
            evaluations.append({
                "index": it["index"], "relevance": 9 if good else 4, "accuracy": 8,
                "context_support": round(10 * support, 1), "clarity": 8 if good else 5,
                "overall": 8.5 if good else 3.5,
                "reason": "grounded and specific" if good else "too vague to retrieve anything specific",
            })
        return {"evaluations": evaluations}

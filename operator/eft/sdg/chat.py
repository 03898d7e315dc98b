"""The HTTP side of the `llm` generator: chat completions from an OpenAI-compatible endpoint through the
`openai` client, with the project's retry policy and token accounting.

401/403/404 and an endpoint that cannot be reached at all raise `InvalidInput` at once (naming the spec
field to fix); 429, 5xx, timeouts and connection errors are retried with exponential backoff and jitter
(Retry-After honoured, capped) and end in `TransientFailure`; a request the endpoint rejects as such
(400/413/422) raises `Rejected`; once the run is aborted, `Aborted`. An endpoint that refuses
`response_format` is asked again without it.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable

from eft.api.spec import SdgSpec
from eft.errors import InvalidInput
from eft.sdg.answers import MalformedAnswer, extract_json

log = logging.getLogger("eft.sdg.llm")

#: Exponential backoff: attempt n waits about BACKOFF_BASE_SECONDS * 2**n (with jitter), at most
#: BACKOFF_MAX_SECONDS; a server's Retry-After is honoured up to RETRY_AFTER_MAX_SECONDS. Tests shrink these.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
RETRY_AFTER_MAX_SECONDS = 120.0

_TRANSIENT_STATUS = {408, 409, 425, 429}


class TransientFailure(Exception):
    """A request still failed (429/5xx/timeout/connection) after all retries."""


class Aborted(Exception):
    """Another unit hit a fatal error: stop without sending more requests."""


class Rejected(Exception):
    """The endpoint rejected the request itself (HTTP 400/413/422): retrying the same request cannot help."""


def new_usage() -> dict[str, int]:
    """Token counters of one kind of request (OpenAI `usage` fields)."""
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


class ChatClient:
    """Chat completions for one generator run. `counts` (shared with the run) receives request, retry and
    error counters; `usage` the token usage per kind; `aborted` stops every further request."""

    def __init__(self, spec: SdgSpec, api_key: str, counts: Counter):
        self.spec = spec
        self.api_key = api_key
        self.counts = counts
        self.usage = {"generation": new_usage(), "judge": new_usage()}
        self.any_success = False
        self.use_response_format = True
        self.aborted = False
        self.client: Any = None

    def open(self) -> None:
        import openai

        self.client = openai.AsyncOpenAI(base_url=self.spec.endpoint, api_key=self.api_key,
                                         timeout=self.spec.request_timeout_seconds, max_retries=0)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def chat(self, kind: str, model: str, messages: list[dict], temperature: float) -> str | None:
        """The content of one chat completion (`kind` is "generation" or "judge"), retried as the module says."""
        import openai

        spec = self.spec
        attempt = 0
        while True:
            if self.aborted:
                raise Aborted()
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
                    raise Rejected(f"HTTP {status}: {_error_detail(e)}") from None
                if status == 429:
                    self.counts["rate_limited"] += 1
                    ra = _retry_after(e)
                    wait = None if ra is None else min(ra, RETRY_AFTER_MAX_SECONDS)
                elif status >= 500 or status in _TRANSIENT_STATUS:
                    self.counts["server_errors"] += 1
                else:
                    raise Rejected(f"HTTP {status}: {_error_detail(e)}") from None
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
                raise TransientFailure(last)
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

    async def ask(self, kind: str, model: str, messages: list[dict], temperature: float,
                   parse: Callable[[Any], Any]) -> Any | None:
        """One JSON answer parsed by `parse`; malformed answers are re-asked up to max_retries, then None."""
        for attempt in range(self.spec.max_retries + 1):
            content = await self.chat(kind, model, messages, temperature)
            try:
                return parse(extract_json(content))
            except MalformedAnswer as e:
                self.counts["malformed"] += 1
                self.counts[f"malformed_{kind}"] += 1
                log.debug("malformed %s answer (%s)", kind, e)
                if attempt < self.spec.max_retries:
                    self.counts["retries"] += 1
        return None

"""OpenAI / NIM request and response shapes, for the OpenAPI document (requests are checked in `validate`).

Validation is written out by hand rather than left to a framework so that every problem gets an OpenAI-style
error naming the exact parameter (`input[3]`, `dimensions`, ...) and a 4xx status, never a 5xx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field


class ApiError(Exception):
    """A client mistake, answered as `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ----------------------------------------------------------------------------- OpenAPI documentation models
class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class EmbeddingRequest(BaseModel):
    """`POST /v1/embeddings` (OpenAI schema plus NIM's `input_type` and `truncate`)."""

    model_config = ConfigDict(extra="allow")
    input: str | list[str] = Field(..., description="A text or a list of texts. Token arrays are refused: ids from "
                                                    "another tokenizer would be embedded as nonsense (LangChain: "
                                                    "OpenAIEmbeddings(check_embedding_ctx_length=False)).")
    model: str = Field(..., description="The served model id (see GET /v1/models).")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`base64`: little-endian float32 bytes, as the OpenAI API.")
    dimensions: int | None = Field(None, ge=1, description="One of the widths the model was trained for (see "
                                                           "GET /v1/models `supported_dimensions`): the first N "
                                                           "dimensions, re-normalised.")
    input_type: Literal["query", "passage"] | None = Field(
        None, description="NIM extension: applies the model's query or passage prefix. Required for a model whose "
                          "queries and passages are encoded differently, unless the server sets a default.")
    truncate: Literal["NONE", "START", "END"] = Field(
        "NONE", description="NIM extension: an input over the model's limit is an error (NONE) or cut (START/END).")
    user: str | None = Field(None, description="Accepted and ignored.")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str | None = None
    max_model_len: int | None = None
    dimensions: int | None = None
    supported_dimensions: list[int] | None = None
    input_type_required: bool | None = None
    default_input_type: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class HealthResponse(BaseModel):
    object: Literal["health.response"] = "health.response"
    status: str
    message: str


# ----------------------------------------------------------------------------- validation
def unknown_model(model: str, served_names) -> ApiError:
    """OpenAI's 404 for a model this server does not serve, naming those it does."""
    return ApiError(404, f"the model '{model[:200]}' does not exist; this server serves "
                         f"{', '.join(sorted(served_names))}", "model", "model_not_found")


@dataclass
class ParsedRequest:
    texts: list[str]
    model: str
    encoding_format: str
    dimensions: int | None
    input_type: str | None
    truncate: str


def _is_token_ids(value: Any) -> bool:
    """A non-empty list of token ids (`[15339, 1917]`)."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool)
                                                           for v in value)


def _is_token_list(value: Any) -> bool:
    """`input` given as ids: one id list, or a list whose items include id lists (as tiktoken clients send)."""
    return _is_token_ids(value) or (isinstance(value, list) and any(_is_token_ids(v) for v in value))


#: What a client that sent token ids (LangChain's OpenAIEmbeddings does by default) must change.
TOKEN_ARRAY_MESSAGE = (
    "'input' holds token ids; this server only embeds text, because ids from another tokenizer (such as "
    "tiktoken's, which LangChain's OpenAIEmbeddings sends by default) would be embedded as nonsense. Send the "
    "text itself: with LangChain use OpenAIEmbeddings(..., check_embedding_ctx_length=False); with the openai "
    "client pass strings as 'input'")


def validate(body: Any, served_names: set[str], max_inputs: int, dimensions: Sequence[int],
             input_type_required: bool = False, default_input_type: str | None = None) -> ParsedRequest:
    """Check one `/v1/embeddings` body. `dimensions`: the widths the model was trained for (the last is its full
    width); `input_type_required`: the model encodes queries and passages differently, so a request without
    `input_type` is refused unless the server's operator chose `default_input_type`."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", None, "invalid_body")

    model = body.get("model")
    if model is None:
        raise ApiError(400, "'model' is required", "model", "missing_required_parameter")
    if not isinstance(model, str):
        raise ApiError(400, "'model' must be a string", "model", "invalid_type")
    if model not in served_names:
        raise unknown_model(model, served_names)

    if "input" not in body or body["input"] is None:
        raise ApiError(400, "'input' is required", "input", "missing_required_parameter")
    raw = body["input"]
    if isinstance(raw, str):
        if raw == "":
            raise ApiError(400, "'input' must not be an empty string", "input", "invalid_value")
        texts = [raw]
    elif isinstance(raw, list):
        if not raw:
            raise ApiError(400, "'input' must not be an empty list", "input", "invalid_value")
        if _is_token_list(raw):
            raise ApiError(400, TOKEN_ARRAY_MESSAGE, "input", "unsupported_input")
        if len(raw) > max_inputs:
            raise ApiError(400, f"'input' has {len(raw)} items, more than the maximum of {max_inputs} per request",
                           "input", "too_many_inputs")
        for i, item in enumerate(raw):
            if not isinstance(item, str):
                raise ApiError(400, f"'input[{i}]' must be a string, got {type(item).__name__}", f"input[{i}]",
                               "invalid_type")
            if item == "":
                raise ApiError(400, f"'input[{i}]' must not be an empty string", f"input[{i}]", "invalid_value")
        texts = raw
    else:
        raise ApiError(400, f"'input' must be a string or a list of strings, got {type(raw).__name__}", "input",
                       "invalid_type")

    fmt = body.get("encoding_format")
    if fmt is None:
        fmt = "float"
    if fmt not in ("float", "base64"):
        raise ApiError(400, f"'encoding_format' must be 'float' or 'base64', got {str(fmt)[:50]!r}",
                       "encoding_format", "invalid_value")

    dims = body.get("dimensions")
    if dims is not None:
        if isinstance(dims, bool) or not isinstance(dims, int):
            raise ApiError(400, "'dimensions' must be an integer", "dimensions", "invalid_type")
        if dims not in dimensions:
            widths = ", ".join(str(d) for d in sorted(dimensions))
            raise ApiError(400, f"'dimensions' must be one of the widths this model was trained for ({widths}), "
                                f"got {dims}", "dimensions", "invalid_value")

    input_type = body.get("input_type")
    if input_type is not None:
        if not isinstance(input_type, str) or input_type.lower() not in ("query", "passage"):
            raise ApiError(400, f"'input_type' must be 'query' or 'passage', got {str(input_type)[:50]!r}",
                           "input_type", "invalid_value")
        input_type = input_type.lower()
    elif input_type_required:
        if default_input_type is None:
            raise ApiError(400, "'input_type' is required for this model: it encodes queries and passages "
                                "differently; send input_type 'query' or 'passage'", "input_type",
                           "missing_required_parameter")
        input_type = default_input_type

    truncate = body.get("truncate")
    if truncate is None:
        truncate = "NONE"
    if not isinstance(truncate, str) or truncate.upper() not in ("NONE", "START", "END"):
        raise ApiError(400, f"'truncate' must be NONE, START or END, got {str(truncate)[:50]!r}", "truncate",
                       "invalid_value")

    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise ApiError(400, "'user' must be a string", "user", "invalid_type")
    return ParsedRequest(texts, model, fmt, dims, input_type, truncate.upper())

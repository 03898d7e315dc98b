"""The embedding server over real HTTP (uvicorn on 127.0.0.1): OpenAI client, NIM extensions, bad input, health,
metrics, dynamic batching, backends and the `eft serve` command."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from model_workspace import FACTS, ServerThread, exported_workdir, free_port, st_model

pytestmark = pytest.mark.slow

MODEL = "minilm-test"
MAX_INPUTS = 8
MAX_BYTES = 64 * 1024


def _wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never became ready")


def _app(model_dir, **kw):
    from eft.api.serving import ServingSettings
    from eft.serve.app import create_app

    settings = ServingSettings(model_dir=str(model_dir), max_inputs_per_request=MAX_INPUTS,
                              max_request_bytes=MAX_BYTES, max_batch_size=16, max_wait_ms=5.0)
    for k, v in kw.items():
        setattr(settings, k, v)
    return create_app(settings)


@pytest.fixture(scope="module")
def server():
    with ServerThread(_app(exported_workdir() / "export")) as srv:
        _wait_ready(srv.url)
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _embed(client, **body):
    body.setdefault("model", MODEL)
    r = client.post("/v1/embeddings", json=body)
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32), r.json()


def _ref(texts):
    return np.asarray(st_model().encode(list(texts), normalize_embeddings=True), dtype=np.float32)


def _assert_parity(got, ref, bound=0.999):
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= bound, cos


# ----------------------------------------------------------------------------- OpenAI client and parity
def test_openai_client_float_and_base64_equal_pytorch(server):
    import openai

    oc = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    texts = ["How do bees tell others where flowers are?", "Espresso is brewed under pressure.", "short"]
    ref = _ref(texts)
    as_float = oc.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    as_b64 = oc.embeddings.create(model=MODEL, input=texts, encoding_format="base64")
    default = oc.embeddings.create(model=MODEL, input=texts)  # the client asks for base64 and decodes it
    assert isinstance(as_b64.data[0].embedding, str) and isinstance(default.data[0].embedding, list)
    for resp in (as_float, as_b64, default):
        assert [d.index for d in resp.data] == [0, 1, 2]
        got = np.array([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") if isinstance(d.embedding, str)
                        else d.embedding for d in resp.data], dtype=np.float32)
        assert got.shape == (3, 384)
        _assert_parity(got, ref)
        assert resp.model == MODEL
        assert resp.usage.prompt_tokens == resp.usage.total_tokens > 0
    single = oc.embeddings.create(model=MODEL, input="short")
    np.testing.assert_allclose(single.data[0].embedding, as_float.data[2].embedding, atol=1e-5)


def test_base64_is_little_endian_float32(client):
    got, _ = _embed(client, input=["one text"])
    r = client.post("/v1/embeddings", json={"model": MODEL, "input": ["one text"], "encoding_format": "base64"})
    raw = r.json()["data"][0]["embedding"]
    assert isinstance(raw, str)
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(raw), dtype="<f4"), got[0], atol=1e-6)


def test_usage_counts_tokens_after_truncation(client):
    # Usage counts what the user sent: the text's tokens, not the special tokens the model's format adds.
    tok = st_model().tokenizer
    texts = ["hello world", "a slightly longer sentence with more tokens"]
    _, body = _embed(client, input=texts)
    expected = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert body["usage"] == {"prompt_tokens": expected, "total_tokens": expected}
    _, body = _embed(client, input="word " * 1000, truncate="END")
    assert body["usage"]["prompt_tokens"] == 254  # 256 less [CLS] and [SEP]


def test_models_endpoint(client):
    r = client.get("/v1/models")
    assert r.status_code == 200
    (card,) = r.json()["data"]
    assert card["id"] == MODEL and card["object"] == "model" and card["dimensions"] == 384
    assert card["max_model_len"] == 256
    assert card["supported_dimensions"] == [384]  # MiniLM was never trained for narrower widths
    assert card["input_type_required"] is False  # no prefixes: queries and passages are encoded alike


def test_one_model_is_retrieved_as_the_openai_client_asks(server, client):
    import openai

    oa = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    card = oa.models.retrieve(MODEL)
    assert card.id == MODEL and card.object == "model"
    assert card.model_dump()["dimensions"] == 384
    with pytest.raises(openai.NotFoundError) as err:
        oa.models.retrieve("org/another-model")
    assert err.value.body["code"] == "model_not_found" and MODEL in err.value.body["message"]


# ----------------------------------------------------------------------------- dimensions, input_type, truncate
def _variant_server(folder: Path, meta_changes: dict, **settings):
    """The test export with changed metadata (prefixes, trained widths), served with `settings`."""
    src = exported_workdir() / "export" / "onnx"
    dst = folder / "onnx"
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "eft_model.json":
            (dst / f.name).symlink_to(f)
    meta = json.loads((src / "eft_model.json").read_text())
    meta.update(meta_changes)
    (dst / "eft_model.json").write_text(json.dumps(meta))
    return ServerThread(_app(dst, **settings))


@pytest.fixture(scope="module")
def matryoshka_server(tmp_path_factory):
    """The export as a model trained with MatryoshkaLoss at 64 and 128 (its metadata lists the widths)."""
    with _variant_server(tmp_path_factory.mktemp("mrl"), {"supportedDimensions": [64, 128, 384]}) as srv:
        _wait_ready(srv.url)
        yield srv


@pytest.mark.parametrize("dims", [64, 128, 384])
def test_dimensions_truncate_and_renormalise(matryoshka_server, dims):
    with httpx.Client(base_url=matryoshka_server.url, timeout=30) as c:
        assert c.get("/v1/models").json()["data"][0]["supported_dimensions"] == [64, 128, 384]
        full, _ = _embed(c, input=["matryoshka style truncation"])
        got, _ = _embed(c, input=["matryoshka style truncation"], dimensions=dims)
    assert got.shape == (1, dims)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    expected = full[:, :dims] / np.linalg.norm(full[:, :dims], axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("dims", [1, 32, 100, 383, 385])
def test_dimensions_the_model_was_not_trained_for_are_refused(client, matryoshka_server, dims):
    r = client.post("/v1/embeddings", json={"model": MODEL, "input": "a", "dimensions": dims})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "dimensions" and "(384)" in err["message"], err
    with httpx.Client(base_url=matryoshka_server.url, timeout=30) as c:
        r = c.post("/v1/embeddings", json={"model": MODEL, "input": "a", "dimensions": dims})
    assert r.status_code == 400 and "(64, 128, 384)" in r.json()["error"]["message"]


PREFIXES = {"prefixes": {"query": "query: ", "passage": "passage: "}}


@pytest.fixture(scope="module")
def prefixed_server(tmp_path_factory):
    """The same export with query/passage prefixes in its metadata (as a model with prompts would have)."""
    with _variant_server(tmp_path_factory.mktemp("prefixed"), PREFIXES) as srv:
        _wait_ready(srv.url)
        yield srv


def test_input_type_applies_the_models_prefixes(prefixed_server):
    with httpx.Client(base_url=prefixed_server.url, timeout=30) as c:
        text = "what is the tallest mountain"
        as_query, qbody = _embed(c, input=text, input_type="query")
        as_passage, pbody = _embed(c, input=text, input_type="passage")
        _assert_parity(as_query, _ref(["query: " + text]), 0.9999)
        _assert_parity(as_passage, _ref(["passage: " + text]), 0.9999)
        assert float((as_query * as_passage).sum()) < 0.9999
        # The prefix is the model's, not the user's: both count the same tokens.
        assert qbody["usage"]["prompt_tokens"] == pbody["usage"]["prompt_tokens"] == 5
        upper, _ = _embed(c, input=text, input_type="QUERY")
        np.testing.assert_allclose(upper, as_query, atol=1e-6)
        assert c.get("/v1/models").json()["data"][0]["input_type_required"] is True


def test_missing_input_type_on_an_asymmetric_model_is_a_400(prefixed_server):
    with httpx.Client(base_url=prefixed_server.url, timeout=30) as c:
        r = c.post("/v1/embeddings", json={"model": MODEL, "input": "what is the tallest mountain"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "input_type" and err["code"] == "missing_required_parameter"
    assert "'input_type' is required for this model" in err["message"]


def _without_and_with_input_type(folder, meta_changes: dict, text: str, input_type: str, **settings):
    """(vectors and body of `text` sent without input_type, its vectors with `input_type`, the model card) from
    the export served with changed metadata."""
    with _variant_server(folder, meta_changes, **settings) as srv:
        _wait_ready(srv.url)
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            default, body = _embed(c, input=text)
            explicit, _ = _embed(c, input=text, input_type=input_type)
            card = c.get("/v1/models").json()["data"][0]
    return default, body, explicit, card


def test_the_operator_can_choose_a_default_input_type(tmp_path):
    text = "espresso is brewed under pressure"
    default, _, explicit_query, card = _without_and_with_input_type(tmp_path, PREFIXES, text, "query",
                                                                    default_input_type="passage")
    _assert_parity(default, _ref(["passage: " + text]), 0.9999)
    _assert_parity(explicit_query, _ref(["query: " + text]), 0.9999)
    assert card["input_type_required"] is False and card["default_input_type"] == "passage"


def test_a_models_one_shared_prefix_applies_without_input_type(tmp_path):
    text = "how do glaciers move"
    default, body, as_query, card = _without_and_with_input_type(
        tmp_path, {"prefixes": {"query": "search: ", "passage": "search: "}}, text, "query")
    _assert_parity(default, _ref(["search: " + text]), 0.9999)  # as in training and eval
    np.testing.assert_allclose(default, as_query, atol=1e-6)
    # the user's tokens only
    assert body["usage"]["prompt_tokens"] == len(st_model().tokenizer(text, add_special_tokens=False)["input_ids"])
    assert card["input_type_required"] is False


def test_an_app_started_again_serves_again(tmp_path):
    """The same app object run twice (an embedding app, a test client): its worker pools start with it."""
    app = _app(exported_workdir() / "export", max_inputs_per_request=64)
    texts = [f"text number {i}" for i in range(40)]  # over TOKENIZE_OFFLOAD: tokenised in the worker pool
    for _ in range(2):
        with ServerThread(app) as srv:
            _wait_ready(srv.url)
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                r = c.post("/v1/embeddings", json={"model": MODEL, "input": texts})
                assert r.status_code == 200, r.text
                assert len(r.json()["data"]) == 40


def test_long_texts_are_tokenised_off_the_event_loop(client, monkeypatch):
    """Tokenising runs over a whole text before truncation (about 1 ms per 1,000 characters), so a request with a
    long text, even a single one, is tokenised in the worker pool: the event loop (other requests, the health
    probes) never waits for it. Short requests stay on the loop."""
    import threading

    from eft.export.artifact import TextTokenizer
    from eft.serve.app import TOKENIZE_OFFLOAD_CHARS

    threads = []
    real = TextTokenizer.encode_counted

    def recording(self, *args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TextTokenizer, "encode_counted", recording)
    long_text = "vacuum " * (TOKENIZE_OFFLOAD_CHARS // 7 + 1)
    _embed(client, input="a short text")
    _, body = _embed(client, input=long_text, truncate="END")
    assert body["usage"]["prompt_tokens"] == 254  # cut to the model's 256 with its two special tokens
    _embed(client, input=["a short text", long_text[: TOKENIZE_OFFLOAD_CHARS // 2]] * 2, truncate="END")
    assert [name.startswith("eft-tokenize") for name in threads] == [False, True, True]


def test_truncation_never_cuts_the_prefix_and_limits_count_the_users_tokens(prefixed_server):
    tok = st_model().tokenizer
    with httpx.Client(base_url=prefixed_server.url, timeout=30) as c:
        # 254 tokens of text is the limit with or without a prefix (256 less [CLS]/[SEP]).
        fits = "word " * 254
        assert len(tok(fits, add_special_tokens=False)["input_ids"]) == 254
        for kind in ("query", "passage"):
            _, body = _embed(c, input=fits, input_type=kind, truncate="NONE")
            assert body["usage"]["prompt_tokens"] == 254
        r = c.post("/v1/embeddings", json={"model": MODEL, "input": fits + "word", "input_type": "query"})
        assert r.status_code == 400
        assert r.json()["error"]["message"].startswith("input has 255 tokens, more than the limit of 254")
        # START cuts the beginning of the user's text, never the prefix: query and passage stay different.
        text = "apple " * 300 + "river " * 300
        as_query, qbody = _embed(c, input=text, input_type="query", truncate="START")
        as_passage, pbody = _embed(c, input=text, input_type="passage", truncate="START")
        assert qbody["usage"]["prompt_tokens"] == pbody["usage"]["prompt_tokens"] == 254
    assert float((as_query * as_passage).sum()) < 0.999
    model = st_model()
    saved = model.max_seq_length
    model.max_seq_length = 512
    try:
        _assert_parity(as_query, _ref(["query: " + "river " * 254]), 0.9999)
        _assert_parity(as_passage, _ref(["passage: " + "river " * 254]), 0.9999)
    finally:
        model.max_seq_length = saved


def test_truncate_modes(client):
    head, tail = "apple " * 300, "river " * 300
    text = head + tail
    r = client.post("/v1/embeddings", json={"model": MODEL, "input": text})  # default NONE
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "input_too_long" and err["param"] == "input" and "256" in err["message"]
    r = client.post("/v1/embeddings", json={"model": MODEL, "input": ["ok", text], "truncate": "NONE"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[1]"
    end, _ = _embed(client, input=text, truncate="END")
    start, _ = _embed(client, input=text, truncate="START")
    lower, _ = _embed(client, input=text, truncate="end")
    np.testing.assert_allclose(lower, end, atol=1e-6)
    _assert_parity(end, _ref([head]), 0.9999)  # PyTorch truncates at the end too
    _assert_parity(start, _ref([tail]), 0.9999)
    assert float((start * end).sum()) < 0.9


def test_token_arrays_get_the_client_fix(server):
    # What LangChain's OpenAIEmbeddings sends by default (tiktoken ids), through the official client.
    import openai

    oc = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    for ids in ([[15339, 1917]], [15339, 1917], ["text", [15339, 1917]]):
        with pytest.raises(openai.BadRequestError) as exc:
            oc.embeddings.create(model=MODEL, input=ids)
        err = exc.value.body
        assert err["code"] == "unsupported_input" and err["param"] == "input"
        assert "check_embedding_ctx_length=False" in err["message"] and "another tokenizer" in err["message"]


# ----------------------------------------------------------------------------- bad input
BAD_REQUESTS = [
    ("empty string", {"input": ""}, 400, "input", "empty string"),
    ("empty list", {"input": []}, 400, "input", "empty list"),
    ("empty item", {"input": ["a", ""]}, 400, "input[1]", "empty string"),
    ("too many inputs", {"input": ["x"] * (MAX_INPUTS + 1)}, 400, "input", f"maximum of {MAX_INPUTS}"),
    ("non-string item", {"input": ["a", 3]}, 400, "input[1]", "must be a string"),
    ("nested list item", {"input": ["a", ["b"]]}, 400, "input[1]", "must be a string"),
    ("input object", {"input": {"text": "a"}}, 400, "input", "string or a list of strings"),
    ("token list", {"input": [101, 2023, 102]}, 400, "input", "check_embedding_ctx_length=False"),
    ("token lists", {"input": [[101, 2023, 102]]}, 400, "input", "check_embedding_ctx_length=False"),
    ("too long, truncate NONE", {"input": "word " * 400, "truncate": "NONE"}, 400, "input",
     "400 tokens, more than the limit of 254 (the model's 256 tokens less 2 special tokens)"),
    ("dimensions too large", {"input": "a", "dimensions": 385}, 400, "dimensions", "trained for (384)"),
    ("dimensions zero", {"input": "a", "dimensions": 0}, 400, "dimensions", "trained for (384)"),
    ("dimensions negative", {"input": "a", "dimensions": -5}, 400, "dimensions", "trained for (384)"),
    ("dimensions string", {"input": "a", "dimensions": "12"}, 400, "dimensions", "integer"),
    ("dimensions float", {"input": "a", "dimensions": 12.5}, 400, "dimensions", "integer"),
    ("unknown model", {"input": "a", "model": "gpt-4"}, 404, "model", "does not exist"),
    ("model not a string", {"input": "a", "model": 7}, 400, "model", "string"),
    ("missing model", {"input": "a", "model": None}, 400, "model", "required"),
    ("missing input", {}, 400, "input", "required"),
    ("unknown input_type", {"input": "a", "input_type": "document2"}, 400, "input_type", "query' or 'passage"),
    ("unknown truncate", {"input": "a", "truncate": "MIDDLE"}, 400, "truncate", "NONE, START or END"),
    ("unknown encoding_format", {"input": "a", "encoding_format": "int8"}, 400, "encoding_format", "base64"),
]


@pytest.mark.parametrize("name,body,status,param,words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_openai_error_and_server_keeps_serving(client, name, body, status, param, words):
    body = {"model": MODEL, **body}
    if body["model"] is None:
        del body["model"]
    r = client.post("/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert words in err["message"]
    _embed(client, input="still serving")


RAW_BAD = [
    ("malformed JSON", b'{"model": "minilm-test", "input": ["a",', "application/json", 400, "invalid_json"),
    ("not an object", b'["a", "b"]', "application/json", 400, "invalid_body"),
    ("empty body", b"", "application/json", 400, "invalid_body"),
    ("invalid UTF-8", b'{"model": "minilm-test", "input": "\xff\xfe"}', "application/json", 400, "invalid_json"),
    ("wrong content type", b'{"model": "minilm-test", "input": "a"}', "text/plain", 415, "unsupported_media_type"),
    ("form content type", b"model=minilm-test&input=a", "application/x-www-form-urlencoded", 415,
     "unsupported_media_type"),
    ("huge body", json.dumps({"model": MODEL, "input": ["x" * 1000] * 100}).encode(), "application/json", 413,
     "request_too_large"),
]


@pytest.mark.parametrize("name,raw,ctype,status,code", RAW_BAD, ids=[b[0] for b in RAW_BAD])
def test_malformed_requests(client, name, raw, ctype, status, code):
    r = client.post("/v1/embeddings", content=raw, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    _embed(client, input="still serving")


def test_huge_chunked_body_without_content_length(client):
    def chunks():
        yield b'{"model": "minilm-test", "input": ["'
        for _ in range(200):
            yield b"y" * 1024
        yield b'"]}'

    r = client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    _embed(client, input="still serving")


def test_unknown_route_and_method_are_openai_errors(client):
    before = client.get("/metrics").text
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get("/v1/embeddings")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"  # HTTP requires it on a 405
    after = client.get("/metrics").text
    # errors are counted under the route the request counts under
    for route, code in (("other", "404"), ("/v1/embeddings", "405")):
        labels = f'route="{route}",type="invalid_request_error"'
        assert _metric(after, "eft_request_errors_total", labels) == _metric(
            before, "eft_request_errors_total", labels) + 1, route
        labels = f'code="{code}",route="{route}"'
        assert _metric(after, "eft_requests_total", labels) == _metric(before, "eft_requests_total", labels) + 1


def test_lone_surrogate_is_a_client_error(client):
    r = client.post("/v1/embeddings", content=b'{"model": "minilm-test", "input": "\\ud800 x"}',
                    headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    _embed(client, input="still serving")


# ----------------------------------------------------------------------------- readiness
def test_readiness_before_and_after_load():
    from eft.api.serving import ServingSettings
    from eft.serve.app import create_app
    from eft.serve.backends import locate

    release = threading.Event()
    source = locate(exported_workdir() / "export")

    def slow_loader():
        assert release.wait(60)
        return source.load()

    app = create_app(ServingSettings(model_dir="unused"), loader=slow_loader, meta=source.describe())
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        assert c.get("/v1/health/live").status_code == 200
        r = c.get("/v1/health/ready")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = c.post("/v1/embeddings", json={"model": MODEL, "input": "a"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
        assert "eft_model_ready 0.0" in c.get("/metrics").text
        release.set()
        _wait_ready(srv.url, 60)
        assert c.get("/v1/health/ready").json()["status"] == "ready"
        _embed(c, input="ready now")
        assert "eft_model_ready 1.0" in c.get("/metrics").text


def test_failed_load_is_reported_by_health():
    from eft.export.artifact import ModelMetadata
    from eft.api.serving import ServingSettings
    from eft.serve.app import create_app

    def broken():
        raise RuntimeError("weights are corrupt")

    app = create_app(ServingSettings(model_dir="unused"), loader=broken,
                     meta=ModelMetadata(name=MODEL, dimension=384, max_seq_length=256))
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        deadline = time.monotonic() + 10
        while c.get("/v1/health/ready").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        r = c.get("/v1/health/ready")
        assert r.status_code == 503 and "weights are corrupt" in r.json()["message"]
        assert c.get("/v1/health/live").status_code == 503


# ----------------------------------------------------------------------------- metrics and batching
def _metric(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + (("{" + labels + "}") if labels else " ")) or (
                labels and line.startswith(name + "{") and all(p in line for p in labels.split(","))):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics(client):
    before = client.get("/metrics").text
    ok_before = _metric(before, "eft_requests_total", 'code="200",route="/v1/embeddings"')
    tokens_before = _metric(before, "eft_embedding_tokens_total")
    used = 0
    for i in range(3):
        used += _embed(client, input=[f"metrics test {i}", "another"])[1]["usage"]["prompt_tokens"]
    client.post("/v1/embeddings", json={"model": MODEL, "input": ""})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert _metric(text, "eft_requests_total", 'code="200",route="/v1/embeddings"') == ok_before + 3
    assert _metric(text, "eft_requests_total", 'code="400",route="/v1/embeddings"') >= 1
    assert _metric(text, "eft_request_errors_total", 'route="/v1/embeddings",type="invalid_request_error"') >= 1
    assert _metric(text, "eft_embedding_tokens_total") == tokens_before + used
    assert _metric(text, "eft_request_duration_seconds_count", 'route="/v1/embeddings"') >= 4
    assert _metric(text, "eft_batch_size_count") >= 3
    assert 'eft_model_info{backend="onnx",model="minilm-test"} 1.0' in text
    assert "eft_inference_duration_seconds_bucket" in text and "eft_queue_depth" in text


def test_concurrent_requests_are_batched_and_correct(server, client):
    texts = [f"concurrent request number {i} about {w}" for i, w in
             enumerate(["koalas", "chess", "rivers", "coffee", "volcanoes", "violins"] * 8)]
    before = client.get("/metrics").text
    batches_before = _metric(before, "eft_batch_size_count")

    def one(t):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            r = c.post("/v1/embeddings", json={"model": MODEL, "input": t})
            assert r.status_code == 200
            return r.json()["data"][0]["embedding"]

    with ThreadPoolExecutor(16) as pool:
        got = np.array(list(pool.map(one, texts)), dtype=np.float32)
    _assert_parity(got, _ref(texts))
    batches = _metric(client.get("/metrics").text, "eft_batch_size_count") - batches_before
    assert batches < len(texts), "concurrent requests were never batched together"


def test_the_fast_path_and_the_fastapi_route_answer_alike(server, client):
    """POST /v1/embeddings is answered before FastAPI's stack (EmbeddingServer); with that switched off the
    registered FastAPI route answers: both give the same status, body and metrics, for good and bad requests."""
    app = server.server.config.app
    fast = app.embeddings_asgi
    used = []

    async def counting(scope, receive, send):
        used.append(scope["path"])
        await fast(scope, receive, send)

    requests = [{"model": MODEL, "input": ["same answer either way", "two"], "encoding_format": "base64"},
                {"model": MODEL, "input": ""}, {"model": "nope", "input": "x"}, {"input": "x"}]
    answers = {}
    try:
        for mode, handler in (("fast", counting), ("fastapi", None)):
            app.embeddings_asgi = handler
            before = client.get("/metrics").text
            got = [client.post("/v1/embeddings", json=body) for body in requests]
            got.append(client.post("/v1/embeddings", content=b"{not json",
                                   headers={"content-type": "application/json"}))
            after = client.get("/metrics").text
            counted = {code: _metric(after, "eft_requests_total", f'code="{code}",route="/v1/embeddings"')
                       - _metric(before, "eft_requests_total", f'code="{code}",route="/v1/embeddings"')
                       for code in ("200", "400", "404")}
            answers[mode] = ([(r.status_code, r.headers["content-type"], r.json()) for r in got], counted)
    finally:
        app.embeddings_asgi = fast
    assert len(used) == len(requests) + 1  # the fast path answered every POST in "fast" mode, none after
    assert answers["fast"] == answers["fastapi"]
    statuses = [a[0] for a in answers["fast"][0]]
    assert statuses == [200, 400, 404, 400, 400] and answers["fast"][1] == {"200": 1, "400": 3, "404": 1}


def test_group_by_length():
    from eft.serve.batcher import _Item, group_by_length

    items = [_Item(n, [0] * n, None, i) for i, n in enumerate([5, 300, 6, 7, 120, 5, 8, 130])]
    groups = group_by_length(items, max_batch=3, max_tokens=10_000)
    lengths = [[it.length for it in g] for g in groups]
    assert lengths == [[5, 5, 6], [7, 8], [120, 130], [300]]
    assert all(len(g) <= 3 for g in groups)
    groups = group_by_length(items, max_batch=64, max_tokens=250)
    assert all(len(g) * max(it.length for it in g) <= 300 for g in groups)


# ----------------------------------------------------------------------------- backends and the command
def test_locate_finds_every_layout(tmp_path):
    from eft.errors import InvalidInput
    from eft.serve.backends import locate

    wd = exported_workdir()
    assert locate(wd).backend == "onnx" and locate(wd).folder == wd / "export" / "onnx"
    assert locate(wd / "export").folder == wd / "export" / "onnx"
    assert locate(wd / "export", "onnx-int8").folder == wd / "export" / "onnx-int8"
    assert locate(wd / "export" / "onnx-int8").backend == "onnx-int8"
    assert locate(wd / "export", "openvino-int8").folder == wd / "export" / "openvino-int8"
    assert locate(wd / "export" / "openvino-int8").backend == "openvino-int8"
    assert locate(wd, "openvino").folder == wd / "export" / "onnx"  # the fp32 graph, on OpenVINO
    assert locate(wd / "export" / "onnx", "openvino").backend == "openvino"
    with pytest.raises(InvalidInput, match="no 'openvino' export"):
        locate(wd / "export" / "onnx-int8", "openvino")
    # an fp32 OpenVINO IR given directly is found by auto; a variant the export stage dropped says why
    import shutil

    ir = tmp_path / "ir"
    shutil.copytree(wd / "export" / "openvino-int8", ir)
    meta = json.loads((ir / "eft_model.json").read_text())
    (ir / "eft_model.json").write_text(json.dumps({**meta, "precision": "fp32"}))
    assert locate(ir).backend == "openvino" and locate(ir).folder == ir
    dropped = tmp_path / "ws" / "export"
    shutil.copytree(wd / "export" / "onnx", dropped / "onnx")
    (dropped / "export.json").write_text(json.dumps({"openvinoInt8": {"built": False, "reason": "lost 2%"}}))
    with pytest.raises(InvalidInput, match=r"no 'openvino-int8' export .*did not keep it \(lost 2%\)"):
        locate(dropped.parent, "openvino-int8")
    assert locate(wd, "torch").folder == wd / "train" / "model"
    assert locate(wd / "train" / "model").backend == "torch"
    with pytest.raises(InvalidInput, match="tensorrt"):
        locate(wd, "tensorrt")
    with pytest.raises(InvalidInput, match="does not exist"):
        locate(tmp_path / "missing")
    with pytest.raises(InvalidInput, match="no exported model"):
        locate(tmp_path)


def test_torch_backend_serves_the_same_vectors():
    wd = exported_workdir()
    with ServerThread(_app(wd, backend="torch")) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        _wait_ready(srv.url)
        # the same name as the workspace's export, so a fallback to PyTorch keeps the clients' model name
        assert [card["id"] for card in c.get("/v1/models").json()["data"]] == [MODEL]
        texts = ["pytorch fallback backend", "second text of another length here"]
        got, _ = _embed(c, model=MODEL, input=texts)
        _assert_parity(got, _ref(texts), 0.9999)
        assert 'backend="torch"' in c.get("/metrics").text


def test_eft_serve_command_int8():
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "eft.cli", "serve", "--model", str(exported_workdir() / "export"),
           "--backend", "onnx-int8", "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "mini"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", 90)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            texts = ["int8 quantised model", "bees dance to show where flowers are"]
            got, body = _embed(c, model="mini", input=texts)
            assert body["model"] == "mini"
            cos = (got * _ref(texts)).sum(1)
            assert cos.min() > 0.95  # int8: close, not exact
            assert c.post("/v1/embeddings", json={"model": MODEL, "input": "a"}).status_code == 404
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode(errors="replace")
    assert "serving 'mini'" in out and "onnx-int8" in out


def test_dynamic_int8_vectors_do_not_depend_on_the_other_texts_of_a_batch():
    """onnxruntime's int8 graph quantises activations with one scale per call: batched with other texts, a text's
    vector moved (cosine 0.994 to itself alone in one request of 8, 0.975 among concurrent requests). It runs
    one text per call, so every vector is the text's own, through the encoder and through the server."""
    from concurrent.futures import ThreadPoolExecutor

    from eft.export.artifact import OnnxEncoder

    folder = exported_workdir() / "export" / "onnx-int8"
    enc = OnnxEncoder(folder, threads=1, prefer_gpu=False)
    assert enc.rows_per_call == 1 and OnnxEncoder(exported_workdir() / "export" / "onnx").rows_per_call is None
    text = "How is espresso coffee made?"
    others = ["bees dance to show where flowers are " * k for k in range(1, 8)]
    alone = enc.encode([text])
    assert np.array_equal(enc.encode([*others, text])[-1], alone[0])
    with ServerThread(_app(exported_workdir() / "export", backend="onnx-int8")) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        _wait_ready(srv.url)
        served_alone, _ = _embed(c, input=text)
        mixed = [[*others[i:], text, *others[:i]] for i in range(7)]
        with ThreadPoolExecutor(7) as pool:  # concurrent requests: their texts share the server's batches
            results = list(pool.map(lambda texts: _embed(c, input=texts)[0], mixed))
    assert np.array_equal(served_alone[0], alone[0])
    for texts, got in zip(mixed, results):
        assert np.array_equal(got[texts.index(text)], alone[0])


def test_cpu_onnx_server_caps_padded_tokens_per_model_call():
    """On CPU, onnxruntime runs ~128-token texts faster 4 to a call than 8 or 32 (bench figures at
    CPU_BATCH_TOKENS): the server's batcher gets that budget and cuts a full batch of such texts into calls that
    respect it."""
    from eft.serve.backends import CPU_BATCH_TOKENS
    from eft.serve.batcher import _Item, group_by_length

    app = _app(exported_workdir(), max_batch_size=64)
    with ServerThread(app) as srv:
        _wait_ready(srv.url)
        batcher = app.state.eft.batcher
        assert app.state.eft.backend.providers[0] == "CPUExecutionProvider"
        assert batcher.max_tokens == CPU_BATCH_TOKENS == 512
    groups = group_by_length([_Item(130, [0] * 130, None, i) for i in range(32)], batcher.max_batch,
                             batcher.max_tokens)
    assert [len(g) for g in groups] == [3] * 10 + [2]
    short = group_by_length([_Item(16, [0] * 16, None, i) for i in range(64)], batcher.max_batch, batcher.max_tokens)
    assert [len(g) for g in short] == [32, 32]


def test_cpu_onnx_backend_has_one_lane_per_thread_unless_the_model_is_large(monkeypatch):
    """Lanes: one single-threaded call per inference thread, same vectors as the all-threads session; a model
    over LANES_MAX_MODEL_BYTES keeps one session (lanes would load its weights twice)."""
    from eft.serve import backends

    folder = exported_workdir() / "export" / "onnx"
    backend = backends.OnnxBackend(folder, threads=2)
    assert backend.lanes == 2
    batch = backend.tokenizer.pad(backend.tokenizer.encode(["lanes give the same vectors", "a second text"]))
    np.testing.assert_allclose(backend.run_lane(batch), backend.run_batch(batch), atol=1e-5)
    monkeypatch.setattr(backends, "LANES_MAX_MODEL_BYTES", (folder / "model.onnx").stat().st_size - 1)
    assert backends.OnnxBackend(folder, threads=2).lanes == 1
    assert backends.OnnxBackend(folder, threads=1).lanes == 1


@pytest.mark.parametrize("backend, bound", [("openvino", 0.9999), ("openvino-int8", 0.95)])
def test_openvino_backends_serve_the_models_vectors(backend, bound):
    """OpenVINO on the fp32 export (the same vectors) and on the static int8 export (close), with lanes as the
    onnxruntime CPU backend has them: one call per thread at once gives the all-threads call's vectors."""
    from eft.serve.backends import CPU_BATCH_TOKENS, locate

    wd = exported_workdir()
    source = locate(wd, backend)
    model = source.load(threads=2)
    assert model.lanes == 2 and model.batch_tokens == CPU_BATCH_TOKENS
    assert model.providers == [f"OpenVINO-CPU-{'int8' if backend.endswith('int8') else 'fp32'}"]
    texts = ["openvino serves these texts", "a second, somewhat longer text about bees and flowers", "x"]
    batch = model.tokenizer.pad(model.tokenizer.encode(texts))
    np.testing.assert_allclose(model.run_lane(batch), model.run_batch(batch), atol=2e-3)
    _assert_parity(model.run_batch(batch), _ref(texts), bound)
    with ServerThread(_app(wd, backend=backend)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        _wait_ready(srv.url)
        name = c.get("/v1/models").json()["data"][0]["id"]
        many = [f"text number {i} about {FACTS[i][1]}" for i in range(MAX_INPUTS)]
        got, _ = _embed(c, model=name, input=many)
        _assert_parity(got, _ref(many), bound)
        assert f'backend="{backend}"' in c.get("/metrics").text

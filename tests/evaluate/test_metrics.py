"""Retrieval metrics (hand-checked against BEIR), exact retrieval, the promotion rule and the report files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from eft.api.spec import PromotionSpec
from eft.evaluate.paired import paired_bootstrap, per_query_ndcg
from eft.retrieval.scoring import beir_metrics, retrieve
from eft.evaluate.promotion import decide
from eft.evaluate.report import write_report

QRELS = {"q1": {"d1": 1, "d3": 1}, "q2": {"d2": 1}}
RESULTS = {
    "q1": {"d1": 0.9, "d2": 0.8, "d3": 0.7, "d4": 0.6},  # relevant at ranks 1 and 3
    "q2": {"d1": 0.9, "d3": 0.8, "d4": 0.7, "d2": 0.6},  # relevant at rank 4
}


def by_hand() -> dict[str, float]:
    lg = lambda r: 1 / math.log2(r + 1)  # noqa: E731  gain discount at rank r
    q1_ndcg3 = (lg(1) + lg(3)) / (lg(1) + lg(2))
    q2_ndcg5 = lg(4) / lg(1)
    q1_ap = (1 / 1 + 2 / 3) / 2  # precision at each relevant rank, over all relevant docs
    return {
        "ndcg@1": (1 + 0) / 2, "ndcg@3": (q1_ndcg3 + 0) / 2, "ndcg@5": (q1_ndcg3 + q2_ndcg5) / 2,
        "recall@1": (0.5 + 0) / 2, "recall@3": (1 + 0) / 2, "recall@5": (1 + 1) / 2,
        "precision@1": (1 + 0) / 2, "precision@3": (2 / 3 + 0) / 2, "precision@5": (2 / 5 + 1 / 5) / 2,
        "map@1": (1 / 2 + 0) / 2, "map@3": (q1_ap + 0) / 2, "map@5": (q1_ap + 1 / 4) / 2,
    }


def test_beir_metrics_match_hand_computation_and_beir():
    from beir.retrieval.evaluation import EvaluateRetrieval

    got = beir_metrics(QRELS, RESULTS, [1, 3, 5])
    expected = by_hand()
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-5), name
    ndcg, _map, recall, precision = EvaluateRetrieval.evaluate(QRELS, RESULTS, [1, 3, 5], ignore_identical_ids=False)
    for table, prefix in ((ndcg, "ndcg"), (_map, "map"), (recall, "recall"), (precision, "precision")):
        for key, value in table.items():
            assert got[f"{prefix}@{key.split('@')[1]}"] == value


def test_per_query_ndcg_and_bootstrap():
    per_q = per_query_ndcg(QRELS, RESULTS, 5)
    assert per_q["q1"] == pytest.approx(by_hand()["ndcg@3"] * 2, abs=1e-6)
    assert per_q["q2"] == pytest.approx(1 / math.log2(5), abs=1e-6)
    boot = paired_bootstrap({"a": 0.1, "b": 0.2, "c": 0.3}, {"a": 0.2, "b": 0.4, "c": 0.3})
    assert boot["meanDelta"] == pytest.approx(0.1, abs=1e-5)
    assert boot["better"] == 2 and boot["worse"] == 0 and boot["queries"] == 3
    assert boot["ci95"][0] <= boot["meanDelta"] <= boot["ci95"][1]


def test_retrieve_returns_the_exact_top_docs():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(20, 16)).astype(np.float32)
    p = rng.normal(size=(300, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    qids = [f"q{i}" for i in range(20)]
    dids = [f"d{j}" for j in range(300)]
    res = retrieve(q, p, qids, dids, top_k=10)
    scores = q @ p.T
    for i, qid in enumerate(qids):
        top = [dids[j] for j in np.argsort(-scores[i])[:10]]
        assert list(res[qid]) == top
        assert list(res[qid].values()) == pytest.approx(sorted(scores[i], reverse=True)[:10], abs=1e-5)
    # top_k larger than the corpus returns every doc.
    assert len(retrieve(q[:1], p[:5], ["q"], dids[:5], top_k=100)["q"]) == 5


def m(v: float) -> dict[str, float]:
    return {"ndcg@10": v, "recall@10": v}


def test_promotion_requires_the_margin():
    rule = PromotionSpec(metric="ndcg@10", min_relative_improvement=0.02)
    assert decide(rule, m(0.50), m(0.52))["promoted"] is True        # +4%
    assert decide(rule, m(0.50), m(0.51))["promoted"] is True        # +2%, exactly the margin
    out = decide(rule, m(0.50), m(0.505))                              # +1%
    assert out["promoted"] is False and "less than the required" in out["reason"]
    out = decide(rule, m(0.50), m(0.50))
    assert out["promoted"] is False and "does not beat" in out["reason"]
    assert decide(rule, m(0.50), m(0.40))["promoted"] is False
    default = PromotionSpec()
    assert decide(default, m(0.5), m(0.5001))["promoted"] is True
    assert decide(default, m(0.5), m(0.5))["promoted"] is False
    tolerant = PromotionSpec(metric="ndcg@10", min_relative_improvement=-0.02)   # a drop of at most 2%
    assert decide(tolerant, m(1.0), m(1.0))["promoted"] is True
    assert "within the tolerated -2.00%" in decide(tolerant, m(0.50), m(0.495))["reason"]
    assert decide(tolerant, m(0.50), m(0.48))["promoted"] is False   # -4%
    out = decide(default, m(0.50), m(0.60))
    assert out["relativeChange"] == pytest.approx(0.2) and out["metric"] == "ndcg@10"


def test_extra_dataset_regression_blocks_promotion():
    rule = PromotionSpec(metric="ndcg@10")
    ok = {"scifact": {"base": m(0.60), "finetuned": m(0.598)}}      # within tolerance
    bad = {"scifact": {"base": m(0.60), "finetuned": m(0.55)}}
    assert decide(rule, m(0.5), m(0.6), ok)["promoted"] is True
    out = decide(rule, m(0.5), m(0.6), bad)
    assert out["promoted"] is False
    assert out["extraRegressions"] == ["scifact: 0.6000 -> 0.5500"] and "regresses" in out["reason"]


def test_report_files(tmp_path):
    base = {"ndcg@1": 0.4, "ndcg@5": 0.5, "ndcg@10": 0.55, "recall@10": 0.7, "recall@100": 0.9, "map@10": 0.45}
    tuned = {k: v + 0.05 for k, v in base.items()}
    report = {"name": "demo", "queries": 12, "corpus": 100, "base": base, "finetuned": tuned,
              "promotion": decide(PromotionSpec(), base, tuned),
              "significance": paired_bootstrap({"a": 0.1, "b": 0.2}, {"a": 0.2, "b": 0.3})}
    write_report(tmp_path, report)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    md = (tmp_path / "report.md").read_text()
    assert "# Evaluation: demo" in md and "promoted" in md and "| ndcg@10 | 0.5500 | 0.6000 | +9.1% |" in md
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    from PIL import Image

    with Image.open(tmp_path / "report.png") as img:
        img.verify()


def test_gate_can_require_the_bootstrap_interval_to_exclude_zero():
    strict = PromotionSpec(require_significant=True)
    noisy = paired_bootstrap({f"q{i}": 0.5 for i in range(40)},
                             {f"q{i}": 0.5 + (0.2 if i % 2 else -0.18) for i in range(40)})
    clear = paired_bootstrap({f"q{i}": 0.5 for i in range(40)}, {f"q{i}": 0.55 + 0.01 * (i % 3) for i in range(40)})
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1] and clear["ci95"][0] > 0
    assert decide(PromotionSpec(), m(0.5), m(0.51), significance=noisy)["promoted"] is True  # the default ignores it
    out = decide(strict, m(0.5), m(0.51), significance=noisy)
    assert out["promoted"] is False and "not above zero" in out["reason"] and out["requireSignificant"] is True
    assert decide(strict, m(0.5), m(0.56), significance=clear)["promoted"] is True
    assert decide(strict, m(0.5), m(0.56), significance=None)["promoted"] is False  # no interval, no promotion


def test_general_ability_guard_blocks_forgetting_beyond_the_tolerance():
    rule = PromotionSpec()  # the guard is on by default, tolerance 0.01
    assert rule.general_ability.enabled and rule.general_ability.max_drop == 0.01
    kept = {"base": m(0.60), "finetuned": m(0.592)}
    forgot = {"base": m(0.60), "finetuned": m(0.57)}
    assert decide(rule, m(0.5), m(0.6), general=kept)["promoted"] is True
    out = decide(rule, m(0.5), m(0.6), general=forgot)
    assert out["promoted"] is False and "loses general ability" in out["reason"]
    assert out["generalAbilityDrop"] == pytest.approx(0.03)
    loose = PromotionSpec(general_ability={"max_drop": 0.05})
    assert decide(loose, m(0.5), m(0.6), general=forgot)["promoted"] is True


def test_general_ability_dir_resolution(monkeypatch, tmp_path):
    from eft.api.spec import GeneralAbilitySpec
    from eft.evaluate.promotion import DEFAULT_GENERAL_ABILITY_DIR, general_ability_dir

    monkeypatch.delenv("EFT_GENERAL_ABILITY_DIR", raising=False)
    assert general_ability_dir(GeneralAbilitySpec()) == DEFAULT_GENERAL_ABILITY_DIR
    monkeypatch.setenv("EFT_GENERAL_ABILITY_DIR", str(tmp_path))
    assert general_ability_dir(GeneralAbilitySpec()) == tmp_path
    assert general_ability_dir(GeneralAbilitySpec(path="/data/beir/x")) == Path("/data/beir/x")
    assert general_ability_dir(GeneralAbilitySpec(enabled=False)) is None

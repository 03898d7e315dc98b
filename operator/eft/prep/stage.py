"""The prep stage: split, write the BEIR test set, mine hard negatives with the base model, unroll, write train.json."""

from __future__ import annotations

import json
import logging
import shutil

from eft.embedding import ModelEncoder
from eft.errors import InvalidInput
from eft.models import load_sentence_transformer, prefixes_for
from eft.retrieval.beir import write_beir
from eft.prep.merge import merge_identical_questions
from eft.prep.mining import mine_hard_negatives
from eft.prep.split import split_for_spec
from eft.prep.unroll import unroll
from eft.records import read_chunks, read_questions, write_jsonl
from eft.stages.contract import StageContext

log = logging.getLogger("eft.prep")


def run(ctx: StageContext) -> dict:
    spec, prep = ctx.spec, ctx.spec.prep
    sdg_dir = ctx.input_dir("sdg")
    chunks = read_chunks(sdg_dir / "chunks.jsonl")
    questions = read_questions(sdg_dir / "questions.jsonl")
    chunk_index = {c.id: i for i, c in enumerate(chunks)}
    unknown = sum(1 for q in questions for s in q.segment_ids if s not in chunk_index)
    questions = [q for q in questions if all(s in chunk_index for s in q.segment_ids)]
    questions, merge_stats = merge_identical_questions(questions)
    try:
        train_q, test_q = split_for_spec(questions, {c.id: c.doc_id for c in chunks}, prep)
    except ValueError as err:
        raise InvalidInput(str(err), "spec.prep.splitBy" if prep.split_by == "document" else "spec.prep.testFraction"
                           ) from None
    out = ctx.out_dir
    shutil.copyfile(sdg_dir / "chunks.jsonl", out / "chunks.jsonl")
    write_jsonl(out / "train_questions.jsonl", train_q)
    write_jsonl(out / "test_questions.jsonl", test_q)
    write_beir(out / "beir", chunks, test_q)

    model = load_sentence_transformer(spec.base_model)
    prefixes = prefixes_for(spec.base_model, model)
    bm = spec.base_model
    # Through the shared cache: eval's base run finds these passage vectors instead of encoding again.
    encode = ModelEncoder(model, prefixes, bm.max_query_length, bm.max_passage_length, prep.encode_batch_size,
                          ctx.embedding_cache, ctx.progress, "base")
    p_emb = encode([c.text for c in chunks], "passage")
    q_emb = encode([q.question for q in train_q], "query")
    # A document split mines negatives from training documents only: the test documents stay unseen.
    train_docs = {chunks[chunk_index[s]].doc_id for q in train_q for s in q.segment_ids}
    pool = [i for i, c in enumerate(chunks) if prep.split_by == "question" or c.doc_id in train_docs]
    in_pool = {j: k for k, j in enumerate(pool)}
    positives = [[in_pool[chunk_index[s]] for s in q.segment_ids] for q in train_q]
    with ctx.progress.task("hard negatives mined", total=len(train_q)) as task:
        mined = mine_hard_negatives(q_emb, p_emb[pool], positives, prep.negatives_mined,
                                    prep.max_negative_score_ratio)
        task.advance(len(train_q))
    neg_ids = [[chunks[pool[j]].id for j in negs] for negs in mined.negatives]
    examples = unroll(train_q, neg_ids)
    (out / "train.json").write_text(json.dumps(examples, ensure_ascii=False), encoding="utf-8")
    mined_scores = [s for row in mined.negative_scores for s in row]
    return {
        "questions": len(questions),
        "splitBy": prep.split_by,
        "miningPool": len(pool),
        "questionsWithUnknownChunks": unknown,
        **merge_stats,
        "trainQuestions": len(train_q),
        "testQuestions": len(test_q),
        "trainExamples": len(examples),
        "multiHopUnrolled": sum(1 for q in train_q if q.hop_count > 1),
        "corpus": len(chunks),
        "negativesPerQuestion": prep.negatives_mined,
        "droppedAsFalseNegatives": mined.dropped_as_false_negative,
        "questionsShortOfNegatives": mined.short,
        "meanPositiveScore": round(float(mined.positive_min_scores.mean()), 4) if len(train_q) else None,
        "meanNegativeScore": round(sum(mined_scores) / len(mined_scores), 4) if mined_scores else None,
        "embeddingCache": ctx.embedding_cache.stats(),
    }

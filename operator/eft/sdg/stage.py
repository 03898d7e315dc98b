"""The sdg stage: chunk the corpus, then generate quality-filtered questions with the configured generator."""

from __future__ import annotations

import logging
import os

from eft.corpus.chunker import chunk_documents
from eft.corpus.reader import corpus_root, select_files
from eft.errors import InvalidInput
from eft.models import load_tokenizer
from eft.records import write_jsonl
from eft.stages.contract import StageContext

log = logging.getLogger("eft.sdg")


def round_trip_filter(ctx: StageContext, chunks: list, questions: list) -> tuple[list, int]:
    """Questions whose positive ranks in the base model's top `sdg.roundTripTopK`, and how many were dropped."""
    from eft.embedding import encode_passages, encode_queries
    from eft.models import load_sentence_transformer, prefixes_for
    from eft.sdg.roundtrip import round_trip_keep

    bm = ctx.spec.base_model
    model = load_sentence_transformer(bm)
    prefixes = prefixes_for(bm, model)
    index = {c.id: i for i, c in enumerate(chunks)}
    p_emb = encode_passages(model, [c.text for c in chunks], prefixes, bm.max_passage_length, progress=ctx.progress)
    q_emb = encode_queries(model, [q.question for q in questions], prefixes, bm.max_query_length,
                           progress=ctx.progress)
    keep = round_trip_keep(q_emb, p_emb, [[index[s] for s in q.segment_ids] for q in questions],
                           ctx.spec.sdg.round_trip_top_k)
    kept = [q for q, k in zip(questions, keep) if k]
    return kept, len(questions) - len(kept)


def too_few_questions(kept: int, stats: dict, threshold: float) -> str:
    """Why fewer than 5 questions came out, from the generator's counts: what was generated, what the judge's
    threshold and the other filters dropped, and the setting to change for the cause that dominates."""
    below = int(stats.get("dropped_below_threshold") or 0)
    parts = [f"{name} {int(stats[key])}" for key, name in (
        ("generated", "generated"), ("dropped_below_threshold", f"below the quality threshold {threshold}"),
        ("duplicates", "duplicates"), ("roundTripDropped", "dropped by the round-trip check"))
        if stats.get(key)]
    counts = f" ({', '.join(parts)})" if parts else ""
    if below and below >= kept:
        fix = "lower spec.sdg.qualityThreshold, or add documents"
    else:
        fix = ("add documents or longer ones, or raise spec.sdg.maxChunks / spec.sdg.questionsPerChunk; the quality "
               "threshold is not what held them back")
    return f"only {kept} questions came out of generation{counts}, at least 5 are needed: {fix}"


def run(ctx: StageContext) -> dict:
    spec = ctx.spec
    files = select_files(spec.corpus)
    tokenizer = load_tokenizer(spec.base_model)
    chk = spec.corpus.chunking
    with ctx.progress.task("documents chunked", total=len(files)) as task:
        chunks, chunk_stats = chunk_documents(files, corpus_root(spec.corpus), chk.max_tokens, chk.min_tokens,
                                              tokenizer, chk.overlap_tokens, on_document=task.advance)
    if len(chunks) < 2:
        raise InvalidInput(f"the corpus gave {len(chunks)} chunk(s); at least 2 are needed for retrieval",
                           "spec.corpus")
    write_jsonl(ctx.out_dir / "chunks.jsonl", chunks)
    log.info("%d documents -> %d chunks", chunk_stats["documents"], len(chunks))

    if spec.sdg.generator == "offline":
        from eft.sdg.offline import generate_offline_questions

        questions, gen_stats = generate_offline_questions(chunks, spec.sdg, ctx.progress)
    else:
        from eft.sdg.llm import generate_llm_questions

        work = ctx.out_dir / "_work"
        work.mkdir(exist_ok=True)
        questions, gen_stats = generate_llm_questions(chunks, spec.sdg, work, ctx.progress,
                                                      api_key=os.environ.get(spec.sdg.api_key_env))
    if spec.sdg.round_trip_top_k:
        questions, gen_stats["roundTripDropped"] = round_trip_filter(ctx, chunks, questions)
    if len(questions) < 5:
        raise InvalidInput(too_few_questions(len(questions), gen_stats, spec.sdg.quality_threshold), "spec.sdg")
    write_jsonl(ctx.out_dir / "questions.jsonl", questions)
    hops = {str(h): sum(1 for q in questions if q.hop_count == h) for h in (1, 2, 3)}
    return {
        "generator": spec.sdg.generator,
        "documents": chunk_stats["documents"],
        "chunks": len(chunks),
        "duplicateChunksDropped": chunk_stats["duplicates_dropped"],
        "documentsUndecodable": len(chunk_stats["undecodable"]),
        **({"undecodable": chunk_stats["undecodable"][:20]} if chunk_stats["undecodable"] else {}),
        "questions": len(questions),
        "questionsByHops": hops,
        "meanQuality": round(sum(q.quality_score for q in questions) / len(questions), 2),
        "generation": gen_stats,
    }

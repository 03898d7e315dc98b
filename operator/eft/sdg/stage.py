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
    if len(questions) < 5:
        raise InvalidInput(
            f"only {len(questions)} questions passed the quality threshold {spec.sdg.quality_threshold}; "
            f"lower spec.sdg.qualityThreshold or add documents", "spec.sdg",
        )
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

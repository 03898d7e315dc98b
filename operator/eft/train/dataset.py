"""Building the training table (anchor, positive, negative_1..negative_n) from `train.json` and the chunk store."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from eft.errors import InvalidInput
from eft.records import read_chunks
from eft.seeding import keyed_rng
from eft.train.sampler import ExampleIds


def load_examples(prep_dir: Path, n_negatives: int, seed: int, split_by: str = "document"
                  ) -> tuple[dict[str, list[str]], dict, list[ExampleIds]]:
    """Columns for `datasets.Dataset.from_dict`, stats, and each row's ids for the positive-aware sampler.

    A question's labelled positives are the union over its rows (a multi-hop question is unrolled into one row
    per positive; prep has already merged questions that differ only in case, punctuation or spacing, so rows of
    one question share its exact text). Examples with fewer mined negatives than needed are topped up with random
    passages that are none of the question's positives (counted in the stats), since every row needs the same
    columns; with `split_by` "document" they come from the training documents only (those of the examples'
    positives), as prep's mining pool does, so the test documents stay unseen. Each row draws from its own
    generator (`eft.seeding.keyed_rng`, keyed by its question and positive), so adding or removing another
    example leaves its draws as they were; a change to the pool itself (a document added) still re-draws them.

    Raises `InvalidInput` (field `spec.training.passagesPerQuery`) when the pool is too small to give a question
    `n_negatives` passages besides its positives.
    """
    all_chunks = {c.id: c for c in read_chunks(prep_dir / "chunks.jsonl")}
    chunks = {cid: c.text for cid, c in all_chunks.items()}
    examples = json.loads((prep_dir / "train.json").read_text(encoding="utf-8"))
    positives: dict[str, set[str]] = defaultdict(set)
    for ex in examples:
        positives[ex["question"]].update(p["id"] for p in ex["pos_doc"])
    if split_by == "document":
        train_docs = {all_chunks[p].doc_id for own in positives.values() for p in own}
        pool = [cid for cid, c in all_chunks.items() if c.doc_id in train_docs]
    else:
        pool = list(all_chunks)
    in_pool = set(pool)
    cols: dict[str, list[str]] = {"anchor": [], "positive": []}
    for i in range(n_negatives):
        cols[f"negative_{i + 1}"] = []
    rows: list[ExampleIds] = []
    topped_up = 0
    for ex in examples:
        key = ex["question"]
        own = positives[key]
        pos = ex["pos_doc"][0]["id"]
        negs = [n["id"] for n in ex["neg_doc"] if n["id"] not in own][:n_negatives]
        if len(negs) < n_negatives and len(in_pool) - len(own & in_pool) < n_negatives:
            raise InvalidInput(
                f"the training documents have {len(pool)} chunks, too few for {n_negatives} negatives besides a "
                f"question's {len(own)} positive(s) (training.passagesPerQuery is {n_negatives + 1}): add "
                "documents, or lower spec.training.passagesPerQuery", "spec.training.passagesPerQuery")
        rng = keyed_rng(seed, "negative top-up", [key, pos]) if len(negs) < n_negatives else None
        while len(negs) < n_negatives:  # ends: the pool holds n_negatives passages outside the positives
            cand = rng.choice(pool)
            if cand not in own and cand not in negs:
                negs.append(cand)
                topped_up += 1
        cols["anchor"].append(ex["question"])
        cols["positive"].append(chunks[pos])
        for i, n in enumerate(negs):
            cols[f"negative_{i + 1}"].append(chunks[n])
        rows.append(ExampleIds(key, frozenset(own), (pos, *negs)))
    return cols, {"examples": len(examples), "negativesToppedUp": topped_up}, rows

"""Building the training table (anchor, positive, negative_1..negative_n) from `train.json` and the chunk store."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from eft.records import read_chunks
from eft.train.sampler import ExampleIds


def load_examples(prep_dir: Path, n_negatives: int, seed: int
                  ) -> tuple[dict[str, list[str]], dict, list[ExampleIds]]:
    """Columns for `datasets.Dataset.from_dict`, stats, and each row's ids for the positive-aware sampler.

    A question's labelled positives are the union over its rows (a multi-hop question is unrolled into one row
    per positive; prep has already merged questions that differ only in case, punctuation or spacing, so rows of
    one question share its exact text). Examples with fewer mined negatives than needed are topped up with random corpus passages that
    are none of the question's positives (counted in the stats), since every row needs the same columns."""
    chunks = {c.id: c.text for c in read_chunks(prep_dir / "chunks.jsonl")}
    examples = json.loads((prep_dir / "train.json").read_text(encoding="utf-8"))
    positives: dict[str, set[str]] = defaultdict(set)
    for ex in examples:
        positives[ex["question"]].update(p["id"] for p in ex["pos_doc"])
    rng = random.Random(seed)
    ids = list(chunks)
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
        while len(negs) < n_negatives:
            cand = rng.choice(ids)
            if cand not in own and cand not in negs:
                negs.append(cand)
                topped_up += 1
        cols["anchor"].append(ex["question"])
        cols["positive"].append(chunks[pos])
        for i, n in enumerate(negs):
            cols[f"negative_{i + 1}"].append(chunks[n])
        rows.append(ExampleIds(key, frozenset(own), (pos, *negs)))
    return cols, {"examples": len(examples), "negativesToppedUp": topped_up}, rows

"""Building the training table (anchor, positive, negative_1..negative_n) from `train.json` and the chunk store."""

from __future__ import annotations

import json
import random
from pathlib import Path

from eft.records import read_chunks


def load_examples(prep_dir: Path, n_negatives: int, seed: int) -> tuple[dict[str, list[str]], dict]:
    """Columns for `datasets.Dataset.from_dict`. Examples with fewer mined negatives than needed are topped up
    with random corpus passages (counted in the stats), since every row must have the same number of columns."""
    chunks = {c.id: c.text for c in read_chunks(prep_dir / "chunks.jsonl")}
    examples = json.loads((prep_dir / "train.json").read_text(encoding="utf-8"))
    rng = random.Random(seed)
    ids = list(chunks)
    cols: dict[str, list[str]] = {"anchor": [], "positive": []}
    for i in range(n_negatives):
        cols[f"negative_{i + 1}"] = []
    topped_up = 0
    for ex in examples:
        pos = ex["pos_doc"][0]["id"]
        negs = [n["id"] for n in ex["neg_doc"]][:n_negatives]
        while len(negs) < n_negatives:
            cand = rng.choice(ids)
            if cand != pos and cand not in negs:
                negs.append(cand)
                topped_up += 1
        cols["anchor"].append(ex["question"])
        cols["positive"].append(chunks[pos])
        for i, n in enumerate(negs):
            cols[f"negative_{i + 1}"].append(chunks[n])
    return cols, {"examples": len(examples), "negativesToppedUp": topped_up}

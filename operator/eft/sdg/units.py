"""Planning the `llm` generator's requests: *generation units* of 1 chunk (single-hop) or 2-3 related chunks
(multi-hop), seeded, each chunk used once, with the question complexities to ask for and a cache key.

The plan is stable under corpus changes where it can be: chunks are visited in the order of a seeded hash of
their ids (not one shuffle of the whole corpus), each unit draws its group size and complexities from a
generator seeded by its own chunks, and whether a unit is multi-hop depends on its own document's units only
(a running share per document, rounded with a seeded offset per document, so nothing is counted across
documents; a document of a few chunks ends on single-hop leftovers, so the corpus-wide share can fall a little
below the target: 0.285 for 0.3 on the quickstart's documents). So raising `maxChunks` keeps every earlier
unit, a document added, edited or removed leaves the units of every other document as they were (unless
`maxChunks` cuts the plan, or the new document repeats a passage of another one: the chunker keeps only the
first copy and renumbers the other document's positions), and a unit whose chunks did not change keeps its
cache key, whose paid-for answers in `_work/` are reused."""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from eft.api.spec import SdgSpec
from eft.records import Chunk
from eft.sdg import prompts
from eft.seeding import keyed_order, keyed_rng

#: Chunks at most this far apart (positions in one document) count as related for multi-hop units, as do
#: chunks sharing a heading path.
NEIGHBOUR_WINDOW = 3


@dataclass(frozen=True)
class Unit:
    """One generation request: 1 chunk (single-hop) or 2-3 related chunks (multi-hop)."""

    index: int
    chunks: tuple[Chunk, ...]
    complexities: tuple[int, ...]
    key: str

    @property
    def multi_hop(self) -> bool:
        return len(self.chunks) > 1

    @property
    def chunk_ids(self) -> list[str]:
        return [c.id for c in self.chunks]


def _shared_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _related(seed: Chunk, n: int, doc_chunks: list[Chunk], used: set[str]) -> list[Chunk]:
    """Up to `n` unused chunks of the seed's document related to it: same heading path first, then nearest."""
    scored = []
    for c in doc_chunks:
        if c.id == seed.id or c.id in used:
            continue
        shared = _shared_prefix(seed.headings, c.headings) if seed.headings and c.headings else 0
        distance = abs(c.position - seed.position)
        if distance <= NEIGHBOUR_WINDOW or shared > 0:
            scored.append((-shared, distance, c.position, c))
    scored.sort(key=lambda t: t[:3])
    return [t[3] for t in scored[:n]]


def plan_units(chunks: Sequence[Chunk], spec: SdgSpec) -> list[Unit]:
    """Seeded plan of generation units using at most `spec.max_chunks` chunks, each chunk in one unit."""
    by_id: dict[str, Chunk] = {}
    for c in chunks:
        by_id.setdefault(c.id, c)
    pool = list(by_id.values())
    if not pool:
        return []
    budget = min(spec.max_chunks or len(pool), len(pool))
    docs: dict[str, list[Chunk]] = defaultdict(list)
    for c in pool:
        docs[c.doc_id].append(c)
    for d in docs.values():
        d.sort(key=lambda c: c.position)

    hop_lo, hop_hi = max(2, spec.hops.min), min(3, spec.hops.max)
    multi_allowed = hop_hi >= 2
    single_allowed = spec.hops.min <= 1
    fraction = 0.0 if not multi_allowed else (spec.multi_hop_fraction if single_allowed else 1.0)
    c_lo, c_hi = spec.complexity.min, spec.complexity.max
    judge_model = spec.judge_model or spec.model

    # seeded order by each chunk's own hash: a chunk added or removed leaves the others' order as it was
    order = keyed_order(pool, spec.seed, key=lambda c: c.id)
    used: set[str] = set()
    groups: list[list[Chunk]] = []
    units_in: dict[str, int] = defaultdict(int)  # per document: units planned, and how many of them multi-hop
    multi_in: dict[str, int] = defaultdict(int)
    # per document, its own seeded offset in [0, 1) for rounding the share (unbiased; the same for all its units)
    offsets = {doc: keyed_rng(spec.seed, "offset", [doc]).random() for doc in docs}
    for seed in order:
        if len(used) >= budget:
            break
        if seed.id in used:
            continue
        group = [seed]
        doc = seed.doc_id
        # Multi-hop when the document's share so far is below the target: floor(fraction x units + offset).
        if multi_allowed and multi_in[doc] < math.floor(fraction * (units_in[doc] + 1) + offsets[doc]):
            size = min(keyed_rng(spec.seed, "size", [seed.id]).randint(hop_lo, hop_hi), budget - len(used))
            partners = _related(seed, size - 1, docs[seed.doc_id], used) if size >= 2 else []
            if partners and len(partners) + 1 >= hop_lo:
                group = sorted([seed, *partners], key=lambda c: c.position)
        if len(group) == 1 and not single_allowed:
            continue  # this chunk has no related partner and single-hop questions are not wanted
        groups.append(group)
        units_in[doc] += 1
        multi_in[doc] += len(group) > 1
        used.update(c.id for c in group)

    units = []
    for i, group in enumerate(groups):
        lo = c_lo if len(group) == 1 else max(c_lo, min(c_hi, 3))  # multi-hop questions are not trivial
        unit_rng = keyed_rng(spec.seed, "complexity", [c.id for c in group])
        complexities = tuple(unit_rng.randint(lo, c_hi) for _ in range(spec.questions_per_chunk))
        key_data = {
            "v": prompts.PROMPT_VERSION, "chunks": [c.id for c in group], "model": spec.model,
            "judge": judge_model, "n": spec.questions_per_chunk, "complexities": complexities,
            "range": [c_lo, c_hi],
        }
        key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:24]
        units.append(Unit(i, tuple(group), complexities, key))
    return units

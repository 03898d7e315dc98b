"""Seeded randomness that stays put when the corpus changes.

One `random.Random(seed)` stream drawn over a whole list makes every choice depend on everything before it: add
one document and every later question, unit or split side is drawn again. Here each choice is drawn from a
generator keyed by the items it concerns, and lists are visited in the order of each item's own hash, so an
item added or removed leaves the others' draws and relative order as they were.

A string seed is hashed by sha512 in `random.Random`, and the order uses sha256, so both are the same across
runs, processes and machines (no `PYTHONHASHSEED` involved).
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")


def keyed_rng(seed: int, purpose: str, keys: Sequence[str]) -> random.Random:
    """A generator seeded by `seed`, a `purpose` label (so two uses of one key draw independently) and `keys`
    (e.g. chunk ids) alone."""
    return random.Random(json.dumps([seed, purpose, list(keys)]))


def keyed_order(items: Iterable[T], seed: int, key: Callable[[T], str]) -> list[T]:
    """`items` sorted by sha256 of `f"{seed}:{key(item)}"`: a seeded shuffle in which adding or removing an item
    leaves the relative order of the others unchanged. Items with equal keys keep their input order."""
    return sorted(items, key=lambda item: hashlib.sha256(f"{seed}:{key(item)}".encode()).digest())

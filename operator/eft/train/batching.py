"""The recipe's batch-size rule and the per-device split of the global batch."""

from __future__ import annotations

import os

SMALL_DATASET = 2000


def effective_global_batch(n_examples: int, global_batch_size: int, auto_scale: bool) -> int:
    """Global batch 128 by default; below 2,000 examples the recipe uses 16-64 instead: 16 under 500 examples,
    32 under 1,000, 64 under 2,000 (never more than the configured size, never more than the examples)."""
    size = global_batch_size
    if auto_scale and n_examples < SMALL_DATASET:
        size = min(size, 16 if n_examples < 500 else 32 if n_examples < 1000 else 64)
    return max(2, min(size, max(2, n_examples)))


def world_size() -> int:
    """Processes in this run (torchrun sets WORLD_SIZE)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def per_device_batch(global_batch: int, processes: int) -> tuple[int, int]:
    """(per-device batch, gradient-accumulation steps) giving `global_batch` over `processes` devices."""
    per_device = max(1, global_batch // processes)
    return per_device, max(1, global_batch // (per_device * processes))

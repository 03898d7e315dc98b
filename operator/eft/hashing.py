"""Config hashes that decide which stages re-run (the stage contract, docs/architecture.md).

A stage's hash covers its own spec fields (`Stage.config_fields` in the stage table, `eft.api.stages`), the
base-model fields that change its output, and the hashes of its inputs. Runtime-only fields (images,
resources, concurrency, GPU counts) are left out on purpose: changing them never invalidates a finished stage.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from eft.api.spec import EmbeddingFinetuneSpec
from eft.api.stages import STAGE_NAMES, stage


def digest(obj: Any) -> str:
    """Stable sha256 (64 hex characters) of a JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def stage_hash(spec: EmbeddingFinetuneSpec, name: str, input_hashes: dict[str, str], extra: Any = None) -> str:
    """Hash of a stage's configuration given its upstream stages' hashes (and e.g. a corpus fingerprint).

    Raises ValueError when an input's hash is missing, KeyError for an unknown stage.
    """
    row = stage(name)
    missing = [s for s in row.inputs if s not in input_hashes]
    if missing:
        raise ValueError(f"stage {name} needs the hashes of {missing}")
    return digest(
        {
            "stage": name,
            "fields": row.config_fields(spec),
            "inputs": {s: input_hashes[s] for s in row.inputs},
            "extra": extra,
        }
    )


def plan_hashes(spec: EmbeddingFinetuneSpec, corpus_fingerprint: str | None = None) -> dict[str, str]:
    """Every stage's hash for a spec, in table order. The operator and the local runner both use this; the
    corpus fingerprint (when the documents are readable here) feeds the first stage's hash."""
    out: dict[str, str] = {}
    for name in STAGE_NAMES:
        out[name] = stage_hash(spec, name, out, extra=corpus_fingerprint if name == STAGE_NAMES[0] else None)
    return out

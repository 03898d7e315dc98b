"""Config hashes that decide which stages re-run (DESIGN.md stage contract).

A stage's hash covers its own spec fields, the base-model fields that change its output, and the hashes of
its inputs. Runtime-only fields (images, resources, concurrency, GPU counts) are left out on purpose: changing
them never invalidates a finished stage.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from eft.api.spec import EmbeddingFinetuneSpec

#: Upstream stages whose hashes feed each stage's hash.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "sdg": (),
    "prep": ("sdg",),
    "train": ("prep",),
    "eval": ("prep", "train"),
    "export": ("prep", "train"),
    "deploy": ("export",),
    "verify": ("deploy", "eval"),
}

# Fields that do not change what a stage produces.
_SDG_EXCLUDE = {"concurrency", "api_key_secret_ref", "api_key_env", "request_timeout_seconds", "max_retries"}
_TRAIN_EXCLUDE = {"gpus", "nodes", "gradient_checkpointing", "save_steps", "mini_batch_size"}
_DEPLOY_EXCLUDE = {"replicas", "resources", "image", "verification"}


def digest(obj: Any) -> str:
    """Stable sha256 of a JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def stage_fields(spec: EmbeddingFinetuneSpec, stage: str) -> dict[str, Any]:
    """The spec fields that belong to one stage's configuration."""
    bm = spec.base_model.model_dump(mode="json")
    if stage == "sdg":
        return {
            "corpus": spec.corpus.model_dump(mode="json"),
            "sdg": spec.sdg.model_dump(mode="json", exclude=_SDG_EXCLUDE),
            # The tokenizer sets chunk boundaries.
            "tokenizer": {"name": bm["name"], "revision": bm["revision"]},
        }
    if stage == "prep":
        return {"prep": spec.prep.model_dump(mode="json", exclude={"encode_batch_size"}), "base_model": bm}
    if stage == "train":
        return {"training": spec.training.model_dump(mode="json", exclude=_TRAIN_EXCLUDE), "base_model": bm}
    if stage == "eval":
        return {"evaluation": spec.evaluation.model_dump(mode="json", exclude={"batch_size"}), "base_model": bm}
    if stage == "export":
        return {"export": spec.export.model_dump(mode="json")}
    if stage == "deploy":
        return {"deploy": spec.deploy.model_dump(mode="json", exclude=_DEPLOY_EXCLUDE)}
    if stage == "verify":
        return {"verification": spec.deploy.verification.model_dump(mode="json")}
    raise KeyError(stage)


def stage_hash(spec: EmbeddingFinetuneSpec, stage: str, input_hashes: dict[str, str], extra: Any = None) -> str:
    """Hash of a stage's configuration given its upstream stages' hashes (and e.g. a corpus fingerprint)."""
    missing = [s for s in STAGE_INPUTS[stage] if s not in input_hashes]
    if missing:
        raise ValueError(f"stage {stage} needs the hashes of {missing}")
    return digest(
        {
            "stage": stage,
            "fields": stage_fields(spec, stage),
            "inputs": {s: input_hashes[s] for s in STAGE_INPUTS[stage]},
            "extra": extra,
        }
    )


def plan_hashes(spec: EmbeddingFinetuneSpec, corpus_fingerprint: str | None = None,
                stages: tuple[str, ...] = ("sdg", "prep", "train", "eval", "export", "deploy", "verify")) -> dict[str, str]:
    """All stage hashes for a spec, in order. The operator and the local runner both use this."""
    out: dict[str, str] = {}
    for s in stages:
        out[s] = stage_hash(spec, s, out, extra=corpus_fingerprint if s == "sdg" else None)
    return out

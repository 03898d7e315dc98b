"""Which function runs each stage (imported lazily so `eft validate` stays fast), and the plan of hashes."""

from __future__ import annotations

import importlib
from pathlib import Path

from eft.api.spec import PIPELINE_STAGES, EmbeddingFinetune
from eft.errors import InvalidInput
from eft.hashing import plan_hashes
from eft.stages.contract import StageFn

STAGE_FUNCTIONS: dict[str, str] = {
    "sdg": "eft.sdg.stage:run",
    "prep": "eft.prep.stage:run",
    "train": "eft.train.stage:run",
    "eval": "eft.evaluate.stage:run",
    "export": "eft.export.stage:run",
}


def stage_function(name: str) -> StageFn:
    if name not in STAGE_FUNCTIONS:
        raise InvalidInput(f"unknown stage '{name}' (expected one of: {', '.join(PIPELINE_STAGES)})", "stage")
    module, attr = STAGE_FUNCTIONS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def compute_hashes(resource: EmbeddingFinetune) -> dict[str, str]:
    """Config hashes of every stage; the sdg hash includes a fingerprint of the corpus files when readable."""
    from eft.corpus.reader import corpus_fingerprint

    return plan_hashes(resource.spec, corpus_fingerprint(resource.spec.corpus))


def workdir_for(resource: EmbeddingFinetune, workdir: str | Path | None) -> Path:
    return Path(workdir) if workdir else Path("eft-work") / resource.metadata.name

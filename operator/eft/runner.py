"""The local runner behind `eft run`: every enabled stage in order on this machine, memoized by config hash."""

from __future__ import annotations

import logging
from pathlib import Path

from eft.api.spec import EmbeddingFinetune
from eft.stages.contract import StageContext, StageOutcome, execute_stage
from eft.stages.registry import compute_hashes, stage_function
from eft.progress import Progress

log = logging.getLogger("eft.runner")


def enabled_stages(resource: EmbeddingFinetune, promoted: bool | None = None) -> list[str]:
    """sdg, prep, train, eval; export only when the eval promoted the model and ONNX export is on."""
    stages = ["sdg", "prep", "train", "eval"]
    if resource.spec.export.onnx.enabled and promoted is not False:
        stages.append("export")
    return stages


def run_one(resource: EmbeddingFinetune, name: str, workdir: Path, progress: Progress | None = None,
            force: bool = False, hashes: dict[str, str] | None = None) -> StageOutcome:
    hashes = hashes or compute_hashes(resource)
    ctx = StageContext(resource=resource, workdir=workdir, name=name, config_hash=hashes[name], hashes=hashes,
                       progress=progress or Progress(enabled=False))
    return execute_stage(stage_function(name), ctx, force=force)


def run_pipeline(resource: EmbeddingFinetune, workdir: Path, progress: Progress | None = None,
                 on_stage=None) -> list[StageOutcome]:
    """Run sdg → prep → train → eval (→ export when promoted). `on_stage(outcome)` is called after each."""
    hashes = compute_hashes(resource)
    outcomes: list[StageOutcome] = []
    for name in ["sdg", "prep", "train", "eval", "export"]:
        if name == "export":
            promoted = outcomes[-1].summary.get("promotion", {}).get("promoted")
            if "export" not in enabled_stages(resource, promoted):
                log.info("export skipped: %s", "model not promoted" if promoted is False else "disabled")
                break
        outcome = run_one(resource, name, workdir, progress, hashes=hashes)
        outcomes.append(outcome)
        if on_stage:
            on_stage(outcome)
    return outcomes

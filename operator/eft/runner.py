"""The local runner behind `eft run`: every local stage of the stage table in order on this machine, memoized
by config hash (the stage contract skips a stage whose outputs are current)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from eft.api.spec import EmbeddingFinetune
from eft.api.stages import PIPELINE_STAGES
from eft.progress import Progress
from eft.stages.contract import StageContext, StageOutcome, execute_stage
from eft.stages.registry import compute_hashes, stage_check, stage_function

log = logging.getLogger("eft.runner")


def skip_reason(resource: EmbeddingFinetune, name: str, done: dict[str, StageOutcome]) -> str | None:
    """Why `eft run` stops before stage `name` given the stages `done` so far, or None to run it.

    Export runs only when the eval promoted the model and ONNX export is on (as in the cluster).
    """
    if name != "export":
        return None
    promoted = done["eval"].summary.get("promotion", {}).get("promoted")
    if promoted is False:
        return "model not promoted"
    if not resource.spec.export.onnx.enabled:
        return "disabled"
    return None


def run_one(resource: EmbeddingFinetune, name: str, workdir: Path, progress: Progress | None = None,
            force: bool = False, hashes: dict[str, str] | None = None) -> StageOutcome:
    """Run (or skip, when current) one stage under the stage contract."""
    hashes = hashes or compute_hashes(resource)
    progress = progress or Progress(enabled=False)
    ctx = StageContext(resource=resource, workdir=workdir, name=name, config_hash=hashes[name], hashes=hashes,
                       progress=progress)
    with progress.stage(name):
        return execute_stage(stage_function(name), ctx, force=force, check=stage_check(name))


def run_pipeline(resource: EmbeddingFinetune, workdir: Path, progress: Progress | None = None,
                 on_stage: Callable[[StageOutcome], None] | None = None) -> list[StageOutcome]:
    """Run sdg → prep → train → eval (→ export when promoted). `on_stage(outcome)` is called after each."""
    hashes = compute_hashes(resource)
    done: dict[str, StageOutcome] = {}
    for name in PIPELINE_STAGES:
        why = skip_reason(resource, name, done)
        if why is not None:
            log.info("%s skipped: %s", name, why)
            break
        outcome = done[name] = run_one(resource, name, workdir, progress, hashes=hashes)
        if on_stage:
            on_stage(outcome)
    return list(done.values())

"""The stage contract (docs/architecture.md): inputs from `DIR/<upstream>/`, outputs to `DIR/NAME/`, `_SUCCESS.json` last.

A stage whose `_SUCCESS.json` carries the current config hash, and whose outputs it records are all still there,
is skipped (a deleted output re-runs it, and a stage needing it says which). While a stage runs, `_STATE.json`
records the hash it runs for: an interrupted run with the same hash resumes from what it left (training
checkpoints); a run for a different hash starts from an empty folder, except `_work/`, which holds caches keyed
by their own content (the LLM answers already paid for) and is kept. Upstream folders are only read,
so a failing stage never damages earlier outputs. A compact summary (< 4 KiB) goes to the container's
termination message for the operator.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from eft.api.spec import EmbeddingFinetune, EmbeddingFinetuneSpec
from eft.errors import InvalidInput
from eft.api.stages import stage as stage_row
from eft.clock import now_iso
from eft.progress import SILENT, Progress

log = logging.getLogger("eft.stages")

SUCCESS_FILE = "_SUCCESS.json"
STATE_FILE = "_STATE.json"
TERMINATION_LIMIT = 4096
#: Folders inside a stage's output that are working state, not results (no checksums).
WORKING_DIRS = ("checkpoints", "_work")
#: Working state keyed by content (e.g. paid-for LLM answers): kept even when the config hash changes.
CONTENT_KEYED_DIR = "_work"


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write via a temporary file and rename, so a kill never leaves half a JSON file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_success(stage_dir: Path) -> dict | None:
    return read_json(stage_dir / SUCCESS_FILE)


def file_checksum(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def output_checksums(stage_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted(stage_dir.rglob("*")):
        rel = p.relative_to(stage_dir)
        if not p.is_file() or rel.parts[0] in WORKING_DIRS or rel.name.startswith(("_SUCCESS", "_STATE", ".")):
            continue
        out[str(rel)] = {"sha256": file_checksum(p), "bytes": p.stat().st_size}
    return out


def missing_outputs(stage_dir: Path, success: dict[str, Any]) -> list[str]:
    """The outputs a `_SUCCESS.json` records that are gone or changed size since (a stat each, no checksum)."""
    gone = []
    for rel, meta in (success.get("outputs") or {}).items():
        try:
            if (stage_dir / rel).stat().st_size != meta.get("bytes"):
                gone.append(rel)
        except OSError:
            gone.append(rel)
    return gone


def compact_summary(payload: dict[str, Any], limit: int = TERMINATION_LIMIT) -> str:
    """JSON of `payload` under `limit` bytes: drop the largest summary entries until it fits."""
    data = json.loads(json.dumps(payload, default=str))
    text = json.dumps(data, separators=(",", ":"))
    summary = data.get("summary", {})
    while len(text.encode()) > limit and summary:
        biggest = max(summary, key=lambda k: len(json.dumps(summary[k])))
        summary.pop(biggest)
        data.setdefault("truncated", []).append(biggest)
        text = json.dumps(data, separators=(",", ":"))
    if len(text.encode()) > limit:
        text = json.dumps({"stage": data.get("stage"), "configHash": data.get("configHash"), "truncated": True})
    return text


def write_termination_message(text: str) -> None:
    """Write to the pod's termination-message file when there is one (`EFT_TERMINATION_MESSAGE_PATH`)."""
    path = os.environ.get("EFT_TERMINATION_MESSAGE_PATH", "/dev/termination-log")
    p = Path(path)
    if os.environ.get("EFT_TERMINATION_MESSAGE_PATH") or p.exists():
        try:
            p.write_text(text, encoding="utf-8")
        except OSError:
            pass


@dataclass
class StageContext:
    """What a stage function gets: the resource, its folders and hashes, and a progress reporter."""

    resource: EmbeddingFinetune
    workdir: Path
    name: str
    config_hash: str
    hashes: dict[str, str]
    progress: Progress = field(default=SILENT)

    @property
    def spec(self) -> EmbeddingFinetuneSpec:
        return self.resource.spec

    @property
    def out_dir(self) -> Path:
        return self.workdir / self.name

    def input_dir(self, stage: str) -> Path:
        return self.workdir / stage

    @cached_property
    def embedding_cache(self):
        """The workdir's embedding cache shared by the stages (`eft.embedding_cache`)."""
        from eft.embedding_cache import EmbeddingCache

        return EmbeddingCache.for_workdir(self.workdir)


StageFn = Callable[[StageContext], dict]


@dataclass
class StageOutcome:
    name: str
    skipped: bool
    config_hash: str
    summary: dict
    seconds: float


def check_inputs(name: str, workdir: Path, hashes: dict[str, str]) -> None:
    """Every upstream stage must have finished for the current config, else this stage cannot run."""
    for up in stage_row(name).inputs:
        if not stage_row(up).local:  # e.g. verify's deploy input: a live server, not a folder
            continue
        succ = read_success(workdir / up)
        if succ is None:
            raise InvalidInput(f"stage '{name}' needs the output of stage '{up}' in {workdir / up}; run it first")
        if succ.get("configHash") != hashes[up]:
            raise InvalidInput(
                f"stage '{name}' needs stage '{up}' re-run: its output in {workdir / up} was made for another "
                f"configuration (run `eft stage {up}` or `eft run`)"
            )
        gone = missing_outputs(workdir / up, succ)
        if gone:
            shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
            raise InvalidInput(f"stage '{name}' needs stage '{up}' re-run: {shown} in {workdir / up} is gone or "
                               f"changed since it finished (run `eft stage {up}` or `eft run`, which re-run it)")


def prepare_output_dir(out: Path, config_hash: str) -> bool:
    """Make `out` ready for a run with `config_hash`. Returns True if earlier partial work is kept (resume)."""
    state = read_json(out / STATE_FILE)
    resumable = bool(state and state.get("configHash") == config_hash)
    if out.exists() and not resumable:
        for child in out.iterdir():
            if child.name == CONTENT_KEYED_DIR:
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / SUCCESS_FILE).unlink(missing_ok=True)
    write_json_atomic(out / STATE_FILE, {"configHash": config_hash, "startedAt": now_iso(), "pid": os.getpid()})
    return resumable


def execute_stage(fn: StageFn, ctx: StageContext, force: bool = False,
                  check: Callable[[StageContext], None] | None = None) -> StageOutcome:
    """Run (or skip) one stage under the contract. `check(ctx)`, the stage's own check of its inputs (cheap,
    writes nothing), runs before the stage's folder is emptied, so bad input loses no earlier output."""
    out = ctx.out_dir
    succ = read_success(out)
    current = bool(succ and succ.get("configHash") == ctx.config_hash and not force)
    gone = missing_outputs(out, succ) if current else []
    if gone:
        log.warning("stage %s: %s gone or changed since it finished; running it again", ctx.name,
                    ", ".join(gone[:5]))
    elif current:
        write_termination_message(compact_summary({"stage": ctx.name, "configHash": ctx.config_hash,
                                                   "skipped": True, "summary": succ.get("summary", {})}))
        return StageOutcome(ctx.name, True, ctx.config_hash, succ.get("summary", {}), 0.0)
    check_inputs(ctx.name, ctx.workdir, ctx.hashes)
    if check is not None:
        check(ctx)
    started = time.monotonic()
    started_at = now_iso()
    prepare_output_dir(out, ctx.config_hash)
    summary = fn(ctx)
    seconds = round(time.monotonic() - started, 2)
    inputs = {up: ctx.hashes[up] for up in stage_row(ctx.name).inputs if up in ctx.hashes}
    finish_stage(out, ctx.name, ctx.config_hash, inputs, started_at, seconds, summary)
    return StageOutcome(ctx.name, False, ctx.config_hash, summary, seconds)


def finish_stage(out: Path, name: str, config_hash: str | None, inputs: dict[str, str], started_at: str,
                 seconds: float, summary: dict[str, Any]) -> None:
    """Record a finished stage: `_SUCCESS.json` (hashes, timing, output checksums, summary) written last and
    atomically, the `_STATE.json` of the run removed, and the compact summary put in the termination message."""
    record = {
        "stage": name,
        "configHash": config_hash,
        "inputs": inputs,
        "startedAt": started_at,
        "finishedAt": now_iso(),
        "durationSeconds": seconds,
        "outputs": output_checksums(out),
        "summary": summary,
    }
    write_json_atomic(out / SUCCESS_FILE, record)
    (out / STATE_FILE).unlink(missing_ok=True)
    write_termination_message(compact_summary({"stage": name, "configHash": config_hash,
                                               "durationSeconds": seconds, "summary": summary}))

"""Kill-and-resume of training: a SIGKILLed `eft stage train` continues from its last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from eft.cli import main
from eft.stages.contract import read_success

pytestmark = pytest.mark.slow


def test_killed_training_resumes_from_checkpoint(make_resource, tmp_path):
    spec_file = make_resource(training={"maxSteps": 6, "saveSteps": 2, "warmupSteps": 1})
    workdir = tmp_path / "work"
    for stage in ("sdg", "prep"):
        result = CliRunner().invoke(main, ["stage", stage, "--spec", str(spec_file), "--workdir", str(workdir)])
        assert result.exit_code == 0, result.output

    ckpts = workdir / "train" / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-m", "eft.cli", "stage", "train", "--spec", str(spec_file),
                             "--workdir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    # Wait until a checkpoint is completely written (the trainer writes trainer_state.json last).
    while time.monotonic() < deadline and not list(ckpts.glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.parent.name.split("-")[1]) for p in ckpts.glob("checkpoint-*/trainer_state.json"))
    assert saved and saved[-1] < 6, "the run must be killed before it finished"
    assert read_success(workdir / "train") is None

    result = CliRunner().invoke(main, ["stage", "train", "--spec", str(spec_file), "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    summary = read_success(workdir / "train")["summary"]
    assert summary["steps"] == 6
    assert summary["resumedFrom"] is not None and int(summary["resumedFrom"]) >= saved[-1]
    assert (workdir / "train" / "model" / "model.safetensors").exists()
    assert not ckpts.exists(), "checkpoints are removed once the model is saved"


def test_resume_skips_a_checkpoint_whose_save_was_cut_short(tmp_path):
    """A pod killed while the Trainer wrote checkpoint-N leaves a folder without trainer_state.json (written
    last): resuming from it would fail every later run, so the newest complete one is taken."""
    from eft.train.stage import CHECKPOINT_COMPLETE, latest_checkpoint

    ckpts = tmp_path / "checkpoints"
    assert latest_checkpoint(ckpts) is None
    for step in (2, 4, 10):
        (ckpts / f"checkpoint-{step}").mkdir(parents=True)
        (ckpts / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"x")
    for step in (2, 4):
        (ckpts / f"checkpoint-{step}" / CHECKPOINT_COMPLETE).write_text("{}")
    (ckpts / "checkpoint-6").mkdir()  # cut short before anything was written
    assert latest_checkpoint(ckpts) == str(ckpts / "checkpoint-4")  # 10 > 4 numerically, and incomplete
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    for step in (2, 4):
        (ckpts / f"checkpoint-{step}" / CHECKPOINT_COMPLETE).unlink()
    assert latest_checkpoint(ckpts) is None and not list(ckpts.iterdir())

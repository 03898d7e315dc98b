"""What `eft` shows on a real terminal (a pseudo-terminal) and in a log file: one display per stage, no library
progress bars or chatty library logs unless -v."""

from __future__ import annotations

import logging
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model_workspace import fake_workdir, resource

pytestmark = pytest.mark.slow

LIBRARY_NOISE = ("Loading weights", "it/s]", "beir.", "NDCG@1:", "Doc Example", "Loaded 20 TEST")


@pytest.fixture(scope="module")
def eval_workspace(tmp_path_factory):
    """A workspace whose eval stage can run (base and 'trained' model = MiniLM, a 20-query BEIR split)."""
    import json

    from eft.stages.registry import compute_hashes

    corpus = tmp_path_factory.mktemp("tty-corpus")
    (corpus / "notes.md").write_text("# Notes\n\nA corpus file, so that the hashes include a fingerprint.\n")
    root = tmp_path_factory.mktemp("tty")
    res = resource(corpus)
    fake_workdir(root, res)
    hashes = compute_hashes(res)  # what `eft stage` computes (with the corpus fingerprint)
    for stage in ("prep", "train"):
        success = json.loads((root / stage / "_SUCCESS.json").read_text())
        success["configHash"] = hashes[stage]
        (root / stage / "_SUCCESS.json").write_text(json.dumps(success))
    spec = root / "resource.yaml"
    spec.write_text(yaml.safe_dump(res.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return root, spec


def _run(args: list[str], tty: bool) -> str:
    # The embedding cache off: both runs share one workspace, and the second would find every vector cached and
    # show no encoding step at all (the display of encoding is what these tests look at).
    env = dict(os.environ, COLUMNS="120", LINES="50", TERM="xterm-256color", EFT_EMBEDDING_CACHE="off")
    for key in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "eft.cli", *args]
    if not tty:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stderr + proc.stdout
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=600) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_terminal_shows_one_clean_display_per_stage(eval_workspace):
    root, spec = eval_workspace
    out = _plain(_run(["stage", "eval", "--force", "--spec", str(spec), "--workdir", str(root)], tty=True))
    assert re.search(r"eval ─+", out), out
    assert "test: base evaluated" in out and "test: finetuned evaluated" in out
    assert "stage eval: done" in out
    for noise in LIBRARY_NOISE:
        assert noise not in out, (noise, out[-3000:])
    # A warning still reaches the user, through the same console (the 20-query split is below the minimum).
    assert "fewer than promotion.minTestQueries" in out


def test_verbose_brings_library_detail_back(eval_workspace):
    root, spec = eval_workspace
    out = _plain(_run(["-v", "stage", "eval", "--force", "--spec", str(spec), "--workdir", str(root)], tty=True))
    assert "beir.retrieval.evaluation: NDCG@1:" in out and "beir.datasets.data_loader: Loaded 20 TEST" in out
    assert "sentence_transformers" in out  # library INFO lines are back


def test_log_file_gets_one_line_per_progress_step(eval_workspace):
    root, spec = eval_workspace
    out = _run(["stage", "eval", "--force", "--spec", str(spec), "--workdir", str(root)], tty=False)
    assert "\r" not in out and "━" not in out
    for noise in LIBRARY_NOISE:
        assert noise not in out, noise
    lines = [ln for ln in out.splitlines() if " eft.progress: " in ln]
    assert re.match(r"\d{4}-\d\d-\d\d [\d:,]+ INFO eft\.progress: stage eval: started$", lines[0])
    assert any(ln.endswith("test: base evaluated: 1/1") for ln in lines)
    assert any(ln.endswith("passages encoded: 20/20") for ln in lines)
    assert any(re.search(r"queries encoded: (\d+)/\1$", ln) for ln in lines)


def test_configure_levels_and_bar_switches(monkeypatch):
    from eft import terminal

    for key in terminal.BAR_SWITCHES:
        monkeypatch.delenv(key, raising=False)
    try:
        terminal.configure(verbose=True, interactive=False)
        assert logging.getLogger("beir").level == logging.INFO
        assert "TQDM_DISABLE" not in os.environ
        terminal.configure(verbose=False, interactive=True)
        assert logging.getLogger("beir").level == logging.WARNING
        assert logging.getLogger("transformers").level == logging.WARNING
        assert os.environ["TQDM_DISABLE"] == "1"
        from transformers.utils import logging as hf_logging

        assert not hf_logging.is_progress_bar_enabled()
    finally:
        from transformers.utils import logging as hf_logging

        hf_logging.enable_progress_bar()
        logging.getLogger().removeHandler(terminal._handler)
        terminal._handler = None
        logging.captureWarnings(False)

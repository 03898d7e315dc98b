"""A workdir the pipeline cannot write (read-only, forbidden, full) is reported with the path and the system's
reason, never a traceback, and leaves no half-written file behind."""

from __future__ import annotations

import errno
import json
import os

import pytest
from click.testing import CliRunner

from eft.cli import main
from eft.records import read_jsonl, write_jsonl

SPEC = {"apiVersion": "finetune.embeddings.io/v1alpha1", "kind": "EmbeddingFinetune", "metadata": {"name": "d"},
        "spec": {"corpus": {"source": {"path": "/data"}}}}


@pytest.mark.parametrize("code, exit_code", [(errno.EROFS, 2), (errno.EACCES, 2), (errno.ENOSPC, 1)])
def test_the_stage_command_names_the_path_and_the_reason(tmp_path, monkeypatch, code, exit_code):
    import eft.runner

    def failing(*a, **k):
        raise OSError(code, os.strerror(code), str(tmp_path / "w" / "prep"))

    monkeypatch.setattr(eft.runner, "run_one", failing)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    result = CliRunner().invoke(main, ["stage", "prep", "--spec", str(spec), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == exit_code
    assert f"cannot read or write {tmp_path / 'w' / 'prep'}" in result.output
    assert "Traceback" not in result.output


def test_a_failed_jsonl_write_leaves_no_temporary_file(tmp_path):
    write_jsonl(tmp_path / "q.jsonl", [{"a": 1}])

    def records():
        yield {"a": 2}
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        write_jsonl(tmp_path / "q.jsonl", records())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.jsonl"]
    assert read_jsonl(tmp_path / "q.jsonl") == [{"a": 1}]  # the last whole file is untouched

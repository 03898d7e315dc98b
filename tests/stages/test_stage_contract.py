"""The stage contract: _SUCCESS.json, skipping, failure isolation, config-hash changes, termination messages."""

from __future__ import annotations

import json

import pytest

from eft.api import parse_resource
from eft.errors import InvalidInput
from eft.hashing import digest, plan_hashes
from eft.stages.contract import (SUCCESS_FILE, StageContext, check_inputs, compact_summary, execute_stage,
                                 file_checksum, read_success)

RESOURCE = {"apiVersion": "finetune.embeddings.io/v1alpha1", "kind": "EmbeddingFinetune",
            "metadata": {"name": "demo"}, "spec": {"corpus": {"source": {"path": "/data"}}}}


@pytest.fixture()
def term(tmp_path, monkeypatch):
    path = tmp_path / "termination-log"
    monkeypatch.setenv("EFT_TERMINATION_MESSAGE_PATH", str(path))
    return path


def ctx_for(workdir, name, hashes=None, resource=None):
    resource = resource or parse_resource(RESOURCE)
    hashes = hashes or plan_hashes(resource.spec, "fp")
    return StageContext(resource=resource, workdir=workdir, name=name, config_hash=hashes[name], hashes=hashes)


def sdg_fn(calls):
    def fn(ctx):
        calls.append(ctx.name)
        (ctx.out_dir / "chunks.jsonl").write_text('{"id": "c1"}\n', encoding="utf-8")
        (ctx.out_dir / "sub").mkdir(exist_ok=True)
        (ctx.out_dir / "sub" / "q.jsonl").write_text("{}\n", encoding="utf-8")
        (ctx.out_dir / "_work").mkdir(exist_ok=True)
        (ctx.out_dir / "_work" / "cache.json").write_text("{}", encoding="utf-8")
        return {"chunks": 1, "questions": 1}
    return fn


def test_success_record_checksums_and_skip(tmp_path, term):
    calls: list[str] = []
    ctx = ctx_for(tmp_path, "sdg")
    out = execute_stage(sdg_fn(calls), ctx)
    assert not out.skipped and out.summary == {"chunks": 1, "questions": 1} and calls == ["sdg"]
    succ = read_success(tmp_path / "sdg")
    assert succ["stage"] == "sdg" and succ["configHash"] == ctx.config_hash and succ["inputs"] == {}
    assert succ["summary"] == {"chunks": 1, "questions": 1}
    assert set(succ["outputs"]) == {"chunks.jsonl", "sub/q.jsonl"}  # no _work/, _SUCCESS, _STATE
    f = tmp_path / "sdg" / "chunks.jsonl"
    assert succ["outputs"]["chunks.jsonl"] == {"sha256": file_checksum(f), "bytes": f.stat().st_size}
    assert succ["durationSeconds"] >= 0 and succ["startedAt"] <= succ["finishedAt"]
    assert not (tmp_path / "sdg" / "_STATE.json").exists()
    msg = json.loads(term.read_text())
    assert msg["stage"] == "sdg" and msg["configHash"] == ctx.config_hash and msg["summary"]["chunks"] == 1
    assert "skipped" not in msg

    again = execute_stage(sdg_fn(calls), ctx)
    assert again.skipped and again.summary == out.summary and calls == ["sdg"]
    msg = json.loads(term.read_text())
    assert msg["skipped"] is True and msg["summary"] == {"chunks": 1, "questions": 1}
    # force re-runs.
    execute_stage(sdg_fn(calls), ctx, force=True)
    assert calls == ["sdg", "sdg"]


def test_failing_stage_leaves_upstream_intact(tmp_path, term):
    execute_stage(sdg_fn([]), ctx_for(tmp_path, "sdg"))
    before = {p: p.read_bytes() for p in (tmp_path / "sdg").rglob("*") if p.is_file()}

    def broken(ctx):
        (ctx.out_dir / "partial.json").write_text("{", encoding="utf-8")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        execute_stage(broken, ctx_for(tmp_path, "prep"))
    assert {p: p.read_bytes() for p in (tmp_path / "sdg").rglob("*") if p.is_file()} == before
    assert not (tmp_path / "prep" / SUCCESS_FILE).exists()
    assert (tmp_path / "prep" / "_STATE.json").exists()  # the run it was for, for a resume


def test_changed_config_clears_the_folder_but_keeps_work(tmp_path, term):
    ctx = ctx_for(tmp_path, "sdg")
    execute_stage(sdg_fn([]), ctx)
    (tmp_path / "sdg" / "stale.txt").write_text("old", encoding="utf-8")
    changed = parse_resource({**RESOURCE, "spec": {**RESOURCE["spec"], "sdg": {"qualityThreshold": 8.0}}})
    ctx2 = ctx_for(tmp_path, "sdg", resource=changed)
    assert ctx2.config_hash != ctx.config_hash
    seen = {}

    def fn(c):
        seen["files"] = sorted(p.relative_to(c.out_dir).as_posix() for p in c.out_dir.rglob("*") if p.is_file())
        (c.out_dir / "chunks.jsonl").write_text("new\n", encoding="utf-8")
        return {}

    out = execute_stage(fn, ctx2)
    assert not out.skipped
    assert seen["files"] == ["_STATE.json", "_work/cache.json"]
    assert read_success(tmp_path / "sdg")["configHash"] == ctx2.config_hash
    assert (tmp_path / "sdg" / "_work" / "cache.json").exists() and not (tmp_path / "sdg" / "stale.txt").exists()


def test_a_stage_check_refusing_its_input_loses_nothing_already_produced(tmp_path, term):
    ctx = ctx_for(tmp_path, "sdg")
    execute_stage(sdg_fn([]), ctx)
    before = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in (tmp_path / "sdg").rglob("*")
              if p.is_file()}
    changed = parse_resource({**RESOURCE, "spec": {**RESOURCE["spec"], "sdg": {"qualityThreshold": 8.0}}})
    calls = []

    def refuse(c):
        raise InvalidInput("the new input is wrong", "spec.sdg.something")

    with pytest.raises(InvalidInput, match="the new input is wrong"):
        execute_stage(sdg_fn(calls), ctx_for(tmp_path, "sdg", resource=changed), check=refuse)
    assert not calls  # the stage never ran
    after = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in (tmp_path / "sdg").rglob("*")
             if p.is_file()}
    assert after == before  # the last good output, its _SUCCESS.json included, is all still there


def test_a_deleted_output_re_runs_its_stage_and_a_stage_needing_it_names_it(tmp_path, term):
    calls = []
    ctx = ctx_for(tmp_path, "sdg")
    execute_stage(sdg_fn(calls), ctx)
    execute_stage(lambda c: {"examples": 1}, ctx_for(tmp_path, "prep"))
    (tmp_path / "sdg" / "chunks.jsonl").unlink()
    with pytest.raises(InvalidInput, match=r"needs stage 'sdg' re-run: chunks.jsonl in .* is gone or changed"):
        check_inputs("prep", tmp_path, ctx.hashes)
    out = execute_stage(sdg_fn(calls), ctx)  # not skipped: its output is gone
    assert not out.skipped and calls == ["sdg", "sdg"] and (tmp_path / "sdg" / "chunks.jsonl").exists()
    assert execute_stage(sdg_fn(calls), ctx).skipped  # whole again: skipped as before
    check_inputs("prep", tmp_path, ctx.hashes)


def test_check_inputs_missing_and_stale(tmp_path, term):
    hashes = plan_hashes(parse_resource(RESOURCE).spec, "fp")
    with pytest.raises(InvalidInput, match="needs the output of stage 'sdg'"):
        check_inputs("prep", tmp_path, hashes)
    with pytest.raises(InvalidInput, match="needs the output of stage 'sdg'"):
        execute_stage(lambda c: {}, ctx_for(tmp_path, "prep", hashes))
    execute_stage(sdg_fn([]), ctx_for(tmp_path, "sdg", hashes))
    check_inputs("prep", tmp_path, hashes)  # current: no error
    stale = dict(hashes, sdg=digest("something else"))
    with pytest.raises(InvalidInput, match="re-run"):
        check_inputs("prep", tmp_path, stale)
    # eval needs both prep and train.
    with pytest.raises(InvalidInput, match="stage 'prep'"):
        check_inputs("eval", tmp_path, hashes)
    # A prep run records its input hash.
    execute_stage(lambda c: {"examples": 3}, ctx_for(tmp_path, "prep", hashes))
    assert read_success(tmp_path / "prep")["inputs"] == {"sdg": hashes["sdg"]}


def test_compact_summary_stays_under_the_limit():
    summary = {f"metric{i}": "x" * 500 for i in range(40)}
    summary["small"] = 1
    text = compact_summary({"stage": "eval", "configHash": "h" * 64, "durationSeconds": 1.0, "summary": summary})
    assert len(text.encode()) < 4096
    data = json.loads(text)
    assert data["stage"] == "eval" and data["summary"]["small"] == 1 and data["truncated"]
    # Even a huge top-level field cannot break the limit.
    text = compact_summary({"stage": "eval", "configHash": "h", "huge": "y" * 10000, "summary": {}})
    assert len(text.encode()) < 4096 and json.loads(text)["truncated"] is True
    small = {"stage": "sdg", "configHash": "h", "summary": {"a": 1}}
    assert json.loads(compact_summary(small)) == small

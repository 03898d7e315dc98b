"""SentenceTransformer -> ONNX with pooling and L2 normalisation inside the graph, plus the int8 variant.

The graph runs the model's own modules after the transformer (Pooling, Dense, ..., Normalize), then an L2
normalisation (a no-op when the model already ends with Normalize), so the server only tokenises and runs it.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np

from eft.errors import EftError, InvalidInput
from eft.export.artifact import MODEL_FILE, TOKENIZER_FILE, ModelMetadata, max_positions

log = logging.getLogger("eft.export")

OUTPUT_NAME = "sentence_embedding"


class ExportFailed(EftError):
    """The model could not be exported, or the export does not reproduce it."""


def _transformer_parts(st_model):
    """(transformer module, Hugging Face model, tokenizer, the modules after the transformer)."""
    modules = list(st_model)
    if not modules:
        raise InvalidInput("the model has no modules", "train/model")
    first = modules[0]
    hf = getattr(first, "auto_model", None) or getattr(first, "model", None)
    tokenizer = getattr(first, "tokenizer", None) or getattr(st_model, "tokenizer", None)
    if hf is None or tokenizer is None:
        raise ExportFailed(f"cannot export a model whose first module is {type(first).__name__} "
                           "(expected a sentence-transformers Transformer)")
    return first, hf, tokenizer, modules[1:]


def pooling_name(st_model) -> str:
    for m in list(st_model)[1:]:
        if type(m).__name__ == "Pooling":
            cfg = m.get_config_dict() if hasattr(m, "get_config_dict") else {}
            mode = cfg.get("pooling_mode")
            if mode:
                return str(mode)
            on = [k.removeprefix("pooling_mode_").removesuffix("_token").removesuffix("_tokens")
                  for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
            return "+".join(on) or "unknown"
    return "none"


def _wrapper(st_model, input_names: list[str]):
    import torch

    _, hf, _, tail = _transformer_parts(st_model)

    class EmbeddingGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hf = hf
            self.tail = torch.nn.ModuleList(tail)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            out = self.hf(**kwargs, return_dict=True)
            features = {"input_ids": input_ids, "attention_mask": attention_mask,
                        "token_embeddings": out.last_hidden_state}
            for module in self.tail:
                features = module(features)
            emb = features["sentence_embedding"]
            return torch.nn.functional.normalize(emb, p=2.0, dim=-1)

    return EmbeddingGraph().eval()


def export_onnx(st_model, out_dir: Path, opset: int = 17, name: str = "model", query_prefix: str = "",
                passage_prefix: str = "", max_seq_length: int | None = None,
                supported_dimensions: list[int] | None = None) -> ModelMetadata:
    """Write `model.onnx`, the tokenizer and `eft_model.json` to `out_dir`. `supported_dimensions`: the
    Matryoshka widths the model was trained for (the full width is always added)."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _, hf, tokenizer, _ = _transformer_parts(st_model)
    if not getattr(tokenizer, "is_fast", False):
        raise ExportFailed("the model's tokenizer has no fast (tokenizer.json) version; the server needs one")
    input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
                   if n in ("input_ids", "attention_mask") or n in getattr(tokenizer, "model_input_names", [])]
    # Eager attention exports to plain MatMul/Softmax that onnxruntime and TensorRT both fuse well.
    previous_attn = getattr(hf.config, "_attn_implementation", None)
    if hasattr(hf, "set_attn_implementation"):
        try:
            hf.set_attn_implementation("eager")
        except Exception:  # noqa: BLE001 - some architectures allow only one implementation
            pass
    graph = _wrapper(st_model, input_names)
    device = next(hf.parameters()).device
    sample = tokenizer(["a short example", "a somewhat longer example sentence for tracing the graph"],
                       padding=True, return_tensors="pt")
    args = tuple(sample[n].to(device) for n in input_names)
    dynamic_axes = {n: {0: "batch", 1: "sequence"} for n in input_names}
    dynamic_axes[OUTPUT_NAME] = {0: "batch"}
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, args, str(out_dir / MODEL_FILE), input_names=input_names,
                              output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes, opset_version=opset,
                              do_constant_folding=True, dynamo=False)
    except Exception as err:  # noqa: BLE001 - exporter errors are many and varied
        raise ExportFailed(f"ONNX export failed: {type(err).__name__}: {err}") from err
    finally:
        if previous_attn and hasattr(hf, "set_attn_implementation"):
            try:
                hf.set_attn_implementation(previous_attn)
            except Exception:  # noqa: BLE001
                pass
    tokenizer.save_pretrained(str(out_dir))
    if not (out_dir / TOKENIZER_FILE).exists():
        raise ExportFailed("the tokenizer did not save a tokenizer.json")
    get_dim = getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension
    dim = get_dim()
    if not dim:
        with torch.no_grad():
            dim = int(graph(*args).shape[-1])
    _fix_output_dim(out_dir / MODEL_FILE, int(dim))
    meta = ModelMetadata(
        name=name, dimension=int(dim), max_seq_length=int(max_seq_length or st_model.max_seq_length),
        query_prefix=query_prefix or "", passage_prefix=passage_prefix or "", input_names=input_names,
        output_name=OUTPUT_NAME, pad_token_id=int(tokenizer.pad_token_id or 0), precision="fp32", opset=opset,
        pooling=pooling_name(st_model), normalized=True, supported_dimensions=list(supported_dimensions or []),
        max_positions=max_positions(hf.config.to_dict()),
    )
    meta.save(out_dir)
    return meta


#: Protobuf cannot serialise a message over 2 GiB. A graph whose weights pass this many bytes (a 1B-parameter
#: model in fp32 or fp16) is saved with all its weights in one external-data file beside it, `<file>.data`,
#: as the ONNX external data format specifies; onnxruntime and TensorRT's parser read it from the graph's folder.
EXTERNAL_DATA_ABOVE_BYTES = 1_800_000_000


def save_onnx(model, path: Path) -> None:
    """Save ONNX `model` to `path`: one file, or for weights over `EXTERNAL_DATA_ABOVE_BYTES` the graph plus
    `path.name + ".data"` (replaced, never appended to)."""
    import onnx

    path = Path(path)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    if sum(t.ByteSize() for t in model.graph.initializer) <= EXTERNAL_DATA_ABOVE_BYTES:
        onnx.save(model, str(path))
        return
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name,
              size_threshold=1024)


def external_data_files(path: Path) -> set[str]:
    """Names of the files (beside `path`) that hold the weights of the ONNX graph at `path`; empty for a graph
    that carries its weights inside."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    names = set()
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            names.update(e.value for e in t.external_data if e.key == "location")
    return names


def _fix_output_dim(path: Path, dim: int) -> None:
    """Give the output its static embedding width (the exporter leaves a symbolic one after pooling). A graph
    over 2 GiB, which the exporter writes with one weight file per tensor, is saved again with one data file."""
    import onnx

    path = Path(path)
    scattered = external_data_files(path)
    model = onnx.load(str(path))
    shape = model.graph.output[0].type.tensor_type.shape
    if len(shape.dim) == 2:
        shape.dim[0].dim_param = "batch"
        shape.dim[1].dim_value = dim
    elif not scattered:
        return
    save_onnx(model, path)
    for name in scattered - external_data_files(path):
        (path.parent / name).unlink(missing_ok=True)


def ffn_output_matmuls(model_path: Path) -> list[str]:
    """MatMul nodes of the feed-forward output projections (inputs after GELU carry large outliers)."""
    import re

    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and re.search(r"layers?[./_]\d+/(output|mlp/down_proj|ffn/.*out)", n.name)
            and "attention" not in n.name]


def copy_companion_files(src_dir: Path, dst_dir: Path) -> set[str]:
    """Copy everything of the export folder `src_dir` but its graph and the graph's external weights (the
    tokenizer files, `eft_model.json`) into `dst_dir` (created), for a variant of the same model; returns the
    names of those external weight files."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    weights = external_data_files(src_dir / MODEL_FILE)
    for f in src_dir.iterdir():
        if f.is_file() and f.name != MODEL_FILE and f.name not in weights:
            shutil.copy2(f, dst_dir / f.name)
    return weights


def quantize_int8(src_dir: Path, dst_dir: Path, exclude: list[str] | None = None) -> ModelMetadata:
    """onnxruntime dynamic quantisation (int8 weights, activations quantised at run time) of an export folder.

    `exclude`: MatMul nodes kept in fp32 (see `ffn_output_matmuls`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    weights = copy_companion_files(src_dir, dst_dir)
    (dst_dir / (MODEL_FILE + ".data")).unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = logging.getLogger()
        was = root.disabled
        root.disabled = True  # quantize_dynamic logs a pre-processing hint on the root logger
        try:
            # Per-channel int8 weights on the MatMuls only (embeddings stay fp32): on MiniLM this keeps the
            # minimum cosine to fp32 near 0.99 where per-tensor weights drop it to about 0.94, at the same speed.
            quantize_dynamic(str(src_dir / MODEL_FILE), str(dst_dir / MODEL_FILE), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"], per_channel=True, nodes_to_exclude=exclude or [],
                             extra_options={"DefaultTensorType": 1}, use_external_data_format=bool(weights))
        finally:
            root.disabled = was
    meta = ModelMetadata.load(src_dir)
    meta.precision = "int8"
    meta.save(dst_dir)
    return meta


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)

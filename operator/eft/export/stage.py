"""The export stage: `DIR/train/model` -> `DIR/export/{onnx,onnx-int8,openvino-int8,tensorrt}/` with parity and
quality checks.

1. ONNX (opset from the spec, 17 by default) with dynamic batch and sequence axes, pooling and L2 normalisation
   in the graph, tokenizer and `eft_model.json` beside it.
2. Parity against the PyTorch model on held-out texts (the BEIR test split's queries and passages, each with its
   prefix, plus a few edge cases such as a text over the sequence limit): the minimum cosine must reach
   `spec.export.onnx.parityMinCosine` (0.999) or the stage fails.
3. int8 (onnxruntime dynamic quantisation) with its own parity figures and its nDCG@10 (and the other metrics)
   on the test split next to the fp32 model's (the fine-tuned PyTorch model's vectors, from the embedding cache
   that eval filled; the fp32 graph reproduces them to the parity threshold).
4. OpenVINO static int8 (`eft.export.openvino`, `spec.export.openvino`), calibrated on the corpus and the training
   questions, kept when its nDCG@10 is within `INT8_MAX_RELATIVE_LOSS` of fp32.
5. TensorRT where a GPU and TensorRT exist (`spec.export.tensorrt`); otherwise the summary says why not.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from pathlib import Path

import numpy as np

from eft.api.serving import EXPORT_SUMMARY_FILE, INT8_QUALITY_FILES
from eft.errors import EXIT_INVALID_INPUT, InvalidInput
from eft.export.artifact import MODEL_FILE, OnnxEncoder
from eft.export.onnx_export import ExportFailed, cosines, export_onnx, ffn_output_matmuls, quantize_int8
from eft.stages.contract import StageContext, write_json_atomic

log = logging.getLogger("eft.export")

PARITY_SAMPLE = 96
#: Largest relative nDCG@10 loss of int8 before the feed-forward outputs are kept in fp32.
INT8_MAX_RELATIVE_LOSS = 0.01
EDGE_TEXTS = [
    "a",
    "Hello, world!",
    "Ünïcödé, emoji 🚀 and CJK 漢字 in one line.",
    " ".join(["a very long passage that goes on"] * 120),  # over the sequence limit: truncated the same way
]


class ParityCheckFailed(ExportFailed):
    """The exported graph does not reproduce the PyTorch model; a retry would build the same graph."""

    exit_code = EXIT_INVALID_INPUT


def _parity_texts(beir_dir: Path, prefixes, seed: int) -> list[str]:
    """Held-out texts with their prefixes: a seeded sample of test queries and passages, plus edge cases."""
    from eft.retrieval.beir import load_beir, passage_text

    texts: list[str] = []
    if (beir_dir / "corpus.jsonl").exists():
        try:
            corpus, queries, _ = load_beir(beir_dir)
        except (OSError, ValueError, KeyError) as err:
            log.warning("cannot read the test split for parity texts (%s); using built-in texts", err)
            corpus, queries = {}, {}
        rng = random.Random(seed)
        q = list(queries.values())
        p = [passage_text(d) for d in corpus.values()]
        texts += [prefixes.query + t for t in rng.sample(q, min(len(q), PARITY_SAMPLE // 2))]
        texts += [prefixes.passage + t for t in rng.sample(p, min(len(p), PARITY_SAMPLE // 2))]
    texts += [prefixes.passage + t for t in EDGE_TEXTS]
    return texts


def check_parity(st_model, folder: Path, texts: list[str], encoder_cls=OnnxEncoder) -> dict:
    """Cosine between the PyTorch model's and the exported graph's embeddings of `texts` (the graph run by
    `encoder_cls`, an `ExportedEncoder`)."""
    ref = np.asarray(st_model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False), dtype=np.float32)
    enc = encoder_cls(folder)
    got = enc.encode(texts, batch_size=32, truncate="END")
    cos = cosines(ref, got)
    worst = int(np.argmin(cos))
    return {"texts": len(texts), "minCosine": round(float(cos.min()), 6), "meanCosine": round(float(cos.mean()), 6),
            "worstText": texts[worst][:80]}


def onnx_encode_fn(folder: Path, prefixes, max_query_length: int, cache, label: str, batch_size: int = 32,
                   encoder_cls=OnnxEncoder):
    """An `EncodeFn` over an exported graph run by `encoder_cls` (queries cut at `max_query_length`, passages at
    the graph's limit, as the PyTorch model is evaluated), through the embedding cache keyed by the folder's
    bytes and the runtime that runs them (`encoder_cls.runtime`, with its version)."""
    from eft.embedding_cache import EncodeSettings, files_identity

    enc = encoder_cls(folder)
    identity = files_identity(folder) if cache.enabled else "-"
    engine = f"in-graph|{encoder_cls.__qualname__}|{enc.runtime}"

    def encode(texts, kind):
        prefix = prefixes.query if kind == "query" else prefixes.passage
        limit = min(max_query_length, enc.meta.max_seq_length) if kind == "query" else enc.meta.max_seq_length
        settings = EncodeSettings(model=identity, pooling=engine, prefix=prefix, max_length=limit,
                                  truncation="END")
        return cache.encode(settings, texts, lambda missing: enc.encode(
            missing, prefix=prefix, batch_size=batch_size, truncate="END", max_length=limit), f"{label}/{kind}")

    return encode


def _ndcg_comparison(beir_dir: Path, encoders: dict, k_values: list[int]) -> dict:
    """BEIR metrics of the test split for each encoder (`{label: EncodeFn}`)."""
    from eft.retrieval.scoring import evaluate_encoder

    return {label: evaluate_encoder(encode, beir_dir, k_values) for label, encode in encoders.items()}


def _dir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def calibration_texts(prep_dir: Path, prefixes, seed: int, n: int) -> list[str]:
    """About `n` texts with their prefixes for static int8 calibration: a seeded sample of the corpus's passages
    (what the served model will index) and of the training questions (`prep/train_questions.jsonl`), three
    passages to one question; never a test query. Unreadable files give fewer texts, never an error."""
    from eft.records import read_jsonl
    from eft.retrieval.beir import load_beir, passage_text

    rng = random.Random(seed)
    passages: list[str] = []
    questions: list[str] = []
    try:
        corpus, _, _ = load_beir(prep_dir / "beir")
        passages = [passage_text(d) for d in corpus.values()]
    except (OSError, ValueError, KeyError) as err:
        log.warning("no corpus for int8 calibration (%s)", err)
    try:
        questions = [str(r["question"]) for r in read_jsonl(prep_dir / "train_questions.jsonl")
                     if isinstance(r, dict) and r.get("question")]
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.info("no training questions for int8 calibration (%s)", err)
    n_q = min(len(questions), n // 4)
    n_p = min(len(passages), n - n_q)
    return ([prefixes.passage + t for t in rng.sample(passages, n_p)]
            + [prefixes.query + t for t in rng.sample(questions, n_q)])


def _openvino_int8(ctx: StageContext, st_model, parity_texts: list[str], prefixes, has_test: bool, compare,
                   ndcg_delta) -> dict:
    """Build `openvino-int8/` (see `eft.export.openvino`) and measure it: parity against the PyTorch model and
    nDCG@10 against fp32 on the test split (`compare(label, folder, encoder_cls)` -> BEIR evaluations,
    `ndcg_delta(evals)` -> (figures, relative delta)). `spec.export.openvino.enabled`: `auto` builds where
    OpenVINO and NNCF import, `true` fails the stage where they do not. A build that loses more than
    INT8_MAX_RELATIVE_LOSS of nDCG@10 is deleted, and the summary says why."""
    from eft.export import openvino as ov_build

    mode, out = ctx.spec.export.openvino.enabled, ctx.out_dir
    folder = out / "openvino-int8"
    shutil.rmtree(folder, ignore_errors=True)
    if mode == "false":
        return {"built": False, "reason": "disabled (spec.export.openvino.enabled=false)"}
    available, reason = ov_build.availability()
    if not available:
        if mode == "true":
            raise ExportFailed(f"OpenVINO int8 {reason} (spec.export.openvino.enabled=true)")
        log.info("OpenVINO int8 %s", reason)
        return {"built": False, "reason": reason}
    # plus the built-in edge texts (one word, one over the sequence limit), so that the calibrated ranges cover
    # the shortest and the longest inputs even when the corpus is small (20 short passages alone: a minimum
    # cosine to fp32 of 0.86 on the text over the limit; with them 0.99)
    texts = (calibration_texts(ctx.input_dir("prep"), prefixes, ctx.spec.prep.seed, ov_build.CALIBRATION_TEXTS)
             + [prefixes.passage + t for t in EDGE_TEXTS])
    started = time.monotonic()
    try:
        with ctx.progress.task("export: openvino int8", total=1) as task:
            ov_build.quantize_static_int8(out / "onnx", folder, texts)
            q_parity = check_parity(st_model, folder, parity_texts, ov_build.OpenVinoEncoder)
            task.advance()
    except Exception as err:  # noqa: BLE001 - the variant is optional in `auto` mode, as TensorRT's engine is
        shutil.rmtree(folder, ignore_errors=True)
        if mode == "true":
            raise ExportFailed(f"OpenVINO int8 build failed: {err}") from err
        log.warning("OpenVINO int8 build failed: %s", err)
        return {"built": False, "reason": f"build failed: {str(err)[:300]}"}
    result = {"built": True, "path": f"openvino-int8/{ov_build.OV_MODEL_FILE}", "bytes": _dir_bytes(folder),
              "calibrationTexts": len(texts), "seconds": round(time.monotonic() - started, 1),
              "parity": {"minCosine": q_parity["minCosine"], "meanCosine": q_parity["meanCosine"]}}
    if not has_test:
        result["ndcg@10"] = None
        result["note"] = "no test split: nDCG delta not measured"
        return result
    with ctx.progress.task("export: openvino int8 nDCG on the test split", total=1) as task:
        evals = compare("openvino-int8", folder, ov_build.OpenVinoEncoder)
        task.advance()
    result["ndcg@10"], rel = ndcg_delta(evals)
    write_json_atomic(out / INT8_QUALITY_FILES["openvino-int8"], evals)
    if rel < -INT8_MAX_RELATIVE_LOSS:
        shutil.rmtree(folder, ignore_errors=True)
        del result["path"], result["bytes"]
        result.update(built=False, reason=f"nDCG@10 {-rel:.2%} below fp32, more than the "
                                          f"{INT8_MAX_RELATIVE_LOSS:.0%} allowed: not kept")
    return result


def run(ctx: StageContext) -> dict:
    from sentence_transformers import SentenceTransformer

    from eft.export import tensorrt as trt_build
    from eft.models import best_device, inference_dtype, load_sentence_transformer, prefixes_for, trained_dimensions

    spec = ctx.spec
    onnx_spec, trt_spec = spec.export.onnx, spec.export.tensorrt
    bm = spec.base_model
    model_dir = ctx.input_dir("train") / "model"
    beir_dir = ctx.input_dir("prep") / "beir"
    out = ctx.out_dir
    if not (model_dir / "modules.json").exists() and not (model_dir / "config.json").exists():
        raise InvalidInput(f"no trained model in {model_dir}; run the train stage first", "train/model")
    cache = ctx.embedding_cache  # its settings (environment) are checked now, not after minutes of export
    if not onnx_spec.enabled:
        return {"onnx": {"enabled": False}, "tensorrt": {"built": False, "reason": "ONNX export disabled"}}

    summary: dict = {"model": ctx.resource.metadata.name}
    started = time.monotonic()
    st_model = SentenceTransformer(str(model_dir), device="cpu", trust_remote_code=bm.trust_remote_code)
    st_model.max_seq_length = min(bm.max_passage_length, st_model.max_seq_length or bm.max_passage_length)
    prefixes = prefixes_for(bm, st_model)

    # 1. ONNX
    with ctx.progress.task("export: onnx", total=1) as task:
        meta = export_onnx(st_model, out / "onnx", opset=onnx_spec.opset, name=ctx.resource.metadata.name,
                           query_prefix=prefixes.query, passage_prefix=prefixes.passage,
                           max_seq_length=st_model.max_seq_length,
                           supported_dimensions=trained_dimensions(model_dir))
        task.advance()
    summary["onnx"] = {"path": f"onnx/{MODEL_FILE}", "opset": onnx_spec.opset, "dimension": meta.dimension,
                       "supportedDimensions": meta.supported_dimensions,
                       "maxSeqLength": meta.max_seq_length, "pooling": meta.pooling, "inputs": meta.input_names,
                       "bytes": _dir_bytes(out / "onnx"), "seconds": round(time.monotonic() - started, 1)}

    # 2. parity
    texts = _parity_texts(beir_dir, prefixes, spec.prep.seed)
    with ctx.progress.task("export: parity check", total=1) as task:
        parity = check_parity(st_model, out / "onnx", texts)
        task.advance()
    parity["threshold"] = onnx_spec.parity_min_cosine
    parity["passed"] = parity["minCosine"] >= onnx_spec.parity_min_cosine
    summary["onnx"]["parity"] = parity
    write_json_atomic(out / "parity.json", parity)
    if not parity["passed"]:
        raise ParityCheckFailed(
            f"ONNX parity check failed: minimum cosine {parity['minCosine']:.6f} < {onnx_spec.parity_min_cosine} "
            f"over {parity['texts']} held-out texts (worst: {parity['worstText']!r})")

    # 3. int8: all MatMuls first (fastest); if nDCG@10 drops more than INT8_MAX_RELATIVE_LOSS, keep the
    # feed-forward output projections in fp32 and measure again. The fp32 reference is the fine-tuned PyTorch
    # model with eval's settings, so its vectors come from the embedding cache eval filled (the exported fp32
    # graph matches it to the parity threshold above); without a cache it is encoded here once.
    has_test = (beir_dir / "qrels" / "test.tsv").exists()
    k_values = sorted(set(spec.evaluation.k_values) | {10})
    reference: dict = {}

    def compare(label: str, folder: Path, encoder_cls=OnnxEncoder) -> dict:
        """BEIR metrics of the int8 graph in `folder` and of the fp32 reference (measured once)."""
        if "encode" not in reference:
            from eft.embedding import ModelEncoder

            # eval's fine-tuned model as eval loaded it (device and inferencePrecision), so its vectors are in
            # the cache; on CPU in fp32 that is the model already loaded here
            device = best_device()
            same = device == "cpu" and inference_dtype(bm.inference_precision, device) == next(
                st_model.parameters()).dtype
            ref_model = st_model if same else load_sentence_transformer(bm, location=str(model_dir))
            reference["encode"] = ModelEncoder(ref_model, prefixes, bm.max_query_length, bm.max_passage_length,
                                               spec.evaluation.batch_size, cache, ctx.progress,
                                               "finetuned")
        variants = {"int8": onnx_encode_fn(folder, prefixes, bm.max_query_length, cache, label,
                                           encoder_cls=encoder_cls)}
        if "metrics" not in reference:
            variants["fp32"] = reference["encode"]
        evals = _ndcg_comparison(beir_dir, variants, k_values)
        reference.setdefault("metrics", evals.get("fp32"))
        evals["fp32"] = reference["metrics"]
        return evals

    def ndcg_delta(evals: dict) -> tuple[dict, float]:
        fp, q = evals["fp32"]["metrics"]["ndcg@10"], evals["int8"]["metrics"]["ndcg@10"]
        rel = (q - fp) / fp if fp else 0.0
        return {"fp32": round(fp, 5), "int8": round(q, 5), "delta": round(q - fp, 5),
                "relativeDelta": round(rel, 5) if fp else None}, rel

    if onnx_spec.int8:
        attempts = [("none", [])]
        ffn_out = ffn_output_matmuls(out / "onnx" / MODEL_FILE)
        if ffn_out:
            attempts.append(("ffn-output", ffn_out))
        for label, exclude in attempts:
            with ctx.progress.task(f"export: int8 (fp32 kept: {label})", total=1) as task:
                shutil.rmtree(out / "onnx-int8", ignore_errors=True)
                quantize_int8(out / "onnx", out / "onnx-int8", exclude=exclude)
                q_parity = check_parity(st_model, out / "onnx-int8", texts)
                task.advance()
            int8 = {"path": f"onnx-int8/{MODEL_FILE}", "bytes": _dir_bytes(out / "onnx-int8"),
                    "keptFp32": label, "parity": {"minCosine": q_parity["minCosine"],
                                                  "meanCosine": q_parity["meanCosine"]}}
            if not has_test:
                int8["ndcg@10"] = None
                int8["note"] = f"no test split at {beir_dir}: nDCG delta not measured"
                break
            with ctx.progress.task("export: int8 nDCG on the test split", total=1) as task:
                evals = compare(f"int8-{label}", out / "onnx-int8")
                task.advance()
            int8["ndcg@10"], rel = ndcg_delta(evals)
            int8["queries"] = evals["fp32"]["queries"]
            write_json_atomic(out / INT8_QUALITY_FILES["onnx-int8"], evals)
            if rel >= -INT8_MAX_RELATIVE_LOSS:
                break
            log.info("int8 with fp32 kept for %s loses %.2f%% nDCG@10", label, -rel * 100)
        summary["int8"] = int8

    # 4. OpenVINO static int8 (CPU serving), calibrated on the corpus and the training questions; kept only
    # when its nDCG@10 is within INT8_MAX_RELATIVE_LOSS of fp32 (or when there is no test split to say).
    summary["openvinoInt8"] = _openvino_int8(ctx, st_model, texts, prefixes, has_test, compare, ndcg_delta)

    # 5. TensorRT
    if trt_spec.enabled == "false":
        summary["tensorrt"] = {"built": False, "reason": "disabled (spec.export.tensorrt.enabled=false)"}
    else:
        available, reason = trt_build.availability()
        if not available:
            summary["tensorrt"] = {"built": False, "reason": reason + "; serving uses ONNX"}
            log.info("TensorRT %s", reason)
        else:
            try:
                with ctx.progress.task("export: tensorrt", total=1) as task:
                    summary["tensorrt"] = trt_build.build_engine(
                        out / "onnx", out / "tensorrt", precision=trt_spec.precision, min_batch=trt_spec.min_batch,
                        max_batch=trt_spec.max_batch, min_sequence=trt_spec.min_sequence,
                        max_sequence=trt_spec.max_sequence, calibration_texts=texts)
                    task.advance()
            except Exception as err:  # noqa: BLE001 - an engine is optional in `auto` mode
                if trt_spec.enabled == "true":
                    raise ExportFailed(f"TensorRT build failed: {err}") from err
                summary["tensorrt"] = {"built": False, "reason": f"build failed: {str(err)[:300]}; serving uses ONNX"}

    summary["backends"] = [b for b, ok in (("tensorrt", summary["tensorrt"].get("built")), ("onnx", True),
                                           ("onnx-int8", "int8" in summary),
                                           ("openvino-int8", summary["openvinoInt8"].get("built"))) if ok]
    summary["prefixes"] = {"query": prefixes.query, "passage": prefixes.passage}
    summary["embeddingCache"] = cache.stats()
    (out / EXPORT_SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary

"""GPU benchmark: the 1B-class path on a CUDA machine, stage by stage as Jobs there would run it, then serving.

    python bench/gpu.py --docs DIR --tokenizer DIR [--out DIR] [--steps 40] [--layers 18]

Prints its figures and writes them to OUT/gpu.json as it goes (a run cut short keeps what it measured).

1. The machine: GPU, torch and CUDA, bf16 support, the measured dense GEMM rate (torch.matmul, 8192^3) in bf16
   and in fp32 (TF32 off), whether FAISS sees a GPU, whether TensorRT is there as the export stage judges it
   (`eft.export.tensorrt.availability`), onnxruntime's providers.
2. A 1B-class encoder. No model hub can be reached from a benchmark machine, so the encoder is built from a
   config with random weights: BERT architecture (bidirectional attention, like llama-nemotron-embed-1b-v2),
   by default 18 layers, hidden 2048, intermediate 8192, 16 heads (~0.97B parameters), with the tokenizer of
   the folder given by `--tokenizer` (the quickstart's MiniLM), saved as a sentence-transformers folder with
   mean pooling and L2 normalisation. Its retrieval quality means nothing; its cost is a 1B model's.
3. The pipeline: bench/pipeline.py's stages and encoding hook, on the quickstart spec with that model as the
   base, the corpus in `--docs`, training cut to `--steps` steps, and no CPU int8 variant (a GPU model is
   served from TensorRT or torch): seconds per stage, passage encodings per model, and the train stage's
   summary (precision, batch, runtime).
4. Serving: `eft serve --backend torch` on the GPU (and `--backend tensorrt` when export built an engine),
   driven by bench/serve.py's HTTP client at concurrency 1 and 32 with ~16- and ~128-token texts
   (sentences/s, p50/p99 ms), and each run's share of the bf16 and fp32 GEMM rates (FLOPs per sentence from
   the model's config, as bench/roofline.py counts them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(HERE))

RESULTS: dict = {}


def record(key: str, value) -> None:
    """Keep `value` under `key` and rewrite OUT/gpu.json at once."""
    RESULTS[key] = value
    out = Path(RESULTS["_out"])
    (out / "gpu.json").write_text(json.dumps({k: v for k, v in RESULTS.items() if not k.startswith("_")},
                                             indent=2, default=str))


def gemm_rate(dtype_name: str, n: int = 8192, repeats: int = 10) -> float:
    """Dense FLOP/s of torch.matmul on two n x n matrices of `dtype_name` on the GPU (mean of `repeats` after 3
    warm-ups, timed with CUDA events). fp32 runs with TF32 off (what an fp32 model gets by default)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        torch.matmul(a, b)
    end.record()
    torch.cuda.synchronize()
    return 2.0 * n ** 3 * repeats / (start.elapsed_time(end) / 1000)


def machine() -> dict:
    import importlib.metadata as md

    import torch

    info: dict = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                  "cudaAvailable": torch.cuda.is_available()}
    for pkg in ("sentence-transformers", "transformers", "onnxruntime", "faiss-cpu", "faiss-gpu", "tensorrt"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, memoryGiB=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                    bf16=torch.cuda.is_bf16_supported(),
                    bf16GemmTflops=round(gemm_rate("bf16") / 1e12, 1), fp32GemmTflops=round(gemm_rate("fp32") / 1e12, 1))
    import faiss

    info["faissGpus"] = faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0
    from eft.export.tensorrt import availability

    info["tensorrt"] = availability()[1]
    import onnxruntime as ort

    info["onnxruntimeProviders"] = ort.get_available_providers()
    return info


def build_encoder(dest: Path, tokenizer_dir: Path, layers: int, hidden: int, intermediate: int, heads: int) -> dict:
    """A random-weight BERT encoder of the given size, saved as a sentence-transformers folder at `dest`."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=intermediate, max_position_embeddings=512)
    torch.manual_seed(0)
    raw = dest.parent / (dest.name + "-hf")
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        bert = BertModel(cfg)
    params = sum(p.numel() for p in bert.parameters())
    bert.save_pretrained(str(raw))
    tok.save_pretrained(str(raw))
    del bert
    word = models.Transformer(str(raw), max_seq_length=512)
    st = SentenceTransformer(modules=[word, models.Pooling(hidden, "mean"), models.Normalize()], device="cpu")
    st.save(str(dest))
    shutil.rmtree(raw, ignore_errors=True)
    return {"parameters": params, "layers": layers, "hidden": hidden, "intermediate": intermediate,
            "heads": heads, "weights": "random (speed only)"}


def run_pipeline(args, model_dir: Path, workdir: Path, stages: list[str]) -> dict:
    """The stages in order through bench/pipeline.py's hook; seconds, encodings and each stage's summary."""
    import pipeline

    spec_args = argparse.Namespace(corpus="quickstart", steps=args.steps, docs=args.docs,
                                   base_model=str(model_dir),
                                   set=["spec.export.onnx.int8=false", "spec.training.gpus=1", *args.set])
    spec = pipeline.write_spec(spec_args, workdir, False)
    result: dict = RESULTS.get("pipeline", {"seconds": {}, "encodings": {}, "summaries": {}})
    for name in stages:
        counts_file = workdir.parent / f"{workdir.name}.{name}.counts.json"
        try:
            result["seconds"][name] = round(pipeline.run_stage(ROOT, name, spec, workdir, counts_file), 1)
        except SystemExit as err:
            result["seconds"][name] = f"failed: {err}"
            record("pipeline", result)
            print(f"  {name:7s} FAILED: {err}", flush=True)
            return result
        if counts_file.exists():
            result["encodings"][name] = json.loads(counts_file.read_text())
        done = workdir / name / "_SUCCESS.json"
        if done.exists():
            result["summaries"][name] = json.loads(done.read_text())
        print(f"  {name:7s} {result['seconds'][name]:8.1f} s", flush=True)
        record("pipeline", result)
    return result


def serve_runs(label: str, model: Path, backend: str, flops: dict, rates: dict, seconds: float) -> dict:
    """Our server with `backend` on `model`, at c=1 and 32 for short and medium texts."""
    import serve
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(next(model.rglob("tokenizer.json"))))
    out: dict = {}
    try:
        srv = serve.start_ours(label, model, backend, None)
    except RuntimeError as err:
        return {"error": str(err)}
    try:
        for length, tokens in serve.LENGTHS.items():
            texts = serve.make_texts(tok, tokens, 512)
            bodies = [json.dumps({"model": "bench", "input": t}).encode() for t in texts]
            for c in (1, 32):
                r = serve.drive(srv.port, srv.path, bodies, c, seconds)
                r["bf16Share"] = r["sent_s"] * flops[length] / rates["bf16"] if rates.get("bf16") else None
                r["fp32Share"] = r["sent_s"] * flops[length] / rates["fp32"] if rates.get("fp32") else None
                out[f"{length} c={c}"] = r
                print(f"  {label:14s} {length:6s} c={c:<3d} {r['sent_s']:8.1f} sent/s  p50 {r['p50']:7.1f} ms  "
                      f"p99 {r['p99']:7.1f} ms  errors {r['errors']}", flush=True)
    finally:
        srv.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=Path, required=True, help="the quickstart's PostgreSQL pages")
    ap.add_argument("--tokenizer", type=Path, required=True, help="a folder with tokenizer.json (MiniLM's)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/eft-gpu")))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/eft-gpu-work"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--layers", type=int, default=18)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=6.0, help="time limit of each serving run")
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="spec override (repeatable)")
    ap.add_argument("--skip-export", action="store_true", help="stop after serving the trained model")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    RESULTS["_out"] = str(args.out)
    started = time.perf_counter()

    info = machine()
    record("machine", info)
    print(json.dumps(info, indent=1), flush=True)

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    model_dir = args.workdir / "base-1b"
    t = time.perf_counter()
    enc = build_encoder(model_dir, args.tokenizer, args.layers, args.hidden, args.intermediate, args.heads)
    enc["buildSeconds"] = round(time.perf_counter() - t, 1)
    record("encoder", enc)
    print(f"encoder: {enc['parameters'] / 1e9:.2f}B parameters, built in {enc['buildSeconds']} s", flush=True)

    from roofline import flops_per_sentence

    import serve

    dims = {"hidden": args.hidden, "intermediate": args.intermediate, "layers": args.layers}
    flops = {name: flops_per_sentence(dims, tokens) for name, tokens in serve.LENGTHS.items()}
    rates = {"bf16": info.get("bf16GemmTflops", 0) * 1e12, "fp32": info.get("fp32GemmTflops", 0) * 1e12}
    record("flopsPerSentence", flops)

    work = args.workdir / "run"
    print("pipeline (sdg, prep, train, eval):", flush=True)
    run_pipeline(args, model_dir, work, ["sdg", "prep", "train", "eval"])
    # the fine-tuned model, or the base model when training did not finish (the same cost to serve)
    served = work / "train" / "model" if (work / "train" / "model" / "modules.json").is_file() else model_dir
    print(f"serving {served} (torch backend on the GPU):", flush=True)
    record("servedModel", str(served))
    record("serveTorch", serve_runs("torch", served, "torch", flops, rates, args.seconds))
    if args.skip_export:
        record("wallSeconds", round(time.perf_counter() - started, 1))
        return
    print("pipeline (export):", flush=True)
    run_pipeline(args, model_dir, work, ["export"])
    if (work / "export" / "tensorrt").is_dir():
        print("serving (TensorRT engine):", flush=True)
        record("serveTensorRT", serve_runs("tensorrt", work / "export", "tensorrt", flops, rates, args.seconds))
    record("wallSeconds", round(time.perf_counter() - started, 1))
    print(f"done in {time.perf_counter() - started:.0f} s; figures in {args.out / 'gpu.json'}", flush=True)


if __name__ == "__main__":
    main()

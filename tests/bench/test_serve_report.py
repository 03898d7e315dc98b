"""bench/serve.py's verdicts: a target is called out of reach only when our graph alone, without a server,
already falls short of it; and a peer that did not run never enters a ratio."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import roofline  # noqa: E402
import serve  # noqa: E402

DIMS = {"hidden": 384, "intermediate": 1536, "layers": 6}


def _roof(fp32_flops=300e9, int8_ops=1200e9):
    roof = {"dims": DIMS, "threads": 2, "fp32": {"flops": fp32_flops}, "int8": {"ops": int8_ops, "flags": ["x"]},
            "measurements": 1,
            "lengths": {n: {"tokens": t, "flops": roofline.flops_per_sentence(DIMS, t)}
                        for n, t in (("short", 16), ("medium", 128))}}
    roofline._limits(roof)
    return roof


def _run(sent_s, p50=10.0):
    return {"sent_s": sent_s, "p50": p50, "p99": p50 * 2, "n": 100, "errors": 0}


def _results(fp32_alone_medium, int8_alone_medium, fp32_alone_short, int8_alone_short):
    return {
        serve.OURS_FP32: {"medium/c32": _run(50), "short/c32": _run(360), "medium/c1": _run(40, 24.0),
                          "short/c1": _run(130, 7.0)},
        serve.OURS_INT8: {"medium/c32": _run(90), "short/c32": _run(540)},
        serve.ALONE[serve.OURS_FP32]: {"medium/c32": _run(fp32_alone_medium), "short/c32": _run(fp32_alone_short)},
        serve.ALONE[serve.OURS_INT8]: {"medium/c32": _run(int8_alone_medium), "short/c32": _run(int8_alone_short)},
        serve.IN_PROCESS: {"medium/c32": _run(57), "short/c32": _run(390), "medium/c1": _run(37, 27.0),
                           "short/c1": _run(80, 12.6)},
    }


def _targets(capsys, results, peers=(serve.IN_PROCESS,)):
    serve.print_summary(results, _roof(), ["short", "medium"], [1, 32], {"fp32": 0.73, "int8": 0.735,
                                                                         "source": "x"}, list(peers))
    out = capsys.readouterr().out
    return {key: line for line in out.split("targets:")[1].splitlines() if line.strip()
            for key in ("fp32 GEMM roofline", "int8 / our fp32", "short c=32", "medium c=32 fp32 /")
            if key in line}


def test_graph_alone_below_a_target_is_called_out_of_reach(capsys):
    # medium limit at 300 GFLOP/s: 104.5 sentences/s; the fp32 graph alone at 60 is 57% of it
    lines = _targets(capsys, _results(60, 120, 500, 1000))
    assert "NOT met" in lines["fp32 GEMM roofline"]
    assert "graph alone (no server) reaches 57.4%" in lines["fp32 GEMM roofline"]
    assert "out of reach with onnxruntime" in lines["fp32 GEMM roofline"]
    # 120 / 60 = 2.00x < 2.5x
    assert "graphs alone (no server): 2.00x -> out of reach" in lines["int8 / our fp32"]
    # short: fp32 alone 500 / 390 = 1.28x (out of reach), int8 alone 1000 / 390 = 2.56x (reachable)
    short = lines["short c=32"]
    assert "fp32 graph alone (no server) is 1.28x that peer -> out of reach" in short
    assert "int8 graph alone (no server) is 2.56x that peer" in short
    assert "2.56x that peer -> out of reach" not in short


def test_graph_alone_above_a_target_leaves_the_gap_to_the_server(capsys):
    lines = _targets(capsys, _results(95, 300, 900, 1800))
    assert "reaches 90.8%" in lines["fp32 GEMM roofline"]
    assert "out of reach" not in lines["fp32 GEMM roofline"]
    assert "graphs alone (no server): 3.16x" in lines["int8 / our fp32"]
    assert "3.16x -> out of reach" not in lines["int8 / our fp32"]
    assert "out of reach with onnxruntime" not in lines["short c=32"]


def test_no_peer_no_ratio(capsys):
    lines = _targets(capsys, _results(60, 120, 500, 1000), peers=())
    assert "NO PEER RAN: no ratio printed" in lines["short c=32"]
    assert "that peer" not in lines["short c=32"]

"""bench/serve.py's verdicts: a target is called out of reach with onnxruntime's kernels only when our graph
alone, without a server, already falls short of it, and out of reach for any faster GEMM only when Amdahl's
bound from the graph's profile falls short of it; a peer that did not run never enters a ratio; and the profile
of a real exported graph splits its call into GEMMs and the rest."""

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
    # each target's line, by a name: the words that line alone has
    words = {"fp32 GEMM roofline": ("fp32 GEMM roofline",), "int8 / our fp32": ("/ our fp32",),
             "short c=32": ("short c=32",), "medium c=32 fp32 /": ("medium c=32 fp32", "strongest peer")}
    return {key: line for line in out.split("targets:")[1].splitlines() if line.strip()
            for key, need in words.items() if all(w in line for w in need)}


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
    # served: fp32 360 / 390 = 0.92x, int8 540 / 390 = 1.38x, each with its own verdict
    assert "= 0.92x [>= 2.0x]: NOT met; int8 (ours int8 (onnx)) 1.38x [>= 2.0x]: NOT met" in short


def test_int8_meeting_the_peer_target_is_called_met(capsys):
    results = _results(60, 120, 500, 1000)
    results[serve.OURS_INT8]["short/c32"] = _run(800)  # 800 / 390 = 2.05x
    lines = _targets(capsys, results)
    assert "int8 (ours int8 (onnx)) 2.05x [>= 2.0x]: met" in lines["short c=32"]
    assert "[>= 2.0x]" not in lines["medium c=32 fp32 /"]  # no peer target on medium texts


def test_ndcg_verdict_is_on_the_loss_only(capsys):
    for fp32, int8, want in ((0.73, 0.75, "+2.74% [no more than 1% below fp32]: met"),
                             (0.73, 0.7235, "-0.89% [no more than 1% below fp32]: met"),
                             (0.73, 0.72, "-1.37% [no more than 1% below fp32]: NOT met")):
        serve.print_summary(_results(60, 120, 500, 1000), _roof(), ["short", "medium"], [1, 32],
                            {"fp32": fp32, "int8": int8, "source": "x"}, [serve.IN_PROCESS])
        assert want in capsys.readouterr().out


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


def _profile(other_ms, call_ms, sentences=8, length=128):
    flops = sentences * roofline.flops_per_sentence(DIMS, length)
    return {"split": {"gemm_ms": call_ms - other_ms, "other_ms": other_ms, "call_ms": call_ms},
            "sentences": sentences, "padded_length": length, "flops": flops, "by_op_ms": {}}


def test_split_operator_time_counts_matrix_products_and_their_quantisation_as_gemm():
    split = roofline.split_operator_time({"MatMul": 60_000, "DynamicQuantizeMatMul": 10_000,
                                          "DynamicQuantizeLinear": 1_000, "BiasGelu": 7_000, "Softmax": 2_000})
    assert split == {"gemm_ms": 71.0, "other_ms": 9.0, "call_ms": 80.0}


def test_split_operator_time_counts_openvinos_fused_products_as_gemm():
    """OpenVINO's node types after fusion: linear layers (fp32 and int8) and fused attention blocks are GEMM
    time; layer norms (MVN), residual adds and transposes are not."""
    split = roofline.split_operator_time({"FullyConnected": 20_000, "FullyConnectedQuantizedLegacy": 1_000,
                                          "Subgraph": 7_000, "MVN": 800, "Add": 1_000, "Transpose": 200})
    assert split == {"gemm_ms": 28.0, "other_ms": 2.0, "call_ms": 30.0}


def test_openvinos_running_means_give_the_runs_own_mean():
    """OpenVINO's CPU counters hold each node's mean over every call so far: a slow first call (57 ms) followed
    by 5 calls of 61 us reads 9.54 ms; the runs' own mean is 61 us, not that."""
    warm = {"fc": ("FullyConnected", 56_917.0), "relu": ("Eltwise", 100.0), "in": ("Parameter", 0.0)}
    end = {"fc": ("FullyConnected", (56_917.0 + 5 * 61.0) / 6), "relu": ("Eltwise", (100.0 + 5 * 10.0) / 6),
           "in": ("Parameter", 0.0)}
    us = serve.mean_of_runs(warm, end, warmup=1, runs=5)
    assert us.keys() == {"FullyConnected", "Eltwise"}
    assert abs(us["FullyConnected"] - 61.0) < 1e-6 and abs(us["Eltwise"] - 10.0) < 1e-6
    # two nodes of one type add up; without a warm-up the end snapshot is the runs' mean
    end["fc2"] = ("FullyConnected", 39.0)
    assert abs(serve.mean_of_runs({}, end, warmup=0, runs=6)["FullyConnected"] - (end["fc"][1] + 39.0)) < 1e-6


def test_gemm_bound_is_amdahls_law():
    # 8 sentences of 128 tokens: 8 x 2.869 GFLOP = 22.95 GFLOP; at 300 GFLOP/s the GEMMs take 76.5 ms, plus
    # 30 ms of other operators: 8 / 0.1065 s = 75.1 sentences/s
    prof = _profile(other_ms=30.0, call_ms=110.0)
    assert abs(roofline.gemm_bound(prof["split"], prof["flops"], 300e9, 8) - 8 / (prof["flops"] / 300e9 + 0.030)) < 1e-9
    assert abs(roofline.gemm_bound(prof["split"], prof["flops"], 300e9, 8) - 75.1) < 0.1
    # with no other operators the bound is the roofline itself
    free = _profile(other_ms=0.0, call_ms=80.0)
    limit = 300e9 / roofline.flops_per_sentence(DIMS, 128)
    assert abs(roofline.gemm_bound(free["split"], free["flops"], 300e9, 8) - limit) < 1e-6
    # the same call on one of two lanes: its GEMMs get half the rate (153 ms), two calls run at once
    two_lanes = roofline.gemm_bound(prof["split"], prof["flops"], 300e9, 8, lanes=2)
    assert abs(two_lanes - 2 * 8 / (2 * 0.0765 + 0.030)) < 0.1
    assert abs(roofline.gemm_bound(free["split"], free["flops"], 300e9, 8, lanes=2) - limit) < 1e-6


def test_amdahls_bound_below_a_target_is_called_out_of_reach_for_any_gemm(capsys):
    results = _results(90, 180, 500, 1000)  # the graphs alone would not call the fp32 or int8 target out of reach
    # fp32: 76.5 ms of GEMMs at the roofline + 30 ms of other operators -> 71.8% at most (< 85%)
    # int8: 22.95 GOP at 1200 GOP/s = 19.1 ms + 60 ms -> 101.1 sentences/s = 2.02x our fp32's 50 (< 2.5x)
    results[serve.PROFILE] = {serve.OURS_FP32: _profile(30.0, 110.0), serve.OURS_INT8: _profile(60.0, 90.0)}
    lines = _targets(capsys, results)
    fp32 = lines["fp32 GEMM roofline"]
    assert "would reach at most 72%" in fp32 and "out of reach with these non-GEMM kernels" in fp32
    int8 = lines["int8 / our fp32"]
    assert "would give at most 101 sent/s = 2.02x" in int8 and "out of reach with these non-GEMM kernels" in int8


def test_amdahls_bound_above_a_target_claims_nothing(capsys):
    results = _results(90, 180, 500, 1000)
    # fp32 with 5 ms of other operators: 76.5 / 81.5 = 93.9% at most; int8 with 10 ms: 8 / 29.1 ms = 275 (5.5x)
    results[serve.PROFILE] = {serve.OURS_FP32: _profile(5.0, 90.0), serve.OURS_INT8: _profile(10.0, 40.0)}
    lines = _targets(capsys, results)
    assert "would reach at most 94%" in lines["fp32 GEMM roofline"]
    assert "non-GEMM" not in lines["fp32 GEMM roofline"]
    assert "= 5.49x" in lines["int8 / our fp32"] and "non-GEMM" not in lines["int8 / our fp32"]


def test_profile_graph_splits_a_real_call_of_the_server():
    """onnxruntime's profiler and OpenVINO's node counters on an exported MiniLM (fp32 and int8 of each): the call is the server's first call for 32 waiting texts of
    ~128 tokens (its token budget of 512 allows 4; two threads make two lanes), and its time splits into GEMMs
    and the rest."""
    from tokenizers import Tokenizer

    from model_workspace import exported_workdir

    export = exported_workdir() / "export"
    texts = serve.make_texts(Tokenizer.from_file(str(export / "onnx" / "tokenizer.json")), 128, 32)
    for variant, engine, gemm_op, other_op in (("onnx", "onnxruntime", "MatMul", "Softmax"),
                                               ("onnx-int8", "onnxruntime", "DynamicQuantizeMatMul", "Softmax"),
                                               ("onnx", "openvino", "FullyConnected", "MVN"),
                                               ("openvino-int8", "openvino", "FullyConnected", "MVN")):
        prof = serve.profile_graph(export / variant, texts, 32, 2, DIMS, runs=3, warmup=1, engine=engine)
        assert prof["sentences"] == 4 and prof["lanes"] == 2 and 128 <= prof["padded_length"] <= 136
        assert prof["flops"] == 4 * roofline.flops_per_sentence(DIMS, prof["padded_length"])
        assert prof["engine"] == engine
        split = prof["split"]
        assert split["gemm_ms"] > 0 and split["other_ms"] > 0
        assert abs(split["gemm_ms"] + split["other_ms"] - split["call_ms"]) < 1e-9
        assert abs(sum(prof["by_op_ms"].values()) - split["call_ms"]) < 1e-6
        assert gemm_op in prof["by_op_ms"] and other_op in prof["by_op_ms"], (variant, engine, prof["by_op_ms"])


def test_the_graph_alone_makes_the_servers_calls_over_its_lanes():
    """32 waiting short texts: one call at one lane, two calls of 16 at two lanes; `engine_alone` runs them on
    the backend's lanes and reports them."""
    from tokenizers import Tokenizer

    from eft.export.artifact import TOKENIZER_FILE, TextTokenizer
    from model_workspace import exported_workdir

    folder = exported_workdir() / "export" / "onnx-int8"
    tok = TextTokenizer(folder / TOKENIZER_FILE, 256)
    texts = serve.make_texts(Tokenizer.from_file(str(folder / TOKENIZER_FILE)), 16, 64)
    one = serve.server_calls(tok, texts, 32, 1024)
    two = serve.server_calls(tok, texts, 32, 1024, lanes=2)
    assert [[len(c.input_ids) for c in batch] for batch in one] == [[32], [32]]
    assert [[len(c.input_ids) for c in batch] for batch in two] == [[16, 16], [16, 16]]
    # the dynamic int8 graph's server runs one text per call (OnnxEncoder.rows_per_call), and so does this
    single = serve.server_calls(tok, texts, 32, 1024, lanes=2, rows_per_call=1)
    assert [[len(c.input_ids) for c in batch] for batch in single] == [[1] * 32, [1] * 32]
    r = serve.engine_alone(folder.parent, "onnx-int8", texts, 32, 0.6, threads=2)
    assert r["lanes"] == 2 and r["sent_s"] > 0 and r["n"] >= 16 and r["p50"] > 0


def test_our_fastest_server_of_each_precision_is_the_one_judged(capsys):
    """With OpenVINO's servers beside onnxruntime's, each target is judged on our fastest server of that
    precision, named on its line; the other pairs' ratios are printed too, and the Amdahl bound of each line is
    that of the server it judges: the onnxruntime graphs' profiles say nothing about OpenVINO's."""
    results = _results(90, 180, 500, 1000)
    results[serve.OURS_OV32] = {"medium/c32": _run(60), "short/c32": _run(350)}
    results[serve.OURS_OV8] = {"medium/c32": _run(160), "short/c32": _run(900)}
    results[serve.ALONE[serve.OURS_OV32]] = {"medium/c32": _run(70)}
    results[serve.ALONE[serve.OURS_OV8]] = {"medium/c32": _run(200)}
    results[serve.PROFILE] = {serve.OURS_FP32: _profile(30.0, 110.0), serve.OURS_INT8: _profile(60.0, 90.0)}
    lines = _targets(capsys, results)
    fp32 = lines["fp32 GEMM roofline"]  # 60 / 104.5 sentences/s at the roofline
    assert "fp32 (ours fp32 (openvino)) at 57.4%" in fp32 and "reaches 66.9%" in fp32
    assert "out of reach with OpenVINO's kernels" in fp32 and "non-GEMM" not in fp32
    int8 = lines["int8 / our fp32"]  # 160 / 60; onnxruntime: 90 / 50
    assert "int8 (ours int8 (openvino)) / our fp32 (ours fp32 (openvino)) = 2.67x [>= 2.5x]: met" in int8
    assert "ours int8 (onnx) / ours fp32 (onnx) 1.80x" in int8
    assert "the same graphs alone (no server): 2.86x" in int8 and "non-GEMM" not in int8
    assert "as profiled" not in fp32 and "as profiled" not in int8  # no OpenVINO profile in these results


def test_the_amdahl_bound_is_the_judged_servers_own(capsys):
    """OpenVINO's servers are the fastest: their own profiles give the bounds (the onnxruntime ones, which would
    call both targets out of reach, are not used)."""
    results = _results(90, 180, 500, 1000)
    results[serve.OURS_OV32] = {"medium/c32": _run(60), "short/c32": _run(350)}
    results[serve.OURS_OV8] = {"medium/c32": _run(140), "short/c32": _run(900)}
    results[serve.PROFILE] = {serve.OURS_FP32: _profile(30.0, 110.0), serve.OURS_INT8: _profile(60.0, 90.0),
                              serve.OURS_OV32: _profile(5.0, 90.0), serve.OURS_OV8: _profile(10.0, 40.0)}
    lines = _targets(capsys, results)
    fp32, int8 = lines["fp32 GEMM roofline"], lines["int8 / our fp32"]
    assert "(5.0 of 90.0 ms a call)" in fp32 and "would reach at most 94%" in fp32 and "non-GEMM" not in fp32
    # 8 / (22.95 GOP / 1200 GOP/s + 10 ms) = 275 sentences/s = 4.58x our OpenVINO fp32's 60
    assert "(10.0 of 40.0 ms a call)" in int8 and "at most 275 sent/s = 4.58x" in int8 and "non-GEMM" not in int8
    # an OpenVINO int8 graph whose other operators alone cap it below 2.5x is called out of reach
    results[serve.PROFILE][serve.OURS_OV8] = _profile(60.0, 90.0)
    int8 = _targets(capsys, results)["int8 / our fp32"]
    assert "at most 101 sent/s = 1.69x" in int8 and "out of reach with these non-GEMM kernels" in int8
    assert "int8 (ours int8 (openvino)) 2.31x [>= 2.0x]: met" in lines["short c=32"]  # 900 / 390


def test_openvino_int8_ndcg_has_its_own_verdict(capsys):
    serve.print_summary(_results(60, 120, 500, 1000), _roof(), ["short", "medium"], [1, 32],
                        {"fp32": 0.73, "int8": 0.72, "openvino-int8": 0.735, "source": "x"}, [serve.IN_PROCESS])
    out = capsys.readouterr().out
    assert "nDCG@10 int8 0.7200 vs fp32 0.7300: -1.37% [no more than 1% below fp32]: NOT met" in out
    assert "nDCG@10 openvino-int8 0.7350 vs fp32 0.7300: +0.68% [no more than 1% below fp32]: met" in out


def test_a_round_keeps_the_median_run_and_every_rounds_figure():
    results: dict = {}
    for sent_s, p50 in ((100, 5.0), (80, 7.0)):
        shown = serve.add_round(results, "x", "medium/c32", _run(sent_s, p50))
    assert shown["sent_s"] == 80 and shown["p50"] == 7.0 and shown["rounds"] == [100, 80]  # lower middle of two
    serve.add_round(results, "x", "medium/c32", _run(120, 4.0))
    assert results["x"]["medium/c32"]["sent_s"] == 100 and results["x"]["medium/c32"]["p50"] == 5.0
    assert results["x"]["medium/c32"]["rounds"] == [100, 80, 120]


def test_paired_ratios_need_the_same_rounds_on_both_sides():
    assert serve.paired_ratio([150, 250, 200], [60, 100, 90])[1] == [2.5, 2.5, 200 / 90]
    assert serve.paired_ratio([150, 250, 200], [60, 100, 90])[0] == 2.5
    assert serve.paired_ratio([150, 250], [60, 100, 90]) is None  # rounds that do not pair
    assert serve.paired_ratio([150], [60]) is None  # one round: the ratio of the two runs, as before


def _rounds(results: dict, label: str, key: str, figures) -> None:
    for sent_s in figures:
        serve.add_round(results, label, key, _run(sent_s))


def test_targets_that_compare_two_engines_are_judged_round_by_round(capsys):
    """A machine that drifts between rounds: our int8 server is 2.6x our fp32 in the two rounds the machine was
    fast or slow, but the medians (90 of fp32 from one round, 200 of int8 from another) give 2.22x. The verdict
    is on the round-by-round ratios, and both figures are printed."""
    results = _results(60, 120, 500, 1000)
    del results[serve.OURS_FP32]["medium/c32"], results[serve.OURS_INT8]["medium/c32"]
    _rounds(results, serve.OURS_FP32, "medium/c32", (60, 100, 90))
    _rounds(results, serve.OURS_INT8, "medium/c32", (156, 260, 200))
    # short texts: in-process ST and our int8 server in the same three rounds
    del results[serve.IN_PROCESS]["short/c32"], results[serve.OURS_INT8]["short/c32"]
    _rounds(results, serve.IN_PROCESS, "short/c32", (400, 300, 500))
    _rounds(results, serve.OURS_INT8, "short/c32", (820, 700, 900))
    lines = _targets(capsys, results)
    int8 = lines["int8 / our fp32"]
    assert "= 2.22x (medians); round by round, our fastest of each: 2.60x, 2.60x, 2.22x, median 2.60x" in int8
    assert "[>= 2.5x]: met" in int8
    short = lines["short c=32"]  # medians 820 / 400 = 2.05x; round by round 2.05, 2.33, 1.80
    assert "int8 (ours int8 (onnx)) 2.05x (medians); round by round 2.05x, 2.33x, 1.80x, median 2.05x" in short
    # fp32 ran one round (the unpaired figures of `_results`): its ratio is the medians' alone
    assert "fp32 (ours fp32 (onnx)) / strongest peer (in-process sentence-transformers) = 0.90x [>= 2.0x]" in short


def test_graphs_alone_are_compared_round_by_round_and_with_their_tokenising(capsys):
    """The graphs alone ran in the same three rounds: their int8 / fp32 ratio is the median of the rounds'
    (2.60x, where the medians 225 / 90 would give 2.50x). Tokenising in the lanes as well, it is 2.40x: printed
    beside it, but no verdict, since it bounds nothing (a server tokenises elsewhere); the fp32 line gives the
    share of both graphs, 86.1% and 76.5%."""
    results = _results(60, 120, 500, 1000)
    for label in (serve.ALONE[serve.OURS_FP32], serve.ALONE[serve.OURS_INT8]):
        del results[label]["medium/c32"]
    _rounds(results, serve.ALONE[serve.OURS_FP32], "medium/c32", (95, 85, 90))  # 86.1% of 104.5 at the median
    _rounds(results, serve.ALONE[serve.OURS_INT8], "medium/c32", (247, 221, 225))
    _rounds(results, serve.ALONE_TOKENIZED[serve.OURS_FP32], "medium/c32", (84, 78, 80))
    _rounds(results, serve.ALONE_TOKENIZED[serve.OURS_INT8], "medium/c32", (201.6, 187.2, 192))
    lines = _targets(capsys, results)
    int8 = lines["int8 / our fp32"]
    assert "the same graphs alone (no server): round by round 2.60x, 2.60x, 2.50x, median 2.60x;" in int8
    assert "tokenising their texts too: round by round 2.40x, 2.40x, 2.40x, median 2.40x" in int8
    assert "out of reach" not in int8
    fp32 = lines["fp32 GEMM roofline"]
    assert "graph alone (no server) reaches 86.1%; tokenising its texts too 76.5%" in fp32
    assert "out of reach" not in fp32
    # rounds that do not pair give the ratio of the medians: 221 / 90, below the target alone
    _rounds(results, serve.ALONE[serve.OURS_INT8], "medium/c32", (150, 150))
    int8 = _targets(capsys, results)["int8 / our fp32"]
    assert "the same graphs alone (no server): 2.46x -> out of reach with these kernels on this CPU, whatever" in int8


def test_the_graph_alone_can_tokenise_in_its_lanes():
    """`server_groups` names the texts of the server's calls: tokenised and padded they are `server_calls`' own
    batches, and `engine_alone(tokenize=True)` runs them so."""
    import numpy as np
    from tokenizers import Tokenizer

    from eft.export.artifact import TOKENIZER_FILE, TextTokenizer
    from model_workspace import exported_workdir

    folder = exported_workdir() / "export" / "onnx"
    tok = TextTokenizer(folder / TOKENIZER_FILE, 256)
    texts = serve.make_texts(Tokenizer.from_file(str(folder / TOKENIZER_FILE)), 40, 64)
    groups = serve.server_groups(tok.encode(texts), 32, 512, lanes=2)
    calls = serve.server_calls(tok, texts, 32, 512, lanes=2)
    assert sorted(i for batch in groups for call in batch for i in call) == list(range(64))
    for batch_groups, batch_calls in zip(groups, calls, strict=True):
        for idx, call in zip(batch_groups, batch_calls, strict=True):
            again = tok.pad(tok.encode([texts[i] for i in idx]))
            assert np.array_equal(again.input_ids, call.input_ids)
    r = serve.engine_alone(folder.parent, "onnx", texts, 32, 0.6, threads=2, tokenize=True)
    assert r["tokenize"] is True and r["lanes"] == 2 and r["sent_s"] > 0 and r["n"] >= 4

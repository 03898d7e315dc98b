"""onnxruntime sessions on the CPU: `ort_session` leaves out the graph fusions in `CPU_DISABLED_OPTIMIZERS`
(SkipLayerNormalization, whose CPU kernel is slower than the nodes it replaces) and computes the same outputs;
`cpu_threads` counts the CPUs the process may use."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from eft.export.artifact import CPU_DISABLED_OPTIMIZERS, ort_session, ort_session_options

HIDDEN = 16


def _residual_layer_norm(path) -> None:
    """y = LayerNorm(x @ W + b + x): the residual block after a BERT layer's output projection."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32), "b"),
             numpy_helper.from_array(np.ones(HIDDEN, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(HIDDEN, np.float32), "beta")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("Add", ["hb", "x"], ["r"]),
             helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)]
    graph = helper.make_graph(nodes, "residual",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
                              inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _optimised(tmp_path, name, make_session) -> tuple[set[str], np.ndarray]:
    options = ort_session_options(1)
    options.optimized_model_filepath = str(tmp_path / f"{name}.onnx")
    sess = make_session(options)
    x = np.random.default_rng(1).standard_normal((2, 3, HIDDEN)).astype(np.float32)
    out = sess.run(None, {"x": x})[0]
    return {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}, out


def test_cpu_session_keeps_add_and_layer_norm_apart(tmp_path):
    model = tmp_path / "model.onnx"
    _residual_layer_norm(model)
    assert "SkipLayerNormFusion" in CPU_DISABLED_OPTIMIZERS

    fused_ops, fused = _optimised(tmp_path, "fused", lambda so: ort.InferenceSession(
        str(model), so, providers=["CPUExecutionProvider"]))
    ours_ops, ours = _optimised(tmp_path, "ours", lambda so: ort_session(model, prefer_gpu=False, options=so))

    # onnxruntime's own default fuses the block; our CPU session does not, and the numbers agree.
    assert "SkipLayerNormalization" in fused_ops
    assert "SkipLayerNormalization" not in ours_ops
    assert "LayerNormalization" in ours_ops
    np.testing.assert_allclose(ours, fused, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and two CPUs")
def test_cpu_threads_follow_the_processs_cpu_affinity(tmp_path):
    code = ("import os; from eft.export.artifact import cpu_threads; from eft.serve.backends import cpu_lanes; "
            "before = cpu_threads(); os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            f"print(before, cpu_threads(), cpu_lanes({str(tmp_path)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) >= 2 and out[1:] == ["1", "1"]

"""Graphs over protobuf's 2 GiB limit (a 1B model): saved as one graph file plus one external-data file.

The limit is lowered so a small graph takes the same path as a 1B model's: the exporter's one-file-per-tensor
output is gathered into `model.onnx.data`, the scattered files go, and onnxruntime computes the same result;
int8 quantisation of such a graph writes its own data file and copies none of the fp32 weights.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from eft.export import onnx_export
from eft.export.artifact import MODEL_FILE, ModelMetadata


def _graph(rng) -> onnx.ModelProto:
    w1 = numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((128, 4)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "width"])],
        initializer=[w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_a_scattered_large_graph_is_gathered_into_one_data_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    model = _graph(rng)
    path = tmp_path / MODEL_FILE
    # what torch.onnx.export writes for a graph over 2 GiB: one file per weight
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    scattered = onnx_export.external_data_files(path)
    assert scattered == {"w1", "w2"}
    x = rng.standard_normal((3, 64)).astype(np.float32)
    expected = _run(path, x)

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_ABOVE_BYTES", 10000)
    onnx_export._fix_output_dim(path, 4)

    assert onnx_export.external_data_files(path) == {MODEL_FILE + ".data"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [MODEL_FILE, MODEL_FILE + ".data"]
    out = onnx.load(str(path), load_external_data=False).graph.output[0].type.tensor_type.shape
    assert [d.dim_param or d.dim_value for d in out.dim] == ["batch", 4]
    np.testing.assert_allclose(_run(path, x), expected, rtol=1e-6)


def test_a_small_graph_keeps_its_weights_inside(tmp_path):
    path = tmp_path / MODEL_FILE
    onnx.save(_graph(np.random.default_rng(1)), str(path))
    onnx_export._fix_output_dim(path, 4)
    assert onnx_export.external_data_files(path) == set()
    assert [p.name for p in tmp_path.iterdir()] == [MODEL_FILE]


@pytest.mark.parametrize("limit", [10000, 10**12])
def test_int8_of_a_graph_with_external_data(tmp_path, monkeypatch, limit):
    rng = np.random.default_rng(2)
    src, dst = tmp_path / "onnx", tmp_path / "onnx-int8"
    src.mkdir()
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_ABOVE_BYTES", limit)
    onnx_export.save_onnx(_graph(rng), src / MODEL_FILE)
    ModelMetadata(name="m", dimension=4, max_seq_length=8, input_names=["x"], output_name="y").save(src)
    big = limit == 10000
    assert onnx_export.external_data_files(src / MODEL_FILE) == ({MODEL_FILE + ".data"} if big else set())

    meta = onnx_export.quantize_int8(src, dst)

    assert meta.precision == "int8"
    x = rng.standard_normal((2, 64)).astype(np.float32)
    np.testing.assert_allclose(_run(dst / MODEL_FILE, x), _run(src / MODEL_FILE, x), rtol=0.1, atol=0.3)
    # the int8 folder holds the graph, the files it references and the metadata: no copy of the fp32 weights
    names = {p.name for p in dst.iterdir()}
    assert names == {MODEL_FILE, "eft_model.json"} | onnx_export.external_data_files(dst / MODEL_FILE)

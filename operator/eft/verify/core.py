"""Post-deploy verification: re-run the BEIR evaluation of the test split through a live `/v1/embeddings`
endpoint and compare it with the offline eval numbers (`DIR/eval/_SUCCESS.json` -> `summary.finetuned`).

Passages are sent with `input_type: passage`, queries with `input_type: query` (the server applies the model's
prefixes, as the eval stage did), `truncate: END` (the eval's truncation). A metric passes when
|live - offline| <= tolerance: `toleranceAt1` for k < 5, `toleranceAtK` for k >= 5 (defaults: `spec.deploy.verification`).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from eft.api.serving import INT8_QUALITY_FILES
from eft.api.spec import VerificationSpec, field_default
from eft.errors import InvalidInput, StageFailed
from eft.retrieval.scoring import beir_metrics, retrieve as search
from eft.retrieval.beir import load_beir, passage_text

log = logging.getLogger("eft.verify")

#: `spec.deploy.verification`'s defaults.
DEFAULT_TOLERANCES = {"at1": field_default(VerificationSpec, "tolerance_at1"),
                      "atK": field_default(VerificationSpec, "tolerance_at_k")}
BATCH = 64
RETRIES = 5


def _tolerances(tolerances: Any) -> dict[str, float]:
    if tolerances is None:
        return dict(DEFAULT_TOLERANCES)
    if hasattr(tolerances, "tolerance_at1"):  # eft.api.spec.VerificationSpec
        return {"at1": float(tolerances.tolerance_at1), "atK": float(tolerances.tolerance_at_k)}
    t = dict(tolerances)
    return {"at1": float(t.get("at1", t.get("toleranceAt1", DEFAULT_TOLERANCES["at1"]))),
            "atK": float(t.get("atK", t.get("toleranceAtK", DEFAULT_TOLERANCES["atK"])))}


def api_base(endpoint: str) -> str:
    """`http://host:8000`, `.../v1` or `.../v1/embeddings` -> `http://host:8000/v1`."""
    url = endpoint.rstrip("/")
    if url.endswith("/embeddings"):
        url = url[: -len("/embeddings")]
    if not url.endswith("/v1"):
        url += "/v1"
    return url


def k_of(metric: str) -> int | None:
    try:
        return int(metric.split("@", 1)[1])
    except (IndexError, ValueError):
        return None


class EndpointClient:
    """Small client of the embeddings API with retries on connection errors, 429 and 5xx."""

    def __init__(self, endpoint: str, model: str | None = None, timeout: float = 120.0, api_key: str | None = None):
        import httpx

        self.base = api_base(endpoint)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(timeout=timeout, headers=headers)
        self.model = model

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kw):
        import httpx

        last = None
        for attempt in range(RETRIES):
            try:
                r = self.http.request(method, self.base + path, **kw)
                if r.status_code < 500 and r.status_code != 429:
                    return r
                last = f"HTTP {r.status_code}: {r.text[:300]}"
            except httpx.HTTPError as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(min(8.0, 0.5 * 2 ** attempt))
        raise StageFailed(f"endpoint {self.base}{path} failed after {RETRIES} attempts: {last}")

    def wait_ready(self, seconds: float) -> None:
        import httpx

        deadline = time.monotonic() + seconds
        while True:
            try:
                if self.http.get(self.base + "/health/ready", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise StageFailed(f"endpoint {self.base} was not ready within {seconds:.0f}s")
            time.sleep(1.0)

    def resolve_model(self) -> str:
        if self.model:
            return self.model
        r = self._request("GET", "/models")
        if r.status_code != 200 or not r.json().get("data"):
            raise StageFailed(f"cannot list the endpoint's models: HTTP {r.status_code} {r.text[:200]}")
        self.model = r.json()["data"][0]["id"]
        return self.model

    def embed(self, texts: list[str], input_type: str) -> np.ndarray:
        body = {"model": self.resolve_model(), "input": texts, "input_type": input_type, "truncate": "END",
                "encoding_format": "base64"}
        r = self._request("POST", "/embeddings", json=body)
        if r.status_code != 200:
            raise StageFailed(f"the endpoint rejected an embeddings request: HTTP {r.status_code} {r.text[:300]}")
        data = sorted(r.json()["data"], key=lambda d: d["index"])
        rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") if isinstance(d["embedding"], str)
                else np.asarray(d["embedding"], dtype=np.float32) for d in data]
        emb = np.stack(rows).astype(np.float32)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def embed_all(self, texts: list[str], input_type: str, batch: int = BATCH, concurrency: int = 4) -> np.ndarray:
        chunks = [texts[i:i + batch] for i in range(0, len(texts), batch)]
        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            parts = list(pool.map(lambda c: self.embed(c, input_type), chunks))
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def offline_reference(workdir: Path, backend: str = "auto") -> tuple[dict, str]:
    """(offline metrics, where from) that a live endpoint serving `backend` should reproduce: an int8 backend's
    own test-split metrics from the export stage (quantisation moves them: one query of 78 is 0.0128 of
    recall@5, more than the default tolerance), else the fine-tuned model's from eval.
    Raises `InvalidInput` when the file is missing or unreadable."""
    if backend in INT8_QUALITY_FILES:
        path = Path(workdir) / "export" / INT8_QUALITY_FILES[backend]
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))["int8"]["metrics"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InvalidInput(f"no offline metrics of the {backend} variant in {path} ({err}); run the export "
                               "stage, or verify against the backend that was exported", "--backend") from err
        return metrics, f"export/{INT8_QUALITY_FILES[backend]}"
    from eft.stages.contract import read_success

    eval_success = read_success(Path(workdir) / "eval")
    offline = ((eval_success or {}).get("summary") or {}).get("finetuned")
    if not offline:
        raise InvalidInput(f"no offline eval numbers in {Path(workdir) / 'eval' / '_SUCCESS.json'} "
                           "(summary.finetuned)", "--workdir")
    return offline, "eval/_SUCCESS.json"


def verify_endpoint(endpoint: str, workdir: str | Path, tolerances: Any = None, *, model: str | None = None,
                    wait_seconds: float = 0.0, concurrency: int = 4, api_key: str | None = None,
                    backend: str = "auto") -> dict:
    """Live BEIR metrics of the test split vs the offline numbers of what the endpoint serves (`backend`: an int8
    variant is compared with its own metrics from the export stage, anything else with eval's fine-tuned model;
    `offline_reference`); returns the verify stage's summary.

    `tolerances`: a `VerificationSpec`, a dict (`at1`/`atK` or `toleranceAt1`/`toleranceAtK`) or None (0.03/0.01).
    Raises `InvalidInput` when the workspace lacks the test split or the eval numbers, `StageFailed` when the
    endpoint cannot be used. A metric outside its tolerance does not raise: `passed` is False in the result.
    """
    started = time.monotonic()
    tol = _tolerances(tolerances)
    workdir = Path(workdir)
    beir_dir = workdir / "prep" / "beir"
    if not (beir_dir / "qrels" / "test.tsv").is_file():
        raise InvalidInput(f"no BEIR test split in {beir_dir} (run the prep stage)", "--workdir")
    offline, reference = offline_reference(workdir, backend)
    offline = {k: float(v) for k, v in offline.items() if k_of(k) is not None and isinstance(v, (int, float))}
    k_values = sorted({k_of(k) for k in offline})

    corpus, queries, qrels = load_beir(beir_dir)
    doc_ids, qids = list(corpus), list(queries)
    client = EndpointClient(endpoint, model, api_key=api_key)
    try:
        if wait_seconds > 0:
            client.wait_ready(wait_seconds)
        served = client.resolve_model()
        p_emb = client.embed_all([passage_text(corpus[d]) for d in doc_ids], "passage", concurrency=concurrency)
        q_emb = client.embed_all([queries[q] for q in qids], "query", concurrency=concurrency)
    finally:
        client.close()
    results = search(q_emb, p_emb, qids, doc_ids, max(100, max(k_values)))
    live = beir_metrics(qrels, results, k_values)

    failures, deltas = [], {}
    for name, off in sorted(offline.items(), key=lambda kv: (kv[0].split("@")[0], k_of(kv[0]))):
        if name not in live:
            continue
        k = k_of(name)
        allowed = tol["at1"] if k < 5 else tol["atK"]
        delta = live[name] - off
        deltas[name] = round(delta, 5)
        if abs(delta) > allowed + 1e-9:
            failures.append({"metric": name, "offline": round(off, 5), "live": round(live[name], 5),
                             "delta": round(delta, 5), "tolerance": allowed})
    return {
        "passed": not failures and bool(deltas),
        "endpoint": api_base(endpoint),
        "model": served,
        "queries": len(qids),
        "corpus": len(doc_ids),
        "reference": reference,
        "tolerances": {"toleranceAt1": tol["at1"], "toleranceAtK": tol["atK"]},
        "compared": len(deltas),
        "failures": failures,
        "maxAbsDelta": round(max((abs(d) for d in deltas.values()), default=0.0), 5),
        "live": {k: round(v, 5) for k, v in live.items() if k in offline},
        "offline": {k: round(v, 5) for k, v in offline.items() if k in live},
        "seconds": round(time.monotonic() - started, 2),
    }

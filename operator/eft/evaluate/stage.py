"""The eval stage: base and fine-tuned models on the held-out BEIR test split (and extra BEIR datasets)."""

from __future__ import annotations

import logging
from pathlib import Path

from eft.embedding import ModelEncoder
from eft.errors import InvalidInput
from eft.evaluate.paired import paired_bootstrap, per_query_ndcg
from eft.evaluate.promotion import decide, general_ability_dir, relative_change, too_few_queries
from eft.evaluate.report import write_report
from eft.models import load_sentence_transformer, prefixes_for, trained_dimensions
from eft.retrieval.beir import BeirFormatError, check_beir
from eft.retrieval.scoring import evaluate_encoder
from eft.stages.contract import StageContext

log = logging.getLogger("eft.eval")


#: Name of the general-ability set among the evaluated datasets.
GENERAL = "general-ability"


def _datasets(ctx: StageContext) -> tuple[dict[str, tuple[Path, str, bool, str]], str | None]:
    """The extra BEIR datasets and the general-ability set to score, by name: (folder, split, ignore identical
    ids, the spec field naming it); and a note when the general-ability set is not scored. Their files are
    checked by `check` before the stage runs, and again by `load_beir` as each is read. Raises `InvalidInput`
    for a general-ability path given in the spec that holds no set."""
    ev = ctx.spec.evaluation
    datasets = {extra.name: (Path(extra.path), extra.split, extra.ignore_identical_ids,
                             f"spec.evaluation.extraDatasets[{extra.name}].path") for extra in ev.extra_datasets}
    guard = ev.promotion.general_ability
    general_dir = general_ability_dir(guard)
    general_note = "disabled" if general_dir is None else None
    field = "spec.evaluation.promotion.generalAbility.path"
    if general_dir is not None and (general_dir / "corpus.jsonl").is_file():
        datasets[GENERAL] = (general_dir, guard.split, False, field)
    elif general_dir is not None and guard.path:
        raise InvalidInput(f"no BEIR dataset at {general_dir} (corpus.jsonl missing)", field)
    elif general_dir is not None:
        general_note = f"not scored: no set at {general_dir} (scripts/setup.sh builds it)"
    return datasets, general_note


def check(ctx: StageContext) -> None:
    """The extra and general-ability BEIR sets' files (`check_beir`), before the stage's folder (the last report)
    is emptied and before any model is loaded. Raises `InvalidInput` naming the field and the file."""
    for folder, split, _, field in _datasets(ctx)[0].values():
        try:
            check_beir(folder, split)
        except BeirFormatError as err:
            raise InvalidInput(str(err), field) from None


def run(ctx: StageContext) -> dict:
    spec, ev = ctx.spec, ctx.spec.evaluation
    bm = spec.base_model
    # Our own split: query ids never name corpus documents, so nothing is ignored. Extra datasets: BEIR's own
    # default (ignore a hit whose id is the query's), unless the dataset says otherwise.
    extra, general_note = _datasets(ctx)
    datasets = {"test": (ctx.input_dir("prep") / "beir", "test", False, "spec.prep.testFraction"), **extra}
    base_model = load_sentence_transformer(bm)
    prefixes = prefixes_for(bm, base_model)
    model_dir = ctx.input_dir("train") / "model"
    tuned_model = load_sentence_transformer(bm, location=str(model_dir))
    widths = trained_dimensions(model_dir)  # Matryoshka widths the model was trained for (with its full width)

    # Through the shared cache: the base model's passages were encoded by prep; the fine-tuned model's test
    # split becomes export's fp32 reference for its int8 check.
    encoders = {label: ModelEncoder(model, prefixes, bm.max_query_length, bm.max_passage_length, ev.batch_size,
                                    ctx.embedding_cache, ctx.progress, label)
                for label, model in (("base", base_model), ("finetuned", tuned_model))}
    results_by_ds: dict[str, dict] = {}
    significance = None
    matryoshka: dict | None = None
    for name, (folder, split, ignore_identical, field) in datasets.items():
        res: dict = {}
        runs = {}
        by_dim = {}
        for label, encode in encoders.items():
            with ctx.progress.task(f"{name}: {label} evaluated", total=1) as task:
                try:
                    scored = evaluate_encoder(encode, folder, ev.k_values, split=split,
                                              ignore_identical_ids=ignore_identical,
                                              dimensions=widths if name == "test" and len(widths) > 1 else None)
                except BeirFormatError as err:  # run without check(), or a corpus line check() does not read
                    raise InvalidInput(str(err), field) from None
                res.update(queries=scored["queries"], corpus=scored["corpus"])
                res[label], runs[label], qrels = scored["metrics"], scored["results"], scored["qrels"]
                by_dim[label] = scored.get("byDimension")
                task.advance()
        if name == "test" and by_dim.get("finetuned"):
            matryoshka = {"metric": "ndcg@10", "dimensions": sorted(by_dim["finetuned"]),
                          "base": {str(d): round(v, 5) for d, v in by_dim["base"].items()},
                          "finetuned": {str(d): round(v, 5) for d, v in by_dim["finetuned"].items()}}
        res["relative"] = {m: round(relative_change(res["base"][m], res["finetuned"][m]), 5)
                           for m in res["base"] if res["base"][m]}
        results_by_ds[name] = res
        if name == "test":
            significance = paired_bootstrap(per_query_ndcg(qrels, runs["base"], 10),
                                            per_query_ndcg(qrels, runs["finetuned"], 10))

    test = results_by_ds.pop("test")
    general = results_by_ds.pop(GENERAL, None)
    promotion = decide(ev.promotion, test["base"], test["finetuned"], results_by_ds, queries=test["queries"],
                       significance=significance, general=general)
    general_summary = general_note or {
        "queries": general["queries"], "base": round(general["base"][ev.promotion.metric], 5),
        "finetuned": round(general["finetuned"][ev.promotion.metric], 5)}
    warnings = [w for w in [too_few_queries(ev.promotion, test["queries"])] if w]
    for w in warnings:
        log.warning("%s", w)
    report = {"name": ctx.resource.metadata.name, **test, "significance": significance,
              "extra": results_by_ds, "generalAbility": general_summary, "promotion": promotion,
              "warnings": warnings, "matryoshka": matryoshka}
    write_report(ctx.out_dir, report)
    rounded = lambda d: {k: round(v, 5) for k, v in d.items()}  # noqa: E731
    return {
        "queries": test["queries"],
        "corpus": test["corpus"],
        "base": rounded(test["base"]),
        "finetuned": rounded(test["finetuned"]),
        "relative": test["relative"],
        "significance": significance,
        "extra": {n: {"base": {ev.promotion.metric: r["base"][ev.promotion.metric]},
                      "finetuned": {ev.promotion.metric: r["finetuned"][ev.promotion.metric]}}
                  for n, r in results_by_ds.items()},
        "generalAbility": general_summary,
        "promotion": promotion,
        "warnings": warnings,
        **({"matryoshka": {"dimensions": matryoshka["dimensions"], "base": matryoshka["base"],
                           "finetuned": matryoshka["finetuned"]}} if matryoshka else {}),
        "embeddingCache": ctx.embedding_cache.stats(),
    }

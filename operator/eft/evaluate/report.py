"""Writing the evaluation report: `report.json`, `report.md` and a PNG bar chart of base vs fine-tuned."""

from __future__ import annotations

import json
from pathlib import Path

CHART_METRICS = ("ndcg@1", "ndcg@5", "ndcg@10", "recall@5", "recall@10", "recall@100", "map@10")


def markdown_report(report: dict) -> str:
    lines = [f"# Evaluation: {report['name']}", ""]
    promo = report["promotion"]
    lines += [f"**Promotion: {'promoted' if promo['promoted'] else 'not promoted'}** ({promo['reason']})", ""]
    for warning in report.get("warnings") or []:
        lines += [f"> **Warning:** {warning}", ""]
    boot = report.get("significance")
    if boot:
        lines += [f"Per-query nDCG@10 change: mean {boot['meanDelta']:+.4f}, 95% CI "
                  f"[{boot['ci95'][0]:+.4f}, {boot['ci95'][1]:+.4f}] over {boot['queries']} queries "
                  f"({boot['better']} better, {boot['worse']} worse).", ""]
    for ds_name, ds in [("test split", report)] + [(k, v) for k, v in report.get("extra", {}).items()]:
        lines += [f"## {ds_name} ({ds['queries']} queries, {ds['corpus']} passages)", "",
                  "| metric | base | fine-tuned | change |", "| --- | ---: | ---: | ---: |"]
        for m in sorted(ds["base"], key=lambda x: (x.split("@")[0], int(x.split("@")[1]))):
            b, t = ds["base"][m], ds["finetuned"][m]
            lines.append(f"| {m} | {b:.4f} | {t:.4f} | {relative_text(b, t)} |")
        lines.append("")
    mrl = report.get("matryoshka")
    if mrl:
        lines += ["## nDCG@10 by embedding width (test split)", "", "| width | base | fine-tuned | change |",
                  "| ---: | ---: | ---: | ---: |"]
        for d in mrl["dimensions"]:
            b, t = mrl["base"][str(d)], mrl["finetuned"][str(d)]
            lines.append(f"| {d} | {b:.4f} | {t:.4f} | {relative_text(b, t)} |")
        lines.append("")
    return "\n".join(lines)


def relative_text(base: float, tuned: float) -> str:
    """The relative change as `+12.3%`, or `n/a` when the base is 0 (never `nan`/`inf`)."""
    return f"{(tuned - base) / base:+.1%}" if base else "n/a"


def chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in CHART_METRICS if m in report["base"]]
    x = range(len(metrics))
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    w = 0.38
    base = [report["base"][m] for m in metrics]
    tuned = [report["finetuned"][m] for m in metrics]
    ax.bar([i - w / 2 for i in x], base, w, label="base", color="#9aa5b1")
    ax.bar([i + w / 2 for i in x], tuned, w, label="fine-tuned", color="#76b900")
    for i, (b, t) in enumerate(zip(base, tuned)):
        ax.text(i - w / 2, b + 0.01, f"{b:.3f}", ha="center", fontsize=7)
        ax.text(i + w / 2, t + 0.01, f"{t:.3f}", ha="center", fontsize=7)
    ax.set_xticks(list(x), metrics)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("score")
    verdict = "promoted" if report["promotion"]["promoted"] else "not promoted"
    ax.set_title(f"{report['name']}: base vs fine-tuned on {report['queries']} test queries ({verdict})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(out_dir: Path, report: dict) -> None:
    (out_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out_dir / "report.md").write_text(markdown_report(report), encoding="utf-8")
    chart(report, out_dir / "report.png")

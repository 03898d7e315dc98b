"""Terminal output of `eft run`: one line per finished stage and the base vs fine-tuned metrics table."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from eft.evaluate.report import relative_text
from eft.stages.contract import StageOutcome, read_success

console = Console(stderr=False)

SHOWN_METRICS = ("ndcg@1", "ndcg@10", "recall@10", "recall@100", "map@10", "precision@1")


def print_outcome(outcome: StageOutcome) -> None:
    state = "[dim]skipped (up to date)[/dim]" if outcome.skipped else f"[green]done[/green] in {outcome.seconds:.1f}s"
    console.print(f"stage [bold]{outcome.name}[/bold]: {state}")


def print_metrics_table(workdir: Path, outcomes: list[StageOutcome]) -> None:
    ev = read_success(workdir / "eval")
    if not ev:
        return
    summary = ev["summary"]
    base, tuned = summary.get("base", {}), summary.get("finetuned", {})
    table = Table(title=f"Test split: {summary.get('queries', '?')} queries over {summary.get('corpus', '?')} chunks")
    table.add_column("metric")
    table.add_column("base", justify="right")
    table.add_column("fine-tuned", justify="right")
    table.add_column("change", justify="right")
    for m in SHOWN_METRICS:
        if m in base and m in tuned:
            b, t = base[m], tuned[m]
            color = "green" if t > b else ("red" if t < b else "white")
            table.add_row(m, f"{b:.4f}", f"{t:.4f}", f"[{color}]{relative_text(b, t)}[/{color}]")
    console.print(table)
    mrl = summary.get("matryoshka")
    if mrl:
        widths = ", ".join(f"{d}: {mrl['base'][str(d)]:.4f} → {mrl['finetuned'][str(d)]:.4f}"
                           for d in mrl["dimensions"])
        console.print(f"nDCG@10 by width: {widths}")
    for warning in summary.get("warnings") or []:
        console.print(f"[bold yellow]warning:[/bold yellow] {warning}")
    promo = summary.get("promotion", {})
    if promo:
        verdict = "[green]promoted[/green]" if promo.get("promoted") else "[red]not promoted[/red]"
        console.print(f"promotion: {verdict} ({promo.get('reason', '')})")
    reports = workdir / "eval"
    console.print(f"report: {reports / 'report.md'}, {reports / 'report.json'}, {reports / 'report.png'}")
    times = ", ".join(f"{o.name} {o.seconds:.0f}s" + (" (skipped)" if o.skipped else "") for o in outcomes)
    console.print(f"stage times: {times}")

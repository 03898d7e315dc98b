"""The promotion rule: deploy the fine-tuned model only when it beats the base model by the configured margin
on the test split, and does not regress on any extra dataset the user named (those guard general ability)."""

from __future__ import annotations

from eft.api.spec import PromotionSpec

#: Largest absolute drop of the promotion metric tolerated on an extra dataset.
EXTRA_REGRESSION_TOLERANCE = 0.005


def relative_change(base: float, tuned: float) -> float:
    if base == 0:
        return float("inf") if tuned > 0 else 0.0
    return (tuned - base) / base


def decide(rule: PromotionSpec, base: dict[str, float], tuned: dict[str, float],
           extra: dict[str, dict[str, dict[str, float]]] | None = None) -> dict:
    m = rule.metric
    b, t = base[m], tuned[m]
    rel = relative_change(b, t)
    promoted = t > b and rel >= rule.min_relative_improvement
    if not t > b:
        reason = f"fine-tuned {m} {t:.4f} does not beat base {b:.4f}"
    elif not promoted:
        reason = (f"fine-tuned {m} {t:.4f} beats base {b:.4f} by {rel:+.2%}, "
                  f"less than the required {rule.min_relative_improvement:+.2%}")
    else:
        reason = f"fine-tuned {m} {t:.4f} beats base {b:.4f} by {rel:+.2%}"
    regressions = []
    for name, res in (extra or {}).items():
        if res["finetuned"][m] < res["base"][m] - EXTRA_REGRESSION_TOLERANCE:
            regressions.append(f"{name}: {res['base'][m]:.4f} -> {res['finetuned'][m]:.4f}")
    if promoted and regressions:
        promoted = False
        reason += f", but it regresses on extra datasets ({'; '.join(regressions)})"
    return {
        "promoted": promoted,
        "metric": m,
        "base": round(b, 5),
        "finetuned": round(t, 5),
        "relativeChange": round(rel, 5) if rel != float("inf") else None,
        "minRelativeImprovement": rule.min_relative_improvement,
        "extraRegressions": regressions,
        "reason": reason,
    }

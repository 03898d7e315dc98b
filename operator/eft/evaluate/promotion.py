"""The promotion rule: deploy the fine-tuned model only when it beats the base model by the configured margin
on a test split large enough to mean something (`minTestQueries`), and does not regress on any extra dataset the
user named (those guard general ability)."""

from __future__ import annotations

from eft.api.spec import PromotionSpec

#: Largest absolute drop of the promotion metric tolerated on an extra dataset.
EXTRA_REGRESSION_TOLERANCE = 0.005


def relative_change(base: float, tuned: float) -> float:
    if base == 0:
        return float("inf") if tuned > 0 else 0.0
    return (tuned - base) / base


def too_few_queries(rule: PromotionSpec, queries: int | None) -> str | None:
    """The warning for a test split below `minTestQueries` (None when it is large enough or unknown)."""
    if queries is None or queries >= rule.min_test_queries:
        return None
    return (f"the test split has only {queries} quer{'y' if queries == 1 else 'ies'}, fewer than "
            f"promotion.minTestQueries ({rule.min_test_queries}): too few for the base-vs-fine-tuned comparison "
            f"to mean anything; add documents or questions, or raise prep.testFraction")


def decide(rule: PromotionSpec, base: dict[str, float], tuned: dict[str, float],
           extra: dict[str, dict[str, dict[str, float]]] | None = None, queries: int | None = None) -> dict:
    """The decision and its reason. `queries`: the test split's size (the gate refuses a split below
    `rule.min_test_queries`)."""
    m = rule.metric
    b, t = base[m], tuned[m]
    rel = relative_change(b, t)
    # A negative margin tolerates a drop of at most that much (e.g. -0.01: within 1% of base); otherwise the
    # fine-tuned model must beat the base model, by at least the margin.
    tolerant = rule.min_relative_improvement < 0
    promoted = (t > b or tolerant) and rel >= rule.min_relative_improvement
    if promoted and t > b:
        reason = f"fine-tuned {m} {t:.4f} beats base {b:.4f} by {rel:+.2%}"
    elif promoted:
        reason = (f"fine-tuned {m} {t:.4f} is within the tolerated {rule.min_relative_improvement:+.2%} "
                  f"of base {b:.4f}")
    elif tolerant:
        reason = (f"fine-tuned {m} {t:.4f} is {rel:+.2%} from base {b:.4f}, beyond the tolerated "
                  f"{rule.min_relative_improvement:+.2%}")
    elif not t > b:
        reason = f"fine-tuned {m} {t:.4f} does not beat base {b:.4f}"
    else:
        reason = (f"fine-tuned {m} {t:.4f} beats base {b:.4f} by {rel:+.2%}, "
                  f"less than the required {rule.min_relative_improvement:+.2%}")
    regressions = []
    for name, res in (extra or {}).items():
        if res["finetuned"][m] < res["base"][m] - EXTRA_REGRESSION_TOLERANCE:
            regressions.append(f"{name}: {res['base'][m]:.4f} -> {res['finetuned'][m]:.4f}")
    if promoted and regressions:
        promoted = False
        reason += f", but it regresses on extra datasets ({'; '.join(regressions)})"
    if too_few_queries(rule, queries):
        promoted = False
        reason = (f"not decided: the test split has only {queries} quer{'y' if queries == 1 else 'ies'}, fewer "
                  f"than promotion.minTestQueries ({rule.min_test_queries}); measured: {reason}")
    return {
        "promoted": promoted,
        "metric": m,
        "base": round(b, 5),
        "finetuned": round(t, 5),
        "relativeChange": round(rel, 5) if rel != float("inf") else None,
        "minRelativeImprovement": rule.min_relative_improvement,
        "extraRegressions": regressions,
        "testQueries": queries,
        "minTestQueries": rule.min_test_queries,
        "reason": reason,
    }

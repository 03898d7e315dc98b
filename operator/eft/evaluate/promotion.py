"""The promotion rule: deploy the fine-tuned model only when it beats the base model by the configured margin
on a test split large enough to mean something (`minTestQueries`), optionally by more than the noise (the
bootstrap interval of the nDCG@10 change above zero), does not regress on any extra dataset the user named, and
does not lose general ability (a small set of real questions from outside the user's domain, on which a drop
beyond `generalAbility.maxDrop` blocks promotion).

On the real-question benchmark (`bench/realq_run.py`) a model promoted on a flattering synthetic split was worse
than its base on the questions people wrote; the guard and the significance option are the checks that do not
depend on the synthetic split alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from eft.api.spec import GeneralAbilitySpec, PromotionSpec

#: Largest absolute drop of the promotion metric tolerated on an extra dataset.
EXTRA_REGRESSION_TOLERANCE = 0.005
#: Where scripts/setup.sh builds the default general-ability set (overridden by $EFT_GENERAL_ABILITY_DIR).
GENERAL_ABILITY_ENV = "EFT_GENERAL_ABILITY_DIR"
DEFAULT_GENERAL_ABILITY_DIR = Path.home() / ".cache" / "eft" / "general-ability" / "django" / "beir"


def general_ability_dir(spec: GeneralAbilitySpec) -> Path | None:
    """The BEIR folder of the general-ability set: the spec's path, else the one setup built; None when disabled.
    The folder may not exist (the caller reports that)."""
    if not spec.enabled:
        return None
    if spec.path:
        return Path(spec.path)
    return Path(os.environ.get(GENERAL_ABILITY_ENV) or DEFAULT_GENERAL_ABILITY_DIR)


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
           extra: dict[str, dict[str, dict[str, float]]] | None = None, queries: int | None = None,
           significance: dict | None = None, general: dict[str, dict[str, float]] | None = None) -> dict:
    """The promotion decision as a dict (`promoted`, `reason`, the figures it used).

    `base`/`tuned`: test-split metrics (`name@k` -> value); `extra`: per extra dataset `{"base", "finetuned"}`
    metrics; `queries`: the test split's size (the gate refuses a split below `rule.min_test_queries`);
    `significance`: `paired_bootstrap`'s result on the test split (needed when `rule.require_significant`);
    `general`: `{"base", "finetuned"}` metrics on the general-ability set, or None when it was not scored."""
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
    blockers = []
    if rule.require_significant:
        lo = (significance or {}).get("ci95", [0.0, 0.0])[0]
        if not lo > 0:
            blockers.append(f"the 95% interval of the nDCG@10 change reaches {lo:+.4f} (not above zero)")
    regressions = []
    for name, res in (extra or {}).items():
        if res["finetuned"][m] < res["base"][m] - EXTRA_REGRESSION_TOLERANCE:
            regressions.append(f"{name}: {res['base'][m]:.4f} -> {res['finetuned'][m]:.4f}")
    if regressions:
        blockers.append(f"it regresses on extra datasets ({'; '.join(regressions)})")
    general_drop = None
    if general is not None:
        general_drop = general["base"][m] - general["finetuned"][m]
        if general_drop > rule.general_ability.max_drop:
            blockers.append(f"it loses general ability ({m} {general['base'][m]:.4f} -> "
                            f"{general['finetuned'][m]:.4f} on real questions outside the domain, more than the "
                            f"tolerated {rule.general_ability.max_drop:.4f})")
    if promoted and blockers:
        promoted = False
        reason += ", but " + ", and ".join(blockers)
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
        "requireSignificant": rule.require_significant,
        "extraRegressions": regressions,
        "testQueries": queries,
        "minTestQueries": rule.min_test_queries,
        "generalAbilityDrop": round(general_drop, 5) if general_drop is not None else None,
        "reason": reason,
    }

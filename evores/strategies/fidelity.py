"""How well the low resolution ranks genomes as the high one would: the fidelity probe.

At each stage change the search re-evaluates, at the new resolution, the carried elites and a
*probe* of the finished stage: ``schedule.probe`` of its other successful members, spread over
its range of validation accuracy (:func:`probe_members`). :func:`measure` turns the pairs
(accuracy below, accuracy above) into the transition record; a failed evaluation on either
side removes its pair from every statistic and is counted in ``n_failed``.

With ``schedule.adaptive`` the measurement steers the rest of the run (:func:`after_transition`,
:func:`plan_next_stage`); every decision is appended to the state's ``decisions`` with what was
measured, what changed and why. The proxy is *strong* when the lower bound of the 90 %
bootstrap interval of Spearman's rho is at least ``schedule.fidelity_threshold`` (from at least
:data:`MIN_PAIRS` pairs); otherwise it is *weak* (an unmeasurable proxy counts as weak: not
narrowing is the choice that cannot lose the optimum).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evores.core.results import OK
from evores.core.stats import bootstrap_interval, kendall, spearman

# Fewer successful pairs than this give an interval too wide to act on: the proxy is weak.
MIN_PAIRS = 5
# A weak proxy carries this many times schedule.elites up (budget allowing).
WEAK_ELITES_FACTOR = 2


def probe_members(
    pool: list[dict[str, Any]], elites: list[dict[str, Any]], count: int
) -> list[dict[str, Any]]:
    """``count`` members of ``pool`` (a stage's successful members), stratified by rank.

    Genomes equal to an elite's, and repeats, are left out; the rest are ranked by accuracy
    (ties keep pool order) and ``count`` of them taken at evenly spaced ranks, best and worst
    included. A pool with no more than ``count`` such members gives all of them. No random
    draw: the probe of a stage depends only on its members.
    """
    taken = [m["hparams"] for m in elites]
    ranked = []
    for m in sorted(pool, key=lambda m: -m["fitness"]):  # stable
        if m["status"] == OK and m["hparams"] not in taken:
            taken.append(m["hparams"])
            ranked.append(m)
    if count <= 0:
        return []
    if len(ranked) <= count:
        return ranked
    picks = np.linspace(0, len(ranked) - 1, count).round().astype(int)  # distinct: spacing >= 1
    return [ranked[i] for i in picks]


def _ok(member: dict[str, Any]) -> bool:
    return member.get("status", OK) == OK


def measure(
    low: list[dict[str, Any]], high: list[dict[str, Any]], n_elites: int, rng: np.random.Generator
) -> dict[str, Any]:
    """The transition record of members ``low`` (the first ``n_elites`` are the elites, the
    rest the probe) re-evaluated as ``high``: n, spearman (also as ``rank_correlation``),
    kendall, ``interval`` (the 90 % bootstrap interval of spearman), top_k_kept, n_failed,
    ``low`` / ``high`` (the accuracies of the pairs used) and ``pairs`` (every pair, with its
    role; a failed side is None)."""
    pairs = [
        {
            "role": "elite" if i < n_elites else "probe",
            "low": lo["fitness"] if _ok(lo) else None,
            "high": hi["fitness"] if _ok(hi) else None,
        }
        for i, (lo, hi) in enumerate(zip(low, high, strict=True))
    ]
    used = [p for p in pairs if p["low"] is not None and p["high"] is not None]
    x, y = [p["low"] for p in used], [p["high"] for p in used]
    return {
        "low": x,
        "high": y,
        "n": len(used),
        "n_failed": len(pairs) - len(used),
        "spearman": spearman(x, y),
        "rank_correlation": spearman(x, y),
        "kendall": kendall(x, y),
        "interval": bootstrap_interval(x, y, rng),
        "top_k_kept": _top_k_kept(x, y, n_elites),
        "pairs": pairs,
    }


def _top_k_kept(x: list[float], y: list[float], k: int) -> int:
    """How many of the k best by ``x`` are among the k best by ``y`` (stable ties)."""
    k = min(k, len(x))
    top = lambda v: set(np.argsort(-np.asarray(v, dtype=float), kind="stable")[:k].tolist())  # noqa: E731
    return len(top(x) & top(y)) if k else 0


def verdict(transition: dict[str, Any], threshold: float) -> str:
    """``strong`` when the interval's lower bound reaches ``threshold`` from at least
    :data:`MIN_PAIRS` pairs, else ``weak``."""
    interval = transition.get("interval")
    if transition.get("n", 0) < MIN_PAIRS or interval is None:
        return "weak"
    return "strong" if interval[0] >= threshold else "weak"


def _measured(transition: dict[str, Any]) -> dict[str, Any]:
    keys = ("from_resolution", "to_resolution", "n", "spearman", "interval", "n_failed")
    return {key: transition.get(key) for key in keys}


def after_transition(state: dict[str, Any], schedule: dict[str, Any]) -> None:
    """Adaptive rule 1, as soon as a stage change is measured: a weak proxy means the ranges
    were narrowed around genomes the low resolution cannot vouch for, so the current stage
    gets its unnarrowed space back; a strong one keeps the narrowed space."""
    transition = state["transitions"][-1]
    judged = verdict(transition, schedule["fidelity_threshold"])
    unnarrowed = state.pop("unnarrowed", None)
    if judged == "weak" and unnarrowed is not None:
        state["space"] = unnarrowed
        changed, why = "restored the unnarrowed space of this stage", _weak_why(transition)
    else:
        changed = "nothing"
        why = (
            "the proxy is strong: the narrowed ranges stand"
            if judged == "strong"
            else "the space was not narrowed"
        )
    _decide(state, "transition", transition, judged, changed, why, schedule)


def plan_next_stage(state: dict[str, Any], schedule: dict[str, Any]) -> tuple[int, bool]:
    """Adaptive rule 2, when a stage closes: (elites to carry, whether to narrow). After a weak
    transition, carry :data:`WEAK_ELITES_FACTOR` times ``schedule.elites`` and keep the ranges;
    after a strong one (or in stage 0, before anything is measured), as a fixed ladder does."""
    elites, narrow = schedule["elites"], schedule["narrow"]
    if state["stage"] == 0 or not state["transitions"]:
        return elites, narrow
    transition = state["transitions"][-1]
    judged = verdict(transition, schedule["fidelity_threshold"])
    if judged == "strong":
        _decide(state, "stage_close", transition, judged, "nothing", "the proxy is strong: "
                "carry schedule.elites and narrow as a fixed ladder", schedule)  # fmt: skip
        return elites, narrow
    budget = schedule["evaluations"][state["stage"] + 1]
    more = max(elites, min(WEAK_ELITES_FACTOR * elites, budget))
    changed = f"carried {more} elites instead of {elites}" + (", did not narrow" if narrow else "")
    _decide(state, "stage_close", transition, judged, changed, _weak_why(transition), schedule)
    return more, False


def _weak_why(transition: dict[str, Any]) -> str:
    if transition.get("n", 0) < MIN_PAIRS or transition.get("interval") is None:
        return f"only {transition.get('n', 0)} successful pairs: the fidelity is unknown"
    return f"the interval's lower bound {transition['interval'][0]:.2f} is below the threshold"


def _decide(state, at, transition, judged, changed, why, schedule) -> None:
    state.setdefault("decisions", []).append(
        {
            "stage": state["stage"],
            "at": at,
            "measured": _measured(transition),
            "threshold": schedule["fidelity_threshold"],
            "verdict": judged,
            "changed": changed,
            "why": why,
        }
    )

"""The search's state, typed: the plain dict a checkpoint holds under ``"search"``.

Three modules write it (the ladder both searches climb, the generational search, the
steady-state search) and the run directory's checks read it back; this is the one description
they share. It stays a plain dict, not a class, because it *is* the checkpoint: JSON in, JSON
out, nothing to pickle. :func:`upgrade` is the one place where a checkpoint written by an
earlier evores is brought up to today's keys.
"""

from typing import Any, NotRequired, TypedDict


class Member(TypedDict):
    """A population member: a genome scored at the stage's resolution (a failure scores 0)."""

    hparams: dict[str, Any]
    fitness: float
    status: str
    best_epoch: int
    key: list[int]  # (stage, generation or birth, index): the evaluation's key in the log


class FinalEntry(TypedDict):
    """A final candidate, retrained at the top resolution and scored on the test split."""

    hparams: dict[str, Any]
    val_accuracy: float
    test_accuracy: float | None
    status: str
    reason: str | None
    epochs: int


class LadderState(TypedDict):
    """The keys both searches share (:class:`evores.strategies.ladder.Ladder` keeps them)."""

    phase: str  # "search", "final" or "done"
    stage: int  # 0-based index into schedule.resolutions
    stage_used: int  # evaluations told in this stage
    n_evaluations: int  # search evaluations told, all stages
    population: list[Member]
    space: dict[str, Any]  # this stage's search space (narrowed), SearchSpace.to_dict()
    stage_scores: list[float]  # this stage's successful validation accuracies
    stage_started: float  # the run's clock when this stage began
    stages: list[dict[str, Any]]  # one summary per closed stage
    transitions: list[dict[str, Any]]  # one record per stage change
    final: list[FinalEntry]
    # The fidelity probe's: schedule.probe as the run started (0 in a run started before the
    # probe existed: upgrade fills it in), and this stage's successful members, the probe's pool.
    probe_size: NotRequired[int]
    stage_members: NotRequired[list[Member]]
    # The best schedule.elites successful members told in this stage, whether or not they are
    # in the population: the final candidates after the last stage (absent in a run started
    # before it was kept, which retrains the best of its population).
    stage_best: NotRequired[list[Member]]
    # Only while a later stage starts: the elites of the stage below, and its probe.
    carried: NotRequired[list[Member]]
    probe: NotRequired[list[Member]]
    # schedule.adaptive's: what the measured fidelity changed, and while a narrowed stage has
    # not measured its transition, its space before narrowing.
    decisions: NotRequired[list[dict[str, Any]]]
    unnarrowed: NotRequired[dict[str, Any]]
    # search.strategy = "tpe": this stage's evaluations so far, which TPE is fitted to.
    trials: NotRequired[list[Member]]


class GenerationalState(LadderState):
    """:class:`evores.strategies.generational.LadderSearch`'s: a generation at a time."""

    generation: int  # within the stage; 0 is the first population or the elites re-evaluated


class SteadyState(LadderState):
    """:class:`evores.strategies.steady.SteadyStateSearch`'s: a task at a time."""

    births: int  # tasks handed out in this stage
    pending: list[dict[str, Any]]  # tasks handed out and not yet told, oldest first
    reevaluated: NotRequired[list[Member | None]]  # the elites and probe at the new resolution
    final_told: NotRequired[list[FinalEntry | None]]  # the final candidates told so far


SearchState = GenerationalState | SteadyState

# Keys a checkpoint's state may lack and still be resumed (a TPE search's needs its trials).
OPTIONAL_KEYS = LadderState.__optional_keys__ - {"trials"}


def upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with the keys today's searches read, from whichever evores wrote it.

    A run started before the fidelity probe (its state has no ``probe_size``) goes on without
    one, so that it ends as it would have.
    """
    return {**state, "probe_size": state.get("probe_size", 0)}

"""The resolution ladder both searches climb: the stage bookkeeping they share.

``LadderSearch`` (a generation at a time) and ``SteadyStateSearch`` (a task at a time) differ
in how they breed and replace; everything else about a run is the same and lives here, once:
the state's common keys, the DEAP toolbox and the variation of parents, how a result becomes a
population member, a stage's close (its summary, the elites carried up, the narrowed space),
the transition record of the elites re-evaluated at the next resolution, the final candidates
and the winner. Each search *holds* a :class:`Ladder` over its own state dict; neither
overrides anything of the other.

The state is plain data (it is the checkpoint): ``phase`` (:data:`SEARCH`, :data:`FINAL`,
:data:`DONE`), ``stage``, ``stage_used`` (evaluations told in this stage), ``n_evaluations``,
``population`` (members: hparams, fitness, status, best_epoch, key), ``space`` (this stage's,
narrowed), ``stage_scores`` (this stage's successful accuracies), ``stage_started`` (the run's
clock when it began), ``stages`` and ``transitions`` (one record per closed stage and per stage
change), ``final`` (the final candidates' entries), ``probe_size`` (``schedule.probe`` as the
run started) and ``stage_members`` (this stage's successful members, what the probe is drawn
from; kept only with a probe), and while a later stage starts, ``carried`` (the elites of the
stage below) and ``probe`` (the probe of it). With ``schedule.adaptive``: ``decisions`` (what
the measured fidelity changed) and, while a narrowed stage has not measured its transition,
``unnarrowed`` (its space before narrowing).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
from deap import base, tools

from evores.core.errors import ConfigError
from evores.core.results import KIND_FINAL, OK, Task, make_task
from evores.core.seeding import derive_rng, derive_seed
from evores.strategies import fidelity, operators
from evores.strategies.space import SearchSpace
from evores.strategies.state import LadderState

# A run's phases: the search up the ladder, the final retraining, the end.
SEARCH = "search"
FINAL = "final"
DONE = "done"


@dataclass(frozen=True)
class Progress:
    """Where a search stands: the read-only view the driver and the report take of it.

    ``stages``, ``transitions`` and ``final`` hold the search's own records (shared, not
    copied: a view is taken after every result); treat them as read-only.
    """

    phase: str  # SEARCH, FINAL or DONE
    stage: int  # 0-based; the last stage once the search is over
    resolutions: tuple[int, ...]  # schedule.resolutions
    budgets: tuple[int, ...]  # schedule.evaluations: each stage's number of evaluations
    n_evaluations: int  # search evaluations told so far, all stages
    stage_used: int  # of them, in the current stage
    stage_started: float  # the run's clock when the current stage began
    stage_scores: tuple[float, ...]  # the current stage's successful validation accuracies
    stages: tuple[dict[str, Any], ...]  # one summary per closed stage
    transitions: tuple[dict[str, Any], ...]  # one record per stage change
    final: tuple[dict[str, Any], ...]  # the final candidates' entries, once all are in
    decisions: tuple[dict[str, Any], ...] = ()  # schedule.adaptive's, one per decision

    @property
    def done(self) -> bool:
        return self.phase == DONE

    @property
    def resolution(self) -> int:
        return self.resolutions[self.stage]

    @property
    def n_stages(self) -> int:
        return len(self.resolutions)

    @property
    def total_evaluations(self) -> int:
        return sum(self.budgets)


class FitnessMax(base.Fitness):
    """Validation accuracy, maximised."""

    weights = (1.0,)


class Individual(dict):
    """A genome (the canonical hparams dict) with a DEAP fitness; never leaves the search."""

    def __init__(self, member: dict[str, Any]):
        super().__init__(member["hparams"])
        self.member = member
        self.fitness = FitnessMax((member["fitness"],))


def best(members: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The k fittest members; ties keep population order (DEAP's selBest sorts stably)."""
    chosen = tools.selBest([Individual(m) for m in members], k)
    return [individual.member for individual in chosen]


def member(task: Task, result: dict[str, Any]) -> dict[str, Any]:
    """A population member: the task's genome scored by its result (a failure scores 0.0)."""
    ok = result["status"] == OK
    return {
        "hparams": task["hparams"],
        "fitness": float(result["val_accuracy"]) if ok else 0.0,
        "status": result["status"],
        "best_epoch": int(result.get("best_epoch") or 0),
        "key": task["key"],
    }


def final_entry(task: Task, result: dict[str, Any]) -> dict[str, Any]:
    """A final candidate's entry in the state (and the summary): validation and test score."""
    return {
        "hparams": task["hparams"],
        "val_accuracy": task["val_accuracy"],
        "test_accuracy": result.get("test_accuracy"),
        "status": result["status"],
        "reason": result.get("reason"),
        "epochs": task["epochs"],
    }


class Ladder:
    """The schedule's stages over one search's ``state`` dict (which it updates in place)."""

    def __init__(self, config: dict[str, Any], state: LadderState):
        self.seed = config["seed"]
        self.schedule = config["schedule"]
        self.settings = config["search"]
        self.state = state
        self.toolbox = self._toolbox()
        self._space: SearchSpace | None = None  # state["space"] parsed; reset at stage change
        self.probe_size = state["probe_size"]

    @staticmethod
    def initial_state(config: dict[str, Any]) -> LadderState:
        """The keys both searches start with (each adds its own)."""
        return {
            "phase": SEARCH,
            "stage": 0,
            "stage_used": 0,
            "n_evaluations": 0,
            "population": [],
            "space": SearchSpace.from_dict(config["space"]).to_dict(),
            "stage_scores": [],
            "stage_started": 0.0,
            "stages": [],
            "transitions": [],
            "final": [],
            "probe_size": config["schedule"]["probe"],
            "stage_members": [],
            "stage_best": [],
        }

    def _toolbox(self) -> base.Toolbox:
        toolbox = base.Toolbox()
        toolbox.register("sample", lambda space, rng: space.sample(rng))
        toolbox.register("mate", operators.crossover)
        toolbox.register(
            "mutate",
            operators.mutate,
            gene_prob=self.settings["mutation_genes"],
            sigma=self.settings["mutation_sigma"],
        )
        toolbox.register("select", operators.tournament, size=self.settings["tournament"])
        return toolbox

    # -- where the search stands -------------------------------------------------------------

    @property
    def stage(self) -> int:
        return self.state["stage"]

    @property
    def resolution(self) -> int:
        return self.schedule["resolutions"][self.state["stage"]]

    @property
    def budget(self) -> int:
        """The current stage's number of evaluations."""
        return self.schedule["evaluations"][self.state["stage"]]

    def remaining(self) -> int:
        """Evaluations of the current stage not told yet."""
        return self.budget - self.state["stage_used"]

    def space(self) -> SearchSpace:
        """The current stage's (narrowed) search space."""
        if self._space is None:
            self._space = SearchSpace.from_dict(self.state["space"])
        return self._space

    def progress(self) -> Progress:
        state = self.state
        return Progress(
            phase=state["phase"],
            stage=state["stage"],
            resolutions=tuple(self.schedule["resolutions"]),
            budgets=tuple(self.schedule["evaluations"]),
            n_evaluations=state["n_evaluations"],
            stage_used=state["stage_used"],
            stage_started=state["stage_started"],
            stage_scores=tuple(state["stage_scores"]),
            stages=tuple(state["stages"]),
            transitions=tuple(state["transitions"]),
            final=tuple(state["final"]),
            decisions=tuple(state.get("decisions", [])),
        )

    # -- breeding ----------------------------------------------------------------------------

    def vary(self, parents: list[dict], rng: np.random.Generator) -> list[dict]:
        """Crossover of consecutive parents, then mutation; a child equal to a parent mutates."""
        space = self.space()
        children = [copy.deepcopy(p) for p in parents]
        for i in range(0, len(children) - 1, 2):
            if rng.random() < self.settings["crossover"]:
                children[i], children[i + 1] = self.toolbox.mate(
                    children[i], children[i + 1], space, rng
                )
        for i, child in enumerate(children):
            if rng.random() < self.settings["mutation"] or child in parents:
                children[i] = self.toolbox.mutate(child, space, rng)
        return children

    def vary_one(self, parents: list[dict], rng: np.random.Generator) -> dict[str, Any]:
        """:meth:`vary` for a single child (the other child of a crossover is not needed, so it
        is not mutated: that would double the cost of a birth)."""
        space = self.space()
        child = parents[0]  # mate and mutate return new dicts; parents are never changed
        if rng.random() < self.settings["crossover"]:
            child, _ = self.toolbox.mate(child, parents[1], space, rng)
        if rng.random() < self.settings["mutation"] or child in parents:
            child = self.toolbox.mutate(child, space, rng)
        return child

    # -- stage bookkeeping -------------------------------------------------------------------

    def count(self, members: list[dict[str, Any]]) -> None:
        """Count told members against the run and the stage."""
        self.state["n_evaluations"] += len(members)
        self.state["stage_used"] += len(members)
        self.state["stage_scores"] += [m["fitness"] for m in members if m["status"] == OK]
        if self.probe_size:  # what the probe of this stage is drawn from
            self.state["stage_members"] += [m for m in members if m["status"] == OK]
        if "stage_best" in self.state:  # a run started before it was kept goes on without
            ok = [m for m in members if m["status"] == OK]
            self.state["stage_best"] = best(self.state["stage_best"] + ok, self.schedule["elites"])

    def record_transition(
        self, low: list[dict[str, Any]], high: list[dict[str, Any]], n_elites: int
    ) -> None:
        """The carried elites and the probe (``low``: members of the stage below) against their
        re-evaluations at this stage (``high``, in the same order; the first ``n_elites`` are the
        elites): the fidelity record of the
        stage change (:func:`evores.strategies.fidelity.measure`); with ``schedule.adaptive``, it
        may widen
        this stage's space again (:func:`evores.strategies.fidelity.after_transition`)."""
        state = self.state
        measured = fidelity.measure(
            low, high, n_elites, derive_rng(self.seed, "fidelity", state["stage"])
        )
        state["transitions"].append(
            {
                "from_resolution": self.schedule["resolutions"][state["stage"] - 1],
                "to_resolution": self.resolution,
                **measured,
            }
        )
        if self.schedule.get("adaptive"):
            fidelity.after_transition(state, self.schedule)
            self._space = None

    def fits(self, member: dict[str, Any]) -> bool:
        """Whether ``member``'s genome lies in the current stage's space: a probe member from
        outside the narrowed ranges is measured but not bred from (variation needs genomes of
        the space), so it does not join the population."""
        try:
            self.space().validate(member["hparams"])
        except ConfigError:
            return False
        return True

    def close_stage(self, elapsed: float) -> None:
        """Record the stage's summary; then the final phase after the last stage, or the next
        stage, which starts from the best ``schedule.elites`` (``carried``) and a probe of the
        stage (``probe``, :func:`evores.strategies.fidelity.probe_members`), in a space narrowed
        around
        the elites (Hinz et al. 2018) when ``schedule.narrow``; ``schedule.adaptive`` may carry
        more elites and keep the space (:func:`evores.strategies.fidelity.plan_next_stage`). A
        stage in
        which no evaluation succeeded ends the run there: phase :data:`DONE`, no final
        candidates."""
        state = self.state
        stage = state["stage"]
        scores = state["stage_scores"]
        transition = state["transitions"][-1] if stage > 0 else None
        state["stages"].append(
            {
                "resolution": self.resolution,
                "n_evaluations": state["stage_used"],
                "best_val_accuracy": max(scores) if scores else None,
                "wall_seconds": elapsed - state["stage_started"],
                "rank_correlation": transition["rank_correlation"] if transition else None,
            }
        )
        pool = state.pop("stage_members", [])
        if not scores:
            # Nothing succeeded: the elites carried up would be arbitrary genomes that all
            # scored the penalty, and the final retraining would have no candidate. The run
            # ends here, without a winner (evores.reporting.outcome says why).
            self.finish([])
            return
        if stage + 1 == len(self.schedule["resolutions"]):
            state.pop("unnarrowed", None)
            state["phase"] = FINAL
            return
        n_elites, narrow = self.schedule["elites"], self.schedule["narrow"]
        if self.schedule.get("adaptive"):
            n_elites, narrow = fidelity.plan_next_stage(state, self.schedule)
        elites = best(state["population"], n_elites)
        room = self.schedule["evaluations"][stage + 1] - len(elites)
        probe = fidelity.probe_members(pool, elites, min(self.probe_size, max(room, 0)))
        space = SearchSpace.from_dict(state["space"])
        if self.schedule.get("adaptive") and narrow:
            state["unnarrowed"] = space.to_dict()  # restored if the next transition is weak
        if narrow:
            space = space.narrow([m["hparams"] for m in elites], self.schedule["narrow_margin"])
        state.update(
            stage=stage + 1,
            stage_used=0,
            stage_scores=[],
            stage_started=elapsed,
            carried=elites,
            **({"stage_best": []} if "stage_best" in state else {}),
            space=space.to_dict(),
        )
        if self.probe_size:
            state.update(probe=probe, stage_members=[])
        self._space = None

    # -- the final phase ---------------------------------------------------------------------

    def final_tasks(self) -> list[Task]:
        """Retrain the best ``schedule.elites`` successful evaluations of the last stage on
        train + validation at the final resolution, for their best epoch count, and test them
        once.

        The best evaluations at the final resolution, whatever the population kept: a fidelity
        probe member outside the narrowed space never joins the population, and a generational
        population may replace a better member. Where the proxy ranked wrongly, such a genome
        is often the best one at the final resolution (the peer study found probe members at
        0.216 beside elites at chance). A run whose state predates ``stage_best`` retrains the
        best of its population, as it did when it started."""
        pool = self.state.get("stage_best", self.state["population"])
        candidates = [m for m in pool if m["status"] == OK]
        resolutions = self.schedule["resolutions"]
        return [
            make_task(
                [len(resolutions), 0, index],
                KIND_FINAL,
                candidate["hparams"],
                resolutions[-1],
                derive_seed(self.seed, "final", index),
                epochs=max(1, candidate["best_epoch"]),
                val_accuracy=candidate["fitness"],
            )
            for index, candidate in enumerate(best(candidates, self.schedule["elites"]))
        ]

    def finish(self, entries: list[dict[str, Any]]) -> None:
        """The final candidates' entries are all in: the run is done."""
        self.state["final"] = entries
        self.state["phase"] = DONE

    def winner(self) -> dict[str, Any] | None:
        """The final candidate with the best validation accuracy (never chosen by test score)."""
        scored = [f for f in self.state["final"] if f["status"] == OK]
        return max(scored, key=lambda f: f["val_accuracy"]) if scored else None


class ClimbsLadder:
    """What every search up the ladder offers, read from the :class:`Ladder` it holds.

    ``LadderSearch`` and ``SteadyStateSearch`` are both such a search (a true "is a"): they
    differ in how they ask and tell, and set ``self.ladder``; nothing here is overridden.
    """

    ladder: Ladder

    @property
    def state(self) -> dict[str, Any]:
        """All of the search's state, plain data: the checkpoint."""
        return self.ladder.state

    @property
    def phase(self) -> str:
        return self.state["phase"]

    @property
    def done(self) -> bool:
        return self.state["phase"] == DONE

    @property
    def stage(self) -> int:
        return self.ladder.stage

    @property
    def resolution(self) -> int:
        return self.ladder.resolution

    def progress(self) -> Progress:
        return self.ladder.progress()

    def winner(self) -> dict[str, Any] | None:
        """The final candidate with the best validation accuracy (never chosen by test score)."""
        return self.ladder.winner()

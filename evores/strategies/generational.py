"""Evolution up the resolution ladder, as an ask/tell loop over plain data.

The search never trains anything and never talks to MPI: ``ask`` hands out a generation of
tasks, ``tell`` takes their results. All of its state is one plain dict (``state``), written
as the checkpoint after every generation; every random draw comes from a generator derived
from (run seed, stage, generation), so a resumed search continues exactly where it stopped.

A stage is a resolution with an evaluation budget. Within a stage the genetic algorithm runs
select (tournament) -> vary (crossover, mutation) -> evaluate -> keep the best (elitism). At
a stage change the top-k elites are re-evaluated at the new resolution and, with their mutated
offspring, seed the next population; the search ranges may narrow around them (Hinz et al.
2018). After the last stage the best k are retrained on train + validation at the final
resolution and scored once on the test split. The stage bookkeeping it shares with
``evores.strategies.steady`` lives in ``evores.strategies.ladder``; the state adds ``generation``
to its keys.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from evores.core.results import KIND_SEARCH, Task, make_task
from evores.core.seeding import derive_rng, derive_seed
from evores.strategies.ladder import (
    DONE,
    FINAL,
    SEARCH,
    ClimbsLadder,
    Ladder,
    best,
    final_entry,
    member,
)
from evores.strategies.state import GenerationalState, upgrade
from evores.strategies.tpe import tpe_genomes


class LadderSearch(ClimbsLadder):
    """Genetic (``ga``), random or TPE (``tpe``) search over ``space`` under the schedule."""

    def __init__(self, config: dict[str, Any], state: GenerationalState | None = None):
        self.seed = config["seed"]
        self.schedule = config["schedule"]
        self.search = config["search"]
        state = upgrade(copy.deepcopy(state)) if state is not None else self._initial_state(config)
        self.ladder = Ladder(config, state)

    @staticmethod
    def _initial_state(config: dict[str, Any]) -> GenerationalState:
        shared = Ladder.initial_state(config)
        # "generation" right after "stage", where checkpoints have always had it.
        head = {key: shared.pop(key) for key in ("phase", "stage")}
        state = {**head, "generation": 0, **shared}
        if config["search"]["strategy"] == "tpe":
            state["trials"] = []  # the stage's evaluations so far, which TPE is fitted to
        return state

    # -- ask ---------------------------------------------------------------------------------

    def ask(self) -> list[Task]:
        """The next generation's tasks; empty when the run is done."""
        phase = self.state["phase"]
        if phase == FINAL:
            return self.ladder.final_tasks()
        if phase == DONE:
            return []
        stage, generation = self.state["stage"], self.state["generation"]
        rng = derive_rng(self.seed, "breed", stage, generation)
        if stage == 0 and generation == 0:  # search.initial's genomes, then samples
            initial = copy.deepcopy(self.search["initial"])
            return self._tasks(
                initial + self._samples(rng, self.search["population"] - len(initial))
            )
        if generation == 0:
            return self._stage_change_tasks(rng)
        return self._tasks(self._offspring(rng, self._offspring_count()))

    def _offspring_count(self) -> int:
        return min(self.search["population"] - self.search["elitism"], self.ladder.remaining())

    def _tasks(self, genomes: list[dict], extra: list[dict] | None = None) -> list[Task]:
        stage, generation = self.state["stage"], self.state["generation"]
        return [
            make_task(
                [stage, generation, index],
                KIND_SEARCH,
                hparams,
                self.resolution,
                derive_seed(self.seed, "eval", stage, generation, index),
                **(extra[index] if extra is not None and index < len(extra) else {}),
            )
            for index, hparams in enumerate(genomes)
        ]

    def _samples(self, rng: np.random.Generator, count: int) -> list[dict]:
        space = self.ladder.space()
        return [self.ladder.toolbox.sample(space, rng) for _ in range(count)]

    def _offspring(self, rng: np.random.Generator, count: int) -> list[dict]:
        if self.search["strategy"] == "random":
            return self._samples(rng, count)
        if self.search["strategy"] == "tpe":
            return self._tpe(rng, count)
        population = self.state["population"]
        fitnesses = [m["fitness"] for m in population]
        picks = self.ladder.toolbox.select(fitnesses, count, rng=rng)
        return self.ladder.vary([population[i]["hparams"] for i in picks], rng)

    def _stage_change_tasks(self, rng: np.random.Generator) -> list[Task]:
        """Re-evaluate the carried elites and the probe at the new resolution, plus offspring
        of the elites."""
        elites, probe = self.state["carried"], self.state.get("probe", [])
        fill = max(min(self.search["population"], self.ladder.remaining()) - len(elites), 0)
        fill = max(fill - len(probe), 0)
        if self.search["strategy"] == "random":
            children = self._samples(rng, fill)
        elif self.search["strategy"] == "tpe":
            children = self._tpe(rng, fill)
        else:
            picks = rng.integers(len(elites), size=fill)
            children = self.ladder.vary([elites[i]["hparams"] for i in picks], rng)
        below = self.state["stage"] - 1
        extra = [{"elite_of": [below, m["fitness"]]} for m in elites]
        extra += [{"probe_of": [below, m["fitness"]]} for m in probe]
        return self._tasks([m["hparams"] for m in elites + probe] + children, extra)

    def _tpe(self, rng: np.random.Generator, count: int) -> list[dict]:
        """TPE fitted to this stage's evaluations, warm-started by the carried elites (with
        their fitness from the stage below) until their re-evaluation here is told."""
        stage = self.state["stage"]
        told = [m for m in self.state["trials"] if m["key"][0] == stage]
        warm = self.state.get("carried", []) if self.state["generation"] == 0 else []
        seed = int(rng.integers(2**32))
        return tpe_genomes(self.ladder.space(), warm + told, seed, count)

    # -- tell --------------------------------------------------------------------------------

    def tell(self, tasks: list[Task], results: list[dict], elapsed: float) -> None:
        """Take one generation's results (in task order); ``elapsed`` is the run's clock."""
        pairs = list(zip(tasks, results, strict=True))
        if self.state["phase"] == FINAL:
            self.ladder.finish([final_entry(task, result) for task, result in pairs])
            return
        members = [member(task, result) for task, result in pairs]
        self.ladder.count(members)
        if self.state["generation"] == 0 and self.state["stage"] > 0:
            # The elites are bred from only in this first generation.
            elites, probe = self.state.pop("carried"), self.state.pop("probe", [])
            n = len(elites) + len(probe)
            self.ladder.record_transition(elites + probe, members[:n], len(elites))
            first, rest = members[len(elites) : n], members[n:]
            members = members[: len(elites)] + [m for m in first if self.ladder.fits(m)] + rest
        self.state["population"] = self._survivors(members)
        self.state["generation"] += 1
        if self.ladder.remaining() <= 0:
            self.ladder.close_stage(elapsed)
            if self.state["phase"] == SEARCH:
                self.state["generation"] = 0
        if self.search["strategy"] == "tpe":
            self.state["trials"] = self._stage_trials(members)

    def _stage_trials(self, members: list[dict]) -> list[dict]:
        """The current stage's evaluations, which TPE is fitted to (none after a change)."""
        told = self.state["trials"] + members
        return [m for m in told if m["key"][0] == self.state["stage"]]

    def _survivors(self, members: list[dict]) -> list[dict]:
        population = self.search["population"]
        if self.state["generation"] == 0:
            return members
        if self.search["strategy"] in ("random", "tpe"):
            return best(self.state["population"] + members, population)
        keep = population - len(members)
        return best(self.state["population"], keep) + members

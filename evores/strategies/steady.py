"""Asynchronous steady-state evolution up the resolution ladder, one task at a time.

``SteadyStateSearch`` is the ``search.asynchronous = true`` sibling of ``LadderSearch``:
instead of a generation barrier, ``ask_one`` breeds one individual from the current population
whenever a worker frees and ``tell_one`` inserts one result. Both hold an
``evores.strategies.ladder.Ladder``
for what they share (operators, stage bookkeeping, final phase), so their states have the same
keys where they mean the same (the driver's summary and the report read either), plus:

- ``births``: tasks handed out so far in the current stage (or in the final phase);
- ``pending``: the tasks handed out and not yet told, re-issued first by a resumed search;
- ``reevaluated``: the re-evaluated elites' and probe's fitness and status at the new
  resolution (None until told);
- ``final_told``: the final phase's results by candidate, until all are in.

Stage s hands out exactly ``schedule.evaluations[s]`` tasks; its first ``schedule.elites``
births in a later stage re-evaluate the carried elites, the next ``len(probe)`` the fidelity
probe (``evores.strategies.fidelity``). The stage closes when every one of its results is in, so
stage
changes are the only barrier. Birth b of stage s draws its genome from
``derive_rng(seed, "async-breed", s, b)`` and is evaluated with
``derive_seed(seed, "async-eval", s, b)``; what it breeds from is the population at the moment
it is asked, which depends on the order results arrived in.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from evores.core.results import KIND_FINAL, KIND_SEARCH, OK, Task, make_task
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
from evores.strategies.state import SteadyState, upgrade
from evores.strategies.tpe import tpe_genomes


class SteadyStateSearch(ClimbsLadder):
    """Steady-state genetic (``ga``), random or TPE search: ``ask_one``/``tell_one``."""

    def __init__(self, config: dict[str, Any], state: SteadyState | None = None):
        self.seed = config["seed"]
        self.schedule = config["schedule"]
        self.search = config["search"]
        state = upgrade(copy.deepcopy(state)) if state is not None else self._initial_state(config)
        self.ladder = Ladder(config, state)
        # Not state: a resumed search hands out the tasks that were in flight first.
        self._reissue = [copy.deepcopy(task) for task in self.state["pending"]]

    @staticmethod
    def _initial_state(config: dict[str, Any]) -> SteadyState:
        state = {**Ladder.initial_state(config), "births": 0, "pending": []}
        if config["search"]["strategy"] == "tpe":
            state["trials"] = []  # the stage's evaluations so far, which TPE is fitted to
        return state

    def pending(self) -> list[Task]:
        """The tasks handed out and not yet told (copies), oldest first."""
        return copy.deepcopy(self.state["pending"])

    # -- ask ---------------------------------------------------------------------------------

    def ask_one(self) -> Task | None:
        """The next task, or None when nothing can be handed out until results come back
        (the stage's budget or the final tasks are all out) or the run is done."""
        while self._reissue:
            task = self._reissue.pop(0)
            if any(t["key"] == task["key"] for t in self.state["pending"]):
                return task  # (not if it was told meanwhile, e.g. from the evaluation log)
        phase, births = self.state["phase"], self.state["births"]
        if phase == DONE:
            return None
        if phase == FINAL:
            tasks = self.ladder.final_tasks()
            task = tasks[births] if births < len(tasks) else None
        elif births < self.ladder.budget:
            task = self._search_task(births)
        else:
            task = None
        if task is not None:
            self.state["births"] += 1
            self.state["pending"].append(task)
        return copy.deepcopy(task)

    def _search_task(self, birth: int) -> Task:
        stage = self.state["stage"]
        carried = self.state["carried"] if stage > 0 else []
        probe = self.state.get("probe", []) if stage > 0 else []
        extra = {}
        if birth < len(carried):  # a later stage starts by re-evaluating the carried elites
            # (so elite i is birth i: _tell_elite relies on it), then the probe
            hparams = carried[birth]["hparams"]
            extra["elite_of"] = [stage - 1, carried[birth]["fitness"]]
        elif birth < len(carried) + len(probe):
            hparams = probe[birth - len(carried)]["hparams"]
            extra["probe_of"] = [stage - 1, probe[birth - len(carried)]["fitness"]]
        elif stage == 0 and birth < len(self.search["initial"]):  # search.initial's genomes
            hparams = copy.deepcopy(self.search["initial"][birth])
        else:
            hparams = self._breed(derive_rng(self.seed, "async-breed", stage, birth))
        return make_task(
            [stage, birth, 0],
            KIND_SEARCH,
            hparams,
            self.resolution,
            derive_seed(self.seed, "async-eval", stage, birth),
            **extra,
        )

    def _breed(self, rng: np.random.Generator) -> dict[str, Any]:
        """One genome: tournament parents once the population is full; before that, offspring of
        the carried elites (as LadderSearch's stage change), or a sample in stage 0."""
        if self.search["strategy"] == "random":
            return self.ladder.toolbox.sample(self.ladder.space(), rng)
        if self.search["strategy"] == "tpe":
            return self._tpe(rng)
        population = self.state["population"]
        if len(population) >= self.search["population"]:
            fitnesses = [m["fitness"] for m in population]
            picks = self.ladder.toolbox.select(fitnesses, 2, rng=rng)
            parents = [population[i]["hparams"] for i in picks]
        elif self.state["stage"] > 0:
            carried = self.state["carried"]
            parents = [carried[i]["hparams"] for i in rng.integers(len(carried), size=2)]
        else:  # stage 0 before the population is full: never wait for results to breed
            return self.ladder.toolbox.sample(self.ladder.space(), rng)
        return self.ladder.vary_one(parents, rng)

    def _tpe(self, rng: np.random.Generator) -> dict[str, Any]:
        """One genome from TPE fitted to this stage's told evaluations, warm-started by the
        carried elites (fitness from the stage below) whose re-evaluation is not told yet; the
        genomes still being evaluated count as running trials."""
        stage = self.state["stage"]
        told = [m for m in self.state["trials"] if m["key"][0] == stage]
        carried = self.state.get("carried", []) if stage > 0 else []
        reevaluated = self.state.get("reevaluated", [])
        warm = [m for i, m in enumerate(carried) if reevaluated[i] is None]
        running = [t["hparams"] for t in self.state["pending"] if "elite_of" not in t]
        seed = int(rng.integers(2**32))
        [genome] = tpe_genomes(self.ladder.space(), warm + told, seed, 1, running=running)
        return genome

    # -- tell --------------------------------------------------------------------------------

    def tell_one(self, task: Task, result: dict[str, Any], elapsed: float) -> None:
        """Take the result of a pending task; ``elapsed`` is the run's clock."""
        self._take_pending(task["key"])
        if task["kind"] == KIND_FINAL:
            self._tell_final_one(task, result)
            return
        newcomer = member(task, result)
        self.ladder.count([newcomer])
        if "elite_of" in task or "probe_of" in task:
            self._tell_elite(task["key"][1], newcomer)
        # Steady-state replacement, (mu + 1): add the newcomer, then drop the worst. It keeps the
        # best genome found at this resolution (elitism without a parameter) and never trades a
        # member for a worse one; a newcomer that only ties the worst is dropped (selBest is
        # stable), so the population changes only on improvement. Same as "replace the worst if
        # better", stated without a special case for a population still filling up.
        # (A probe member outside the narrowed space is measured, but not bred from.)
        if "probe_of" not in task or self.ladder.fits(newcomer):
            self.state["population"] = best(
                self.state["population"] + [newcomer], self.search["population"]
            )
        if self.ladder.remaining() == 0:
            self._close_stage(elapsed)
        if self.search["strategy"] == "tpe":  # this stage's evaluations, which TPE is fitted to
            told = self.state["trials"] + [newcomer]
            self.state["trials"] = [m for m in told if m["key"][0] == self.state["stage"]]

    def _take_pending(self, key: list[int]) -> None:
        pending = self.state["pending"]
        for index, task in enumerate(pending):
            if task["key"] == list(key):
                del pending[index]
                return
        raise ValueError(
            f"task {list(key)} is not pending (told twice, or from another search); "
            f"pending: {[t['key'] for t in pending]}"
        )

    def _tell_elite(self, index: int, elite: dict[str, Any]) -> None:
        """Elite or probe member ``index`` (its birth) is re-evaluated; with the last of them,
        the transition is recorded."""
        reevaluated = self.state["reevaluated"]
        reevaluated[index] = {"fitness": elite["fitness"], "status": elite["status"]}
        if all(f is not None for f in reevaluated):
            # The carried elites stay: breeding needs them until the population is full.
            low = self.state["carried"] + self.state.pop("probe", [])
            # (a checkpoint written before the probe holds bare fitnesses: never failures)
            high = [f if isinstance(f, dict) else {"fitness": f, "status": OK} for f in reevaluated]
            self.ladder.record_transition(low, high, len(self.state["carried"]))

    def _close_stage(self, elapsed: float) -> None:
        self.ladder.close_stage(elapsed)
        self.state["births"] = 0
        if self.state["phase"] == SEARCH:
            self.state["population"] = []  # accuracies at another resolution do not compare
            n_measured = len(self.state["carried"]) + len(self.state.get("probe", []))
            self.state["reevaluated"] = [None] * n_measured
            return
        self.state.pop("reevaluated", None)
        self.state.pop("probe", None)
        self.state.pop("carried", None)  # as in LadderSearch's final phase
        n_final = len(self.ladder.final_tasks())
        if n_final == 0:  # no successful evaluation to retrain (LadderSearch ends the same way)
            self.ladder.finish([])
        else:
            self.state["final_told"] = [None] * n_final

    def _tell_final_one(self, task: Task, result: dict[str, Any]) -> None:
        told = self.state["final_told"]
        told[task["key"][2]] = final_entry(task, result)
        if all(entry is not None for entry in told):
            self.ladder.finish(self.state.pop("final_told"))

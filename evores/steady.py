"""Asynchronous steady-state evolution up the resolution ladder, one task at a time.

``SteadyStateSearch`` is the ``search.asynchronous = true`` counterpart of ``LadderSearch``:
instead of a generation barrier, ``ask_one`` breeds one individual from the current population
whenever a worker frees and ``tell_one`` inserts one result. It reuses LadderSearch's operators,
stage bookkeeping and final phase, and its state is one plain dict with the same keys where they
mean the same (so the driver's summary and the report plots read it unchanged), plus:

- ``births``: tasks handed out so far in the current stage (or in the final phase);
- ``pending``: the tasks handed out and not yet told, re-issued first by a resumed search;
- ``reevaluated``: the re-evaluated elites' fitness at the new resolution (None until told);
- ``final_told``: the final phase's results by candidate, until all are in.

Stage s hands out exactly ``schedule.evaluations[s]`` tasks; its first ``schedule.elites``
births in a later stage re-evaluate the carried elites. The stage closes when every one of its
results is in, so stage changes are the only barrier. Birth b of stage s draws its genome from
``derive_rng(seed, "async-breed", s, b)`` and is evaluated with
``derive_seed(seed, "async-eval", s, b)``; what it breeds from is the population at the moment
it is asked, which depends on the order results arrived in.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from evores.search import LadderSearch, _best
from evores.seeding import derive_rng, derive_seed
from evores.space import SearchSpace


class SteadyStateSearch(LadderSearch):
    """Steady-state genetic (``ga``) or random search; ``ask_one``/``tell_one`` instead of
    ``ask``/``tell``."""

    def __init__(self, config: dict[str, Any], state: dict[str, Any] | None = None):
        super().__init__(config, state)
        # Not state: a resumed search hands out the tasks that were in flight first.
        self._reissue = [copy.deepcopy(task) for task in self.state["pending"]]
        self._space: SearchSpace | None = None  # parsed state["space"], reset at stage change

    @staticmethod
    def _initial_state(config: dict[str, Any]) -> dict[str, Any]:
        state = LadderSearch._initial_state(config)
        del state["generation"]
        state.update(births=0, pending=[])
        return state

    def ask(self) -> list[dict[str, Any]]:
        raise TypeError("SteadyStateSearch hands out one task at a time: call ask_one()")

    def tell(self, tasks: list[dict], results: list[dict], elapsed: float) -> None:
        raise TypeError("SteadyStateSearch takes one result at a time: call tell_one()")

    def pending(self) -> list[dict[str, Any]]:
        """The tasks handed out and not yet told (copies), oldest first."""
        return copy.deepcopy(self.state["pending"])

    # -- ask ---------------------------------------------------------------------------------

    def ask_one(self) -> dict[str, Any] | None:
        """The next task, or None when nothing can be handed out until results come back
        (the stage's budget or the final tasks are all out) or the run is done."""
        while self._reissue:
            task = self._reissue.pop(0)
            if any(t["key"] == task["key"] for t in self.state["pending"]):
                return task  # (not if it was told meanwhile, e.g. from the evaluation log)
        phase, births = self.state["phase"], self.state["births"]
        if phase == "done":
            return None
        if phase == "final":
            tasks = self._final_tasks()
            task = tasks[births] if births < len(tasks) else None
        elif births < self.schedule["evaluations"][self.state["stage"]]:
            task = self._search_task(births)
        else:
            task = None
        if task is not None:
            self.state["births"] += 1
            self.state["pending"].append(task)
        return copy.deepcopy(task)

    def _current_space(self) -> SearchSpace:
        if self._space is None:
            self._space = SearchSpace.from_dict(self.state["space"])
        return self._space

    def _search_task(self, birth: int) -> dict[str, Any]:
        stage = self.state["stage"]
        carried = self.state["carried"] if stage > 0 else []
        task = {
            "key": [stage, birth, 0],
            "kind": "search",
            "hparams": None,
            "resolution": self.resolution,
            "seed": derive_seed(self.seed, "async-eval", stage, birth),
            "epochs": None,
        }
        if birth < len(carried):  # a later stage starts by re-evaluating the carried elites
            # (so elite i is birth i: _tell_elite relies on it)
            task["hparams"] = carried[birth]["hparams"]
            task["elite_of"] = [stage - 1, carried[birth]["fitness"]]
        else:
            task["hparams"] = self._breed(derive_rng(self.seed, "async-breed", stage, birth))
        return task

    def _breed(self, rng: np.random.Generator) -> dict[str, Any]:
        """One genome: tournament parents once the population is full; before that, offspring of
        the carried elites (as LadderSearch's stage change), or a sample in stage 0."""
        space = self._current_space()
        if self.search["strategy"] == "random":
            return self.toolbox.sample(space, rng)
        population = self.state["population"]
        if len(population) >= self.search["population"]:
            fitnesses = [member["fitness"] for member in population]
            picks = self.toolbox.select(fitnesses, 2, rng=rng)
            parents = [population[i]["hparams"] for i in picks]
        elif self.state["stage"] > 0:
            carried = self.state["carried"]
            parents = [carried[i]["hparams"] for i in rng.integers(len(carried), size=2)]
        else:  # stage 0 before the population is full: never wait for results to breed
            return self.toolbox.sample(space, rng)
        return self._vary_one(parents, space, rng)

    def _vary_one(
        self, parents: list[dict], space: SearchSpace, rng: np.random.Generator
    ) -> dict[str, Any]:
        """LadderSearch._vary for a single child (the other child of a crossover is not needed,
        so it is not mutated: that would double the cost of a birth)."""
        child = parents[0]  # mate and mutate return new dicts; parents are never changed
        if rng.random() < self.search["crossover"]:
            child, _ = self.toolbox.mate(child, parents[1], space, rng)
        if rng.random() < self.search["mutation"] or child in parents:
            child = self.toolbox.mutate(child, space, rng)
        return child

    # -- tell --------------------------------------------------------------------------------

    def tell_one(self, task: dict[str, Any], result: dict[str, Any], elapsed: float) -> None:
        """Take the result of a pending task; ``elapsed`` is the run's clock."""
        self._take_pending(task["key"])
        if task["kind"] == "final":
            self._tell_final_one(task, result)
            return
        member = self._member(task, result)
        self.state["n_evaluations"] += 1
        self.state["stage_used"] += 1
        if member["status"] == "ok":
            self.state["stage_scores"].append(member["fitness"])
        if "elite_of" in task:
            self._tell_elite(task["key"][1], member)
        # Steady-state replacement, (mu + 1): add the newcomer, then drop the worst. It keeps the
        # best genome found at this resolution (elitism without a parameter) and never trades a
        # member for a worse one; a newcomer that only ties the worst is dropped (selBest is
        # stable), so the population changes only on improvement. Same as "replace the worst if
        # better", stated without a special case for a population still filling up.
        self.state["population"] = _best(
            self.state["population"] + [member], self.search["population"]
        )
        if self.state["stage_used"] == self.schedule["evaluations"][self.state["stage"]]:
            self._end_stage(elapsed)

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

    def _tell_elite(self, index: int, member: dict[str, Any]) -> None:
        reevaluated = self.state["reevaluated"]
        reevaluated[index] = member["fitness"]
        if all(f is not None for f in reevaluated):
            self._record_transition([{"fitness": f} for f in reevaluated])

    def _record_transition(self, members: list[dict]) -> None:
        # LadderSearch pops the carried elites here; breeding still needs them until this
        # stage's population is full, so they stay until the stage ends.
        carried = self.state["carried"]
        super()._record_transition(members)
        self.state["carried"] = carried

    def _end_stage(self, elapsed: float) -> None:
        super()._end_stage(elapsed)
        self.state.pop("generation", None)
        self.state["births"] = 0
        self._space = None
        if self.state["phase"] == "search":
            self.state["population"] = []  # accuracies at another resolution do not compare
            self.state["reevaluated"] = [None] * len(self.state["carried"])
            return
        self.state.pop("reevaluated", None)
        self.state.pop("carried", None)  # as in LadderSearch's final phase
        n_final = len(self._final_tasks())
        if n_final == 0:  # no successful evaluation to retrain (LadderSearch ends the same way)
            self.state.update(phase="done", final=[])
        else:
            self.state["final_told"] = [None] * n_final

    def _tell_final_one(self, task: dict[str, Any], result: dict[str, Any]) -> None:
        told = self.state["final_told"]
        told[task["key"][2]] = self._final_entry(task, result)
        if all(entry is not None for entry in told):
            self.state["final"] = self.state.pop("final_told")
            self.state["phase"] = "done"

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
resolution and scored once on the test split.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from deap import base, tools

from evores import operators
from evores.report import spearman
from evores.seeding import derive_rng, derive_seed
from evores.space import SearchSpace


class FitnessMax(base.Fitness):
    """Validation accuracy, maximised."""

    weights = (1.0,)


class Individual(dict):
    """A genome (the canonical hparams dict) with a DEAP fitness; never leaves the driver."""

    def __init__(self, member: dict[str, Any]):
        super().__init__(member["hparams"])
        self.member = member
        self.fitness = FitnessMax((member["fitness"],))


def _best(members: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The k fittest members; ties keep population order (DEAP's selBest sorts stably)."""
    chosen = tools.selBest([Individual(m) for m in members], k)
    return [individual.member for individual in chosen]


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


class LadderSearch:
    """Genetic (``ga``) or random search over ``space`` under the resolution schedule."""

    def __init__(self, config: dict[str, Any], state: dict[str, Any] | None = None):
        self.seed = config["seed"]
        self.schedule = config["schedule"]
        self.search = config["search"]
        self.max_epochs = config["train"]["max_epochs"]
        self.state = copy.deepcopy(state) if state is not None else self._initial_state(config)
        self.toolbox = self._toolbox()

    @staticmethod
    def _initial_state(config: dict[str, Any]) -> dict[str, Any]:
        return {
            "phase": "search",
            "stage": 0,
            "generation": 0,
            "stage_used": 0,
            "n_evaluations": 0,
            "population": [],
            "space": SearchSpace.from_dict(config["space"]).to_dict(),
            "stage_scores": [],
            "stage_started": 0.0,
            "stages": [],
            "transitions": [],
            "final": [],
        }

    def _toolbox(self) -> base.Toolbox:
        toolbox = base.Toolbox()
        toolbox.register("sample", lambda space, rng: space.sample(rng))
        toolbox.register("mate", operators.crossover)
        toolbox.register(
            "mutate",
            operators.mutate,
            gene_prob=self.search["mutation_genes"],
            sigma=self.search["mutation_sigma"],
        )
        toolbox.register("select", operators.tournament, size=self.search["tournament"])
        return toolbox

    # -- progress --------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.state["phase"] == "done"

    @property
    def stage(self) -> int:
        return self.state["stage"]

    @property
    def resolution(self) -> int:
        return self.schedule["resolutions"][self.state["stage"]]

    @property
    def total_evaluations(self) -> int:
        return sum(self.schedule["evaluations"])

    def stage_best_and_median(self) -> tuple[float | None, float | None]:
        scores = self.state["stage_scores"]
        return (max(scores) if scores else None), _median(scores)

    # -- ask ---------------------------------------------------------------------------------

    def ask(self) -> list[dict[str, Any]]:
        """The next generation's tasks; empty when the run is done."""
        phase = self.state["phase"]
        if phase == "final":
            return self._final_tasks()
        if phase == "done":
            return []
        space = SearchSpace.from_dict(self.state["space"])
        rng = derive_rng(self.seed, "breed", self.state["stage"], self.state["generation"])
        if self.state["stage"] == 0 and self.state["generation"] == 0:
            genomes = [self.toolbox.sample(space, rng) for _ in range(self.search["population"])]
            return self._tasks(genomes)
        if self.state["generation"] == 0:
            return self._stage_change_tasks(space, rng)
        return self._tasks(self._offspring(space, rng, self._offspring_count()))

    def _remaining(self) -> int:
        budget = self.schedule["evaluations"][self.state["stage"]]
        return budget - self.state["stage_used"]

    def _offspring_count(self) -> int:
        return min(self.search["population"] - self.search["elitism"], self._remaining())

    def _tasks(self, genomes: list[dict], extra: list[dict] | None = None) -> list[dict]:
        stage, generation = self.state["stage"], self.state["generation"]
        tasks = []
        for index, hparams in enumerate(genomes):
            task = {
                "key": [stage, generation, index],
                "kind": "search",
                "hparams": hparams,
                "resolution": self.resolution,
                "seed": derive_seed(self.seed, "eval", stage, generation, index),
                "epochs": None,
            }
            if extra is not None and index < len(extra):
                task.update(extra[index])
            tasks.append(task)
        return tasks

    def _offspring(self, space: SearchSpace, rng: np.random.Generator, count: int) -> list[dict]:
        if self.search["strategy"] == "random":
            return [self.toolbox.sample(space, rng) for _ in range(count)]
        population = self.state["population"]
        fitnesses = [member["fitness"] for member in population]
        parents = [population[i]["hparams"] for i in self.toolbox.select(fitnesses, count, rng=rng)]
        return self._vary(parents, space, rng)

    def _vary(
        self, parents: list[dict], space: SearchSpace, rng: np.random.Generator
    ) -> list[dict]:
        """Crossover of consecutive parents, then mutation; a child equal to a parent mutates."""
        children = [copy.deepcopy(p) for p in parents]
        for i in range(0, len(children) - 1, 2):
            if rng.random() < self.search["crossover"]:
                children[i], children[i + 1] = self.toolbox.mate(
                    children[i], children[i + 1], space, rng
                )
        for i, child in enumerate(children):
            if rng.random() < self.search["mutation"] or child in parents:
                children[i] = self.toolbox.mutate(child, space, rng)
        return children

    def _stage_change_tasks(self, space: SearchSpace, rng: np.random.Generator) -> list[dict]:
        """Re-evaluate the carried elites at the new resolution, plus offspring of theirs."""
        elites = self.state["carried"]
        fill = min(self.search["population"], self._remaining()) - len(elites)
        if self.search["strategy"] == "random":
            children = [self.toolbox.sample(space, rng) for _ in range(max(fill, 0))]
        else:
            picks = rng.integers(len(elites), size=max(fill, 0))
            children = self._vary([elites[i]["hparams"] for i in picks], space, rng)
        extra = [{"elite_of": [self.state["stage"] - 1, member["fitness"]]} for member in elites]
        return self._tasks([m["hparams"] for m in elites] + children, extra)

    def _final_tasks(self) -> list[dict]:
        candidates = [m for m in self.state["population"] if m["status"] == "ok"]
        chosen = _best(candidates, self.schedule["elites"])
        return [
            {
                "key": [len(self.schedule["resolutions"]), 0, index],
                "kind": "final",
                "hparams": member["hparams"],
                "resolution": self.schedule["resolutions"][-1],
                "seed": derive_seed(self.seed, "final", index),
                "epochs": max(1, member["best_epoch"]),
                "val_accuracy": member["fitness"],
            }
            for index, member in enumerate(chosen)
        ]

    # -- tell --------------------------------------------------------------------------------

    def tell(self, tasks: list[dict], results: list[dict], elapsed: float) -> None:
        """Take one generation's results (in task order); ``elapsed`` is the run's clock."""
        if self.state["phase"] == "final":
            self._tell_final(tasks, results)
            return
        members = [self._member(task, result) for task, result in zip(tasks, results, strict=True)]
        self.state["n_evaluations"] += len(members)
        self.state["stage_used"] += len(members)
        self.state["stage_scores"] += [m["fitness"] for m in members if m["status"] == "ok"]
        if self.state["generation"] == 0 and self.state["stage"] > 0:
            self._record_transition(members)
        self.state["population"] = self._survivors(members)
        self.state["generation"] += 1
        if self._remaining() <= 0:
            self._end_stage(elapsed)

    @staticmethod
    def _member(task: dict, result: dict) -> dict[str, Any]:
        ok = result["status"] == "ok"
        return {
            "hparams": task["hparams"],
            "fitness": float(result["val_accuracy"]) if ok else 0.0,
            "status": result["status"],
            "best_epoch": int(result.get("best_epoch") or 0),
            "key": task["key"],
        }

    def _survivors(self, members: list[dict]) -> list[dict]:
        population = self.search["population"]
        if self.state["generation"] == 0:
            return members
        if self.search["strategy"] == "random":
            return _best(self.state["population"] + members, population)
        keep = population - len(members)
        return _best(self.state["population"], keep) + members

    def _record_transition(self, members: list[dict]) -> None:
        elites = self.state.pop("carried")
        low = [member["fitness"] for member in elites]
        high = [member["fitness"] for member in members[: len(elites)]]
        self.state["transitions"].append(
            {
                "from_resolution": self.schedule["resolutions"][self.state["stage"] - 1],
                "to_resolution": self.resolution,
                "low": low,
                "high": high,
                "rank_correlation": spearman(low, high),
            }
        )

    def _end_stage(self, elapsed: float) -> None:
        stage = self.state["stage"]
        best, _ = self.stage_best_and_median()
        transition = self.state["transitions"][-1] if stage > 0 else None
        self.state["stages"].append(
            {
                "resolution": self.resolution,
                "n_evaluations": self.state["stage_used"],
                "best_val_accuracy": best,
                "wall_seconds": elapsed - self.state["stage_started"],
                "rank_correlation": transition["rank_correlation"] if transition else None,
            }
        )
        if stage + 1 == len(self.schedule["resolutions"]):
            self.state["phase"] = "final"
            return
        elites = _best(self.state["population"], self.schedule["elites"])
        space = SearchSpace.from_dict(self.state["space"])
        if self.schedule["narrow"]:
            space = space.narrow([m["hparams"] for m in elites], self.schedule["narrow_margin"])
        self.state.update(
            stage=stage + 1,
            generation=0,
            stage_used=0,
            stage_scores=[],
            stage_started=elapsed,
            carried=elites,
            space=space.to_dict(),
        )

    def _tell_final(self, tasks: list[dict], results: list[dict]) -> None:
        self.state["final"] = [
            self._final_entry(task, result) for task, result in zip(tasks, results, strict=True)
        ]
        self.state["phase"] = "done"

    @staticmethod
    def _final_entry(task: dict, result: dict) -> dict[str, Any]:
        return {
            "hparams": task["hparams"],
            "val_accuracy": task["val_accuracy"],
            "test_accuracy": result.get("test_accuracy"),
            "status": result["status"],
            "reason": result.get("reason"),
            "epochs": task["epochs"],
        }

    def winner(self) -> dict[str, Any] | None:
        """The final candidate with the best validation accuracy (never chosen by test score)."""
        scored = [f for f in self.state["final"] if f["status"] == "ok"]
        return max(scored, key=lambda f: f["val_accuracy"]) if scored else None

"""PreparedData from a cache: a rung over the memory budget is read through a memory map and
trains exactly as it does in memory; the budget and the ranks of a node."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from evores.data.cache import open_cache
from evores.training import prepared
from evores.training.fitness import FitnessResult, PreparedData, evaluate, train_and_test

PX = 12
TIMING = ("wall_seconds", "seconds_per_epoch", "images_per_second", "peak_memory_bytes")
GENOME = {
    "learning_rate": 0.03,
    "conv_filters": [8],
    "conv_kernels": [3],
    "fc_units": [16],
    "batch_size": 16,
    "l1": 0.0,
    "l2": 1e-4,
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A 3-class cache of 120 learnable 12 px images (class c brightens a corner of channel c)."""
    root = tmp_path_factory.mktemp("mapped")
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 3
    images = rng.integers(0, 160, (120, PX, PX, 3))
    for c in range(3):
        images[labels == c, : PX // 2, : PX // 2, c] += 50
    with h5py.File(root / "set.h5", "w") as f:
        f["images"], f["labels"] = images.astype(np.uint8), labels
    return open_cache(root / "set.h5", [PX], cache_dir=root / "cache")


def _without_timing(result: FitnessResult) -> dict:
    return {k: v for k, v in result.to_dict().items() if k not in TIMING}


def test_a_rung_over_the_budget_is_mapped_and_one_under_it_is_not(cache):
    mapped = PreparedData.from_cache(cache.with_memory_budget(1), PX, device="cpu")
    resident = PreparedData.from_cache(cache.with_memory_budget(10**12), PX, device="cpu")
    assert mapped.mapped and not resident.mapped
    assert torch.equal(mapped.train_x, resident.train_x)
    assert torch.equal(mapped.mean, resident.mean) and torch.equal(mapped.std, resident.std)
    # The mapped images are the cache file's pages, not a private copy of them.
    assert _mapped_file(mapped.train_x.data_ptr()) == str(cache.path)
    assert _mapped_file(resident.train_x.data_ptr()) != str(cache.path)


def _mapped_file(address: int) -> str:
    """The file whose mapping holds ``address`` in this process ("" for anonymous memory)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            low, high = (int(part, 16) for part in fields[0].split("-"))
            if low <= address < high:
                return fields[5].strip() if len(fields) > 5 else ""
    return ""


def test_mapped_and_in_memory_give_the_same_evaluation(cache):
    results = [
        evaluate(
            GENOME,
            PX,
            PreparedData.from_cache(cache.with_memory_budget(budget), PX, device="cpu"),
            seed=4,
            max_epochs=2,
            patience=2,
        )
        for budget in (1, 10**12)
    ]
    assert results[0].status == "ok" and results[0].epochs == 2
    assert _without_timing(results[0]) == _without_timing(results[1])


def test_mapped_and_in_memory_give_the_same_final_retraining(cache):
    results = [
        train_and_test(
            GENOME,
            PX,
            PreparedData.from_cache(cache.with_memory_budget(budget), PX, device="cpu", final=True),
            seed=5,
            epochs=1,
        )
        for budget in (1, 10**12)
    ]
    assert results[0].status == "ok"
    assert _without_timing(results[0]) == _without_timing(results[1])


def test_the_automatic_budget_is_shared_among_the_ranks_of_a_node(monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
                "SLURM_STEP_TASKS_PER_NODE", "MPI_LOCALNRANKS"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(prepared, "available_memory", lambda: 12_000)
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "3")
    assert prepared.ranks_on_node() == 3 and prepared.memory_budget(0) == 2_000
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "4(x2)")
    assert prepared.ranks_on_node() == 4 and prepared.memory_budget(0) == 1_500
    assert prepared.memory_budget(123) == 123
    assert prepared.available_memory() == 12_000  # the stub; the real one reads the kernel


def test_available_memory_is_the_kernels_or_the_cgroups_headroom_when_lower(monkeypatch):
    assert prepared.available_memory() > 0  # the real files of this machine
    monkeypatch.setattr(prepared, "_meminfo_available", lambda: 9_000)
    monkeypatch.setattr(prepared, "_cgroup_headroom", lambda: None)
    assert prepared.available_memory() == 9_000
    monkeypatch.setattr(prepared, "_cgroup_headroom", lambda: 4_000)
    assert prepared.available_memory() == 4_000


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_the_cgroup_headroom_is_the_least_over_the_group_and_its_parents(tmp_path, version):
    """SLURM limits the job's group; the task's group below it is unlimited."""
    controller, limit, usage = {
        "v2": ("", "memory.max", "memory.current"),
        "v1": ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes"),
    }[version]
    top = tmp_path / controller if controller else tmp_path
    job = top / "slurm" / "job_7"
    task = job / "step_0" / "task_0"
    task.mkdir(parents=True)
    unlimited = "max" if version == "v2" else str(2**63 - 4096)
    for folder, (cap, used) in {job: ("8000", "3000"), task: (unlimited, "1000")}.items():
        (folder / limit).write_text(cap + "\n")
        (folder / usage).write_text(used + "\n")
    table = tmp_path / "cgroup"
    table.write_text(
        "0::/slurm/job_7/step_0/task_0\n"
        if version == "v2"
        else "4:memory:/slurm/job_7/step_0/task_0\n1:cpu,cpuacct:/\n"
    )
    assert prepared._cgroup_headroom(str(table), tmp_path) == 5000
    (job / limit).write_text(unlimited)
    assert prepared._cgroup_headroom(str(table), tmp_path) is None

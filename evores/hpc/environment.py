"""SLURM: the job environment, the job id and the GPU of each rank.

Every ``SLURM_*`` variable evores uses is read here (:class:`SlurmEnvironment`, :func:`job_id`)
and nowhere else, and checked: a stray or inconsistent value fails with one clear line instead
of binding two ranks to one GPU.

The batch scripts and ``python -m evores.slurm --config FILE.toml > job.sbatch``, which prints
the script of a run, live in :mod:`evores.hpc.sbatch`; this module hands its command line there, so
importing it loads neither the configuration nor the renderer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from evores.core.errors import ConfigError

# --------------------------------------------------------------------------- job environment


@dataclass(frozen=True)
class SlurmEnvironment:
    """What SLURM tells this process about its job and task (all values checked)."""

    job_id: int | None  # None outside a SLURM job
    restart_count: int  # times the job was requeued
    procid: int  # global task index (the MPI rank under srun)
    ntasks: int  # tasks in the step
    local_id: int  # task index on this node (SLURM_LOCALID)
    local_tasks: int  # tasks of the step on this node
    node_id: int  # index of this node in the step

    @property
    def in_job(self) -> bool:
        return self.job_id is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlurmEnvironment:
        """Read and check the ``SLURM_*`` variables of ``env`` (default: ``os.environ``)."""
        env = os.environ if env is None else env
        ntasks = _int(env, "SLURM_NTASKS", 1, minimum=1)
        node_id = _int(env, "SLURM_NODEID", 0)
        local_tasks = _local_tasks(env, node_id)
        found = cls(
            job_id=job_id(env),
            restart_count=_int(env, "SLURM_RESTART_COUNT", 0),
            procid=_int(env, "SLURM_PROCID", 0),
            ntasks=ntasks,
            local_id=_int(env, "SLURM_LOCALID", 0),
            local_tasks=local_tasks or ntasks,
            node_id=node_id,
        )
        found._check()
        return found

    def _check(self) -> None:
        if self.procid >= self.ntasks:
            raise ConfigError(
                f"SLURM_PROCID={self.procid} is not below SLURM_NTASKS={self.ntasks}; these "
                "come from an outer job or a hand-set variable: unset them or launch with srun"
            )
        if self.local_id >= self.local_tasks:
            raise ConfigError(
                f"SLURM_LOCALID={self.local_id} is not below the {self.local_tasks} task(s) of "
                "this node (SLURM_STEP_TASKS_PER_NODE / SLURM_NTASKS_PER_NODE); unset the stray "
                "SLURM_* variables or launch with srun"
            )


def job_id(env: Mapping[str, str] | None = None) -> int | None:
    """The id of this process's SLURM job (kept across requeues), or None outside a job.

    Read alone, so a caller that needs only the id does not depend on the task variables.
    """
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID", env.get("SLURM_JOBID"))
    return None if job is None else _int({"SLURM_JOB_ID": job}, "SLURM_JOB_ID", 0)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    text = env.get(name)
    if text is None:
        return default
    if not text.strip().isdigit() or int(text) < minimum:
        raise ConfigError(
            f"{name}={text!r} is not a whole number >= {minimum}; SLURM sets it for its jobs: "
            "unset it, or launch with sbatch/srun"
        )
    return int(text)


def _local_tasks(env: Mapping[str, str], node_id: int) -> int:
    """Tasks on this node: the step's per-node counts (``2(x3),1``) at this node, else 0."""
    for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        if name in env:
            counts = _expand_counts(name, env[name])
            if node_id >= len(counts):
                raise ConfigError(
                    f"SLURM_NODEID={node_id} but {name}={env[name]!r} lists {len(counts)} "
                    "node(s); unset the stray SLURM_* variables or launch with srun"
                )
            return counts[node_id]
    return _int(env, "SLURM_NTASKS_PER_NODE", 0)


def _expand_counts(name: str, text: str) -> list[int]:
    counts = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            raise ConfigError(
                f"{name}={text!r} is not a SLURM task count list like '4' or '2(x3),1'; "
                "unset it, or launch with srun"
            )
        counts += [int(match[1])] * int(match[2] or 1)
    return counts


def in_step(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a task that srun launched in a SLURM job."""
    env = os.environ if env is None else env
    return SlurmEnvironment.from_env(env).in_job and "SLURM_LOCALID" in env


def local_gpu_index(
    env: Mapping[str, str] | None = None, *, evaluations_per_gpu: int = 1
) -> int | None:
    """The index (within the visible devices) of this rank's GPU, or None for no GPU.

    The rule, for the layout the evores batch scripts launch (rank 0, the driver, is local
    task 0 of node 0; every other rank evaluates):

    * outside a SLURM job, or a task of a step whose ``CUDA_VISIBLE_DEVICES`` is empty or
      ``NoDevFiles`` (no GPU allocated): None;
    * the driver of a multi-rank run: None. It only breeds plain data, so it takes no GPU and
      every GPU gets its evaluating rank(s);
    * ``CUDA_VISIBLE_DEVICES`` names exactly one device (SLURM bound one GPU to the task, e.g.
      ``--gpus-per-task=1``): 0, that device;
    * otherwise the GPU is the rank's local task index among the evaluating ranks of its node
      (``SLURM_LOCALID - 1`` on the driver's node, node 0; ``SLURM_LOCALID`` on the others),
      integer-divided by ``evaluations_per_gpu``: K consecutive evaluating ranks share a GPU
      (``train.evaluations_per_gpu``; 1, the default, gives every rank a GPU of its own).
      Never ``rank % n_gpus``: when there are more ranks than visible GPUs hold that would
      silently stack more trainings on a GPU than asked; this raises :class:`ConfigError`.

    Without ``CUDA_VISIBLE_DEVICES`` the index is unchecked; use it only when CUDA is available.
    """
    env = os.environ if env is None else env
    slurm = SlurmEnvironment.from_env(env)
    if not slurm.in_job or "SLURM_LOCALID" not in env:
        return None
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "NoDevFiles"):
        return None
    if slurm.ntasks > 1 and slurm.procid == 0:
        return None
    devices = None if visible is None else [d for d in visible.split(",") if d.strip()]
    if devices is not None and len(devices) == 1:
        return 0
    if evaluations_per_gpu < 1:
        raise ConfigError(f"evaluations_per_gpu = {evaluations_per_gpu} must be >= 1")
    drivers_here = 1 if slurm.ntasks > 1 and slurm.node_id == 0 else 0
    index = (slurm.local_id - drivers_here) // evaluations_per_gpu
    if devices is not None and index >= len(devices):
        per_gpu = evaluations_per_gpu
        raise ConfigError(
            f"rank {slurm.procid} (SLURM_LOCALID={slurm.local_id}) needs GPU {index} but only "
            f"{len(devices)} are visible (CUDA_VISIBLE_DEVICES={visible}); run "
            f"train.evaluations_per_gpu = {per_gpu} evaluating rank(s) per GPU: "
            f"--ntasks-per-node = {per_gpu} x GPUs + 1 on the driver's node, {per_gpu} x GPUs "
            "elsewhere (or raise train.evaluations_per_gpu)"
        )
    return index

"""SLURM: the job environment, the GPU of each rank, and the sbatch scripts that launch a run.

Every ``SLURM_*`` variable evores uses is read here (:class:`SlurmEnvironment`) and nowhere
else, and checked: a stray or inconsistent value fails with one clear line instead of binding
two ranks to one GPU.

The batch scripts: ``slurm/evores.sbatch`` (one node), ``slurm/evores-multinode.sbatch`` and
``slurm/evores-cpu.sbatch`` are a hand-written header (usage, ``#SBATCH`` defaults) followed by
a body that lives here, in :data:`BODY_START`, :data:`LAUNCH` and :data:`BODY_END`
(tests/test_slurm.py checks that each file's body equals :func:`script_body` for its mode, so
edit the text here and copy it there).
:func:`render_sbatch` writes the same body under ``#SBATCH`` flags computed from the run's
``[slurm]`` config section: ``python -m evores.slurm --config FILE.toml > job.sbatch``.

Walltime and requeue (the body): the job asks SLURM for SIGUSR1 to the batch shell some time
before the limit (``--signal=B:USR1@N``). The shell forwards it to ``srun``, which forwards it to
every rank; rank 0 stops handing out work, checkpoints and exits with :data:`EXIT_CHECKPOINTED`.
When the step has ended without ``summary.json`` and either the signal came or the driver exited
with that code, the shell runs ``scontrol requeue $SLURM_JOB_ID``: the job restarts with the same
id, hence the same run directory, and the script passes ``--resume`` because that directory
already holds ``config.toml``.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evores.errors import ConfigError, EvoresError

# The driver's exit code after a clean checkpoint on SIGUSR1/SIGTERM: "try again later"
# (EX_TEMPFAIL in sysexits.h). The batch shell requeues the job when it sees it.
EXIT_CHECKPOINTED = 75

# The [slurm] section of a run config: key -> default (the type is the default's type).
DEFAULTS: dict[str, Any] = {
    "partition": "",  # "" = the cluster's default partition
    "account": "",  # "" = the user's default account
    "time": "01:00:00",  # walltime per allocation; a requeued job gets it again
    "nodes": 1,
    "gpus_per_node": 0,  # 0 = CPU only
    "cpus_per_task": 1,
    "workers_per_node": 0,  # evaluating ranks per node; 0 = one per GPU, or 2 without GPUs
    "signal_seconds": 120,  # walltime warning (SIGUSR1) this long before the limit; 0 = none
    "extra": [],  # more sbatch flags, "--flag=value" or "--flag"; they replace generated ones
}

MODES = ("single", "multinode", "cpu")


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
        job = env.get("SLURM_JOB_ID", env.get("SLURM_JOBID"))
        ntasks = _int(env, "SLURM_NTASKS", 1, minimum=1)
        node_id = _int(env, "SLURM_NODEID", 0)
        local_tasks = _local_tasks(env, node_id)
        found = cls(
            job_id=None if job is None else _int({"SLURM_JOB_ID": job}, "SLURM_JOB_ID", 0),
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


def local_gpu_index(env: Mapping[str, str] | None = None) -> int | None:
    """The index (within the visible devices) of this rank's GPU, or None for no GPU.

    The rule, for the layout the evores batch scripts launch (rank 0, the driver, is local
    task 0 of node 0; every other rank evaluates):

    * outside a SLURM job, or a task of a step whose ``CUDA_VISIBLE_DEVICES`` is empty or
      ``NoDevFiles`` (no GPU allocated): None;
    * the driver of a multi-rank run: None. It only breeds plain data, so it takes no GPU and
      every GPU gets one evaluating rank;
    * ``CUDA_VISIBLE_DEVICES`` names exactly one device (SLURM bound one GPU to the task, e.g.
      ``--gpus-per-task=1``): 0, that device;
    * otherwise the GPU is the rank's local task index among the evaluating ranks of its node:
      ``SLURM_LOCALID - 1`` on the driver's node (node 0), ``SLURM_LOCALID`` on the others.
      Never ``rank % n_gpus``: when there are more ranks than visible GPUs that would silently
      stack two trainings on one GPU; this raises :class:`ConfigError` instead.

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
    drivers_here = 1 if slurm.ntasks > 1 and slurm.node_id == 0 else 0
    index = slurm.local_id - drivers_here
    if devices is not None and index >= len(devices):
        raise ConfigError(
            f"rank {slurm.procid} (SLURM_LOCALID={slurm.local_id}) needs GPU {index} but only "
            f"{len(devices)} are visible (CUDA_VISIBLE_DEVICES={visible}); run one evaluating "
            "rank per GPU: --ntasks-per-node = GPUs + 1 on the driver's node, GPUs elsewhere"
        )
    return index


# --------------------------------------------------------------------------- requeue


class SlurmError(EvoresError):
    """A SLURM command is missing or failed."""


def requeue(job_id: int | str) -> None:
    """``scontrol requeue JOBID``: put the (running) job back in the queue to resume later."""
    if shutil.which("scontrol") is None:
        raise SlurmError(
            f"cannot requeue job {job_id}: scontrol is not on PATH; run inside a SLURM job "
            "or install the SLURM client commands"
        )
    result = subprocess.run(
        ["scontrol", "requeue", str(job_id)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        message = " ".join(result.stderr.split()) or f"exit code {result.returncode}"
        raise SlurmError(f"scontrol requeue {job_id} failed: {message}")


# --------------------------------------------------------------------------- batch scripts


def _script(text: str) -> str:
    return text.removeprefix("\n")


# The shared body of every evores batch script. The header before it sets `python` and, in
# rendered scripts, the positional arguments; LAUNCH[mode] starts the MPI step in between.
BODY_START = _script(
    r"""
# ---- from here on: evores.slurm.script_body(); keep the copies in slurm/*.sbatch equal ----
# Not `set -e`: the exit status of srun is examined below.
set -uo pipefail

config=${1:?usage: sbatch [sbatch options] SCRIPT CONFIG.toml [RUN_DIR] [evores.run arguments]}
# The default run directory is named by the job id, which a requeued job keeps.
run_dir=${2:-runs/$SLURM_JOB_ID}
shift $(( $# < 2 ? $# : 2 ))
summary=$run_dir/summary.json
checkpointed=75  # the driver's exit code after checkpointing on SIGUSR1 / SIGTERM
max_restarts=${EVORES_MAX_RESTARTS:-20}  # a run that never gets further must not loop forever

if [ -f "$summary" ]; then
    echo "evores: $summary exists: the run is finished, nothing to do"
    exit 0
fi
# A run directory that holds config.toml is a run to continue (after a requeue, say).
resume=()
if [ -f "$run_dir/config.toml" ]; then
    resume=(--resume)
fi

# SLURM sends the walltime warning, SIGUSR1, to this shell only (--signal=B:USR1@N). Forward it
# to srun, which passes it to every rank: rank 0 stops handing out work, lets the running
# evaluations finish, checkpoints and exits with $checkpointed; the workers then exit 0.
warned=0
step=
warn() {
    warned=1
    echo "evores: walltime warning (SIGUSR1): asking the run to checkpoint" >&2
    if [ -n "$step" ]; then
        kill -USR1 "$step" 2>/dev/null
    fi
}
trap warn USR1
# SIGTERM (scancel, time limit, preemption) reaches every rank from SLURM itself. This shell
# only stays alive until they have stopped (SLURM kills everything after KillWait); no requeue.
trap 'echo "evores: SIGTERM: waiting for the ranks to stop" >&2' TERM

# Bash runs a trap only between commands, so srun runs in the background while the shell waits.
"""
)

LAUNCH = {
    "single": _script(
        r"""
# Rank 0 drives; ranks 1..n-1 evaluate, one per GPU when the job has GPUs (the driver takes
# none: see evores.slurm.local_gpu_index). srun of SLURM 22.05 does not inherit --cpus-per-task.
srun --mpi=pmi2 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" \
    "$python" -m evores.run --config "$config" --out "$run_dir" "${resume[@]}" "$@" &
"""
    ),
    "multinode": _script(
        r"""
# The job has workers + 1 task slots on every node. Rank 0 (the driver) goes on the first node,
# then `workers` evaluating ranks on every node, one per GPU: SLURM_HOSTFILE names the node of
# each rank in rank order, and --distribution=arbitrary follows it.
workers=$(( ${SLURM_NTASKS_PER_NODE:?submit with --ntasks-per-node=GPUS_PER_NODE+1} - 1 ))
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
export SLURM_HOSTFILE=${TMPDIR:-/tmp}/evores-hosts.$SLURM_JOB_ID
{
    echo "${nodes[0]}"
    for node in "${nodes[@]}"; do
        for (( i = 0; i < workers; i++ )); do echo "$node"; done
    done
} > "$SLURM_HOSTFILE"
srun --mpi=pmi2 --distribution=arbitrary --ntasks=$(( ${#nodes[@]} * workers + 1 )) \
    --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" \
    "$python" -m evores.run --config "$config" --out "$run_dir" "${resume[@]}" "$@" &
"""
    ),
    "cpu": _script(
        r"""
# CPU only: as many ranks as the node's CPUs hold at `threads` intra-op threads each, rank 0
# (the driver) included. EVORES_THREADS sets the threads per rank.
threads=${EVORES_THREADS:-2}
ranks=$(( SLURM_CPUS_ON_NODE / threads ))
if (( ranks < 2 )); then
    echo "evores: $SLURM_CPUS_ON_NODE CPUs < 2 ranks x $threads threads; lower EVORES_THREADS" >&2
    exit 2
fi
srun --mpi=pmi2 --ntasks="$ranks" --cpus-per-task="$threads" \
    "$python" -m evores.run --config "$config" --out "$run_dir" "${resume[@]}" \
    --set "train.threads=$threads" "$@" &
"""
    ),
}

BODY_END = _script(
    r"""
step=$!
if (( warned )); then
    kill -USR1 "$step"  # the warning came before srun started
fi
# A trapped signal ends `wait` early while srun keeps running: wait until srun has exited, then
# once more for its exit status (bash keeps it).
wait "$step"
while kill -0 "$step" 2>/dev/null; do
    wait "$step"
done
wait "$step"
status=$?

if [ -f "$summary" ]; then
    echo "evores: run finished; summary in $summary"
    exit 0
fi
if (( warned || status == checkpointed )); then
    if (( ${SLURM_RESTART_COUNT:-0} >= max_restarts )); then
        echo "evores: not requeueing: restarted $max_restarts times (EVORES_MAX_RESTARTS)" >&2
        exit "$status"
    fi
    # Same job id, so the same run directory: the next start passes --resume.
    echo "evores: run not finished (srun exit $status): requeueing job $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID" || exit "$status"
    exit 0
fi
exit "$status"
"""
)


def script_body(mode: str = "single") -> str:
    """The body of the batch script for ``mode`` (single, multinode or cpu)."""
    if mode not in LAUNCH:
        raise ConfigError(f"unknown batch script mode {mode!r}; use one of {', '.join(MODES)}")
    return BODY_START + LAUNCH[mode] + BODY_END


def settings(section: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``[slurm]`` section with defaults filled in, every value checked."""
    values = dict(DEFAULTS, extra=list(DEFAULTS["extra"]))
    for key, value in (section or {}).items():
        if key not in DEFAULTS:
            raise ConfigError(f"unknown key slurm.{key}; valid keys: {', '.join(sorted(DEFAULTS))}")
        values[key] = _typed(key, value)
    for key in ("nodes", "cpus_per_task"):
        if values[key] < 1:
            raise ConfigError(f"slurm.{key} must be >= 1, got {values[key]}")
    for key in ("gpus_per_node", "workers_per_node", "signal_seconds"):
        if values[key] < 0:
            raise ConfigError(f"slurm.{key} must be >= 0, got {values[key]}")
    if values["gpus_per_node"] and values["workers_per_node"] > values["gpus_per_node"]:
        raise ConfigError(
            f"slurm.workers_per_node = {values['workers_per_node']} exceeds slurm.gpus_per_node = "
            f"{values['gpus_per_node']}: each evaluating rank needs its own GPU; use at most that "
            "many, or 0 for one per GPU"
        )
    limit = walltime_seconds(values["time"])
    if values["signal_seconds"] >= limit:
        raise ConfigError(
            f"slurm.signal_seconds = {values['signal_seconds']} is not below slurm.time = "
            f"{values['time']!r} ({limit} s); warn earlier than the walltime or give more time"
        )
    for flag in values["extra"]:
        if not re.fullmatch(r"--[a-z][a-z0-9-]*(=.*)?", flag, flags=re.DOTALL):
            raise ConfigError(
                f"slurm.extra entry {flag!r} is not a long sbatch flag; write '--flag=value' "
                "or '--flag', e.g. '--qos=high'"
            )
    return values


def _typed(key: str, value: Any) -> Any:
    default = DEFAULTS[key]
    if isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = "a list of strings" if isinstance(default, list) else type(default).__name__
        raise ConfigError(f"slurm.{key} must be {kind}, got {value!r}; e.g. {key} = {default!r}")
    return list(value) if isinstance(value, list) else value


def walltime_seconds(text: str) -> int:
    """SLURM's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> seconds."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if match:
        days, first, second, third = (int(g) if g else 0 for g in match.groups())
        if match[1]:  # D-H, D-H:M, D-H:M:S
            seconds = ((days * 24 + first) * 60 + second) * 60 + third
        elif match[4]:  # H:M:S
            seconds = (first * 60 + second) * 60 + third
        else:  # M, M:S
            seconds = first * 60 + second
        if seconds > 0:
            return seconds
    raise ConfigError(
        f"slurm.time {text!r} is not a positive SLURM time; use e.g. '01:00:00' (H:M:S), "
        "'90' (minutes) or '2-00:00:00' (days-H:M:S)"
    )


def sbatch_flags(slurm: Mapping[str, Any]) -> dict[str, str | None]:
    """The ``#SBATCH`` flags of checked :func:`settings` (None: a flag without a value)."""
    gpus, nodes = slurm["gpus_per_node"], slurm["nodes"]
    workers = slurm["workers_per_node"] or gpus or 2
    flags: dict[str, str | None] = {
        "job-name": "evores",
        "nodes": str(nodes),
        "cpus-per-task": str(slurm["cpus_per_task"]),
        "time": slurm["time"],
        "requeue": None,
        "open-mode": "append",  # a requeued job appends to the same output file
        "output": "evores-%j.out",
    }
    # One slot for the driver; the multinode body places it on the first node only.
    if nodes > 1:
        flags["ntasks-per-node"] = str(workers + 1)
    else:
        flags["ntasks"] = str(workers + 1)
    if gpus:
        flags["gpus-per-node"] = str(gpus)
    if slurm["signal_seconds"]:
        flags["signal"] = f"B:USR1@{slurm['signal_seconds']}"
    for key in ("partition", "account"):
        if slurm[key]:
            flags[key] = slurm[key]
    for flag in slurm["extra"]:
        name, sep, value = flag[2:].partition("=")
        flags[name] = value if sep else None
    return flags


def render_sbatch(
    config: Mapping[str, Any], *, config_path: str | Path, run_dir: str | Path | None,
    python: str = "python",
) -> str:  # fmt: skip
    """The batch script for a run: sorted, shell-quoted ``#SBATCH`` flags, then the body.

    ``config`` is the run config (its ``[slurm]`` section is read, defaults filled in);
    ``run_dir`` None leaves the default, ``runs/<job id>``.
    """
    slurm = settings(config.get("slurm"))
    flags = sbatch_flags(slurm)
    lines = [
        "#!/bin/bash",
        "# An evores run, written by `python -m evores.slurm` from the [slurm] section of its",
        "# config. Submit with `sbatch FILE`; arguments after FILE go to `python -m evores.run`.",
    ]
    for name in sorted(flags):
        value = flags[name]
        lines.append(f"#SBATCH --{name}" + ("" if value is None else f"={shlex.quote(value)}"))
    positional = [str(config_path), "" if run_dir is None else str(run_dir)]
    lines.append("set -- " + " ".join(shlex.quote(p) for p in positional) + ' "$@"')
    lines.append(f"python={shlex.quote(python)}")
    mode = "multinode" if slurm["nodes"] > 1 else "single"
    return "\n".join(lines) + "\n" + script_body(mode)


# --------------------------------------------------------------------------- command line


def load_config(path: str | Path) -> dict[str, Any]:
    """The run config of ``path``, checked by evores.config, its ``[slurm]`` section included."""
    from evores import config as configuration

    return configuration.load(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evores.slurm",
        description="Print the sbatch script of a run (from its config's [slurm] section).",
    )
    parser.add_argument("--config", type=Path, required=True, help="the run's TOML file")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<job id>)")
    parser.add_argument("--python", default="python", help="the python the job runs")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except EvoresError as error:
        print(f"evores.slurm: error: {error}", file=sys.stderr)
        return 2
    # Absolute, so the script works wherever it is submitted from.
    sys.stdout.write(
        render_sbatch(
            config, config_path=args.config.resolve(), run_dir=args.out, python=args.python
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

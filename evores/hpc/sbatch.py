"""The sbatch scripts that launch a run: a shared body, and one rendered from ``[slurm]``.

The batch scripts ``slurm/evores.sbatch`` (one node), ``slurm/evores-multinode.sbatch`` and
``slurm/evores-cpu.sbatch`` are a hand-written header (usage, ``#SBATCH`` defaults) followed by
a body that lives here, in :data:`BODY_START`, :data:`LAUNCH` and :data:`BODY_END`
(tests/hpc/test_slurm.py checks that each file's body equals :func:`script_body` for its mode, so
edit the text here and copy it there).
:func:`render_sbatch` writes the same body under ``#SBATCH`` flags computed from the run's
``[slurm]`` config section: ``evores sbatch --config FILE.toml > job.sbatch`` (the command
line is :mod:`evores.engine.cli`).

Walltime and requeue (the body): the job asks SLURM for SIGUSR1 to the batch shell some time
before the limit (``--signal=B:USR1@N``). The shell forwards it to ``srun``, which forwards it to
every rank; rank 0 stops handing out work, checkpoints and exits with
:data:`evores.core.exits.EXIT_CHECKPOINTED`. When the step has ended without ``summary.json`` and
either the signal came or the driver exited with that code, and no SIGTERM ended the job
before its time limit (a ``scancel`` ends it), the shell runs
``scontrol requeue $SLURM_JOB_ID``: the job restarts with the same id, hence the same run
directory, and the script passes ``--resume`` because that directory already holds
``config.toml``.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evores.core.errors import ConfigError
from evores.core.typed import checked_type, refuse_unknown

MODES = ("single", "multinode", "cpu")


# --------------------------------------------------------------------------- body


def _script(text: str) -> str:
    return text.removeprefix("\n")


# The shared body of every evores batch script. The header before it sets `python` and, in
# rendered scripts, the positional arguments; LAUNCH[mode] starts the MPI step in between.
BODY_START = _script(
    r"""
# ---- from here on: evores.hpc.sbatch.script_body(); keep the copies in slurm/*.sbatch equal ----
# Not `set -e`: the exit status of srun is examined below.
set -uo pipefail

config=${1:?usage: sbatch [sbatch options] SCRIPT CONFIG.toml [RUN_DIR] [evores run arguments]}
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
    if [ -f "$summary" ]; then
        # The run has finished and its ranks are ending: a warning now has nothing to
        # checkpoint, and a rank it ended would leave the others waiting in MPI_Finalize until
        # the time limit, a finished job counted as TIMEOUT.
        echo "evores: walltime warning (SIGUSR1) after the run finished: not forwarded" >&2
        return
    fi
    warned=1
    echo "evores: walltime warning (SIGUSR1): asking the run to checkpoint" >&2
    if [ -n "$step" ]; then
        kill -USR1 "$step" 2>/dev/null
    fi
}
trap warn USR1
# SIGTERM (scancel, time limit, preemption) reaches every rank from SLURM itself. This shell
# only stays alive until they have stopped (SLURM kills everything after KillWait); it requeues
# the job then only if the time limit ended it: a scancel must end the job, even though rank 0
# checkpoints on it as on any stop.
terminated=0
trap 'terminated=1; echo "evores: SIGTERM: waiting for the ranks to stop" >&2' TERM
ended_by_time_limit() {
    scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | grep -q 'Reason=TimeLimit'
}

# Several evaluating ranks per GPU (train.evaluations_per_gpu > 1) run best under CUDA MPS,
# which runs their kernels side by side; without it they time-share each GPU (same results,
# less throughput). `start_mps RANKS START` looks at a node whose RANKS evaluating ranks
# share its GPUs: with START=1 it starts an MPS daemon private to the job (stopped by
# stop_mps), unless the cluster already runs one or nvidia-cuda-mps-control is missing; it
# says which on the job's output.
mps_started=0
start_mps() {
    local ranks=$1 start=$2 gpus=${SLURM_GPUS_ON_NODE:-0}
    if (( gpus == 0 || ranks <= gpus )); then
        return 0
    fi
    if [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ]; then
        echo "evores: $ranks ranks share $gpus GPU(s) under the MPS at $CUDA_MPS_PIPE_DIRECTORY"
    elif (( ! start )); then
        echo "evores: CUDA MPS is not started on several nodes: the $ranks ranks per node" \
            "time-share its $gpus GPU(s) (or run MPS through the cluster, e.g. --gres=mps)" >&2
    elif ! command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
        echo "evores: no nvidia-cuda-mps-control: $ranks ranks time-share $gpus GPU(s)" >&2
    else
        local dir=${TMPDIR:-/tmp}/evores-mps.$SLURM_JOB_ID
        export CUDA_MPS_PIPE_DIRECTORY=$dir/pipe CUDA_MPS_LOG_DIRECTORY=$dir/log
        mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
        if nvidia-cuda-mps-control -d; then
            mps_started=1
            echo "evores: $ranks ranks share $gpus GPU(s) under CUDA MPS (daemon in $dir)"
        else
            echo "evores: CUDA MPS did not start: $ranks ranks time-share $gpus GPU(s)" >&2
            unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
        fi
    fi
}
stop_mps() {
    if (( mps_started )); then
        echo quit | nvidia-cuda-mps-control
        mps_started=0
    fi
}

# MPICH names a node's shared-memory segment after the job and step ids, which a requeued job
# keeps; ranks that were killed (the time limit, an abort after the grace period) leave theirs in
# /dev/shm, and the next start's ranks would attach to it and wait in MPI_Init until the limit,
# start after start. Remove this user's segments that no process maps before srun starts.
remove_stale_mpi_segments() {
    local segment mapped
    mapped=$(cat /proc/[0-9]*/maps 2>/dev/null | grep -o '/dev/shm/mpich_[a-z]*_[0-9a-f_]*' |
        sort -u)
    for segment in /dev/shm/mpich_shm_* /dev/shm/mpich_vci_*; do
        if [ -f "$segment" ] && [ -O "$segment" ] && ! grep -qxF "$segment" <<< "$mapped"; then
            rm -f "$segment" && echo "evores: removed $segment, left by killed MPI ranks" >&2
        fi
    done
}
remove_stale_mpi_segments

# Bash runs a trap only between commands, so srun runs in the background while the shell waits.
"""
)

LAUNCH = {
    "single": _script(
        r"""
# Rank 0 drives; ranks 1..n-1 evaluate, train.evaluations_per_gpu per GPU when the job has
# GPUs (the driver takes none: see evores.hpc.environment.local_gpu_index). srun of SLURM 22.05
# does not
# inherit --cpus-per-task.
start_mps $(( ${SLURM_NTASKS:-1} - 1 )) 1
srun --mpi=pmi2 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" \
    "$python" -m evores run --config "$config" --out "$run_dir" "${resume[@]}" "$@" &
"""
    ),
    "multinode": _script(
        r"""
# The job has workers + 1 task slots on every node. Rank 0 (the driver) goes on the first node,
# then `workers` evaluating ranks on every node, train.evaluations_per_gpu per GPU:
# SLURM_HOSTFILE names the node of each rank in rank order, and --distribution=arbitrary
# follows it.
workers=$(( ${SLURM_NTASKS_PER_NODE:?submit with --ntasks-per-node=K*GPUS_PER_NODE+1} - 1 ))
start_mps "$workers" 0
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
    "$python" -m evores run --config "$config" --out "$run_dir" "${resume[@]}" "$@" &
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
    "$python" -m evores run --config "$config" --out "$run_dir" "${resume[@]}" \
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
stop_mps

if [ -f "$summary" ]; then
    # The run's own status: 0 with a winner, 4 when no evaluation of a stage succeeded.
    echo "evores: run finished (exit $status); summary in $summary"
    exit "$status"
fi
if (( warned || status == checkpointed )); then
    if (( terminated )) && ! ended_by_time_limit; then
        echo "evores: job $SLURM_JOB_ID was ended by SIGTERM before its time limit (scancel," \
            "preemption): not requeueing; $run_dir keeps its checkpoint: submit the same" \
            "command again to continue" >&2
        exit "$status"
    fi
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


def sbatch_flags(slurm: Mapping[str, Any], evaluations_per_gpu: int = 1) -> dict[str, str | None]:
    """The ``#SBATCH`` flags of a checked ``[slurm]`` section (None: a flag without a value);
    ``evaluations_per_gpu`` (``train.evaluations_per_gpu``) evaluating ranks per GPU."""
    gpus, nodes = slurm["gpus_per_node"], slurm["nodes"]
    workers = slurm["workers_per_node"] or gpus * evaluations_per_gpu or 2
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

    ``config`` is the run config (its ``[slurm]`` section and ``train.evaluations_per_gpu`` are
    read, defaults filled in); ``run_dir`` None leaves the default, ``runs/<job id>``.
    """
    for name, value in (("the config path", config_path), ("the run directory", run_dir),
                        ("--python", python)):  # fmt: skip
        check_script_text(name, "" if value is None else str(value))
    per_gpu = evaluations_per_gpu(config)
    slurm = slurm_settings(config.get("slurm"), per_gpu)
    flags = sbatch_flags(slurm, per_gpu)
    lines = [
        "#!/bin/bash",
        "# An evores run, written by `evores sbatch` from the [slurm] section of its",
        "# config. Submit with `sbatch FILE`; arguments after FILE go to `evores run`.",
    ]
    for name in sorted(flags):
        value = flags[name]
        lines.append(f"#SBATCH --{name}" + ("" if value is None else f"={shlex.quote(value)}"))
    positional = [str(config_path), "" if run_dir is None else str(run_dir)]
    lines.append("set -- " + " ".join(shlex.quote(p) for p in positional) + ' "$@"')
    lines.append(f"python={shlex.quote(python)}")
    mode = "multinode" if slurm["nodes"] > 1 else "single"
    return "\n".join(lines) + "\n" + script_body(mode)


def evaluations_per_gpu(config: Mapping[str, Any]) -> int:
    """``train.evaluations_per_gpu`` of a run config (a plain dict: 1 when it is not set)."""
    value = dict(config.get("train") or {}).get("evaluations_per_gpu", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"train.evaluations_per_gpu must be a whole number >= 1, got {value!r}")
    return value


# The [slurm] section: what `evores sbatch` turns into #SBATCH flags,
# and what the walltime checks below hold the run's budgets against.
SLURM_DEFAULTS: dict[str, Any] = {
    "partition": "",  # "" = the cluster's default partition
    "account": "",  # "" = the user's default account
    "time": "01:00:00",  # walltime per allocation; a requeued job gets it again
    "nodes": 1,
    "gpus_per_node": 0,  # 0 = CPU only
    "cpus_per_task": 1,
    "workers_per_node": 0,  # evaluating ranks per node; 0 = evaluations_per_gpu per GPU, or 2
    "signal_seconds": 120,  # walltime warning (SIGUSR1) this long before the limit; 0 = none
    "extra": [],  # more sbatch flags, "--flag=value" or "--flag"; they replace generated ones
}


def slurm_settings(
    section: Mapping[str, Any] | None, evaluations_per_gpu: int = 1
) -> dict[str, Any]:
    """A ``[slurm]`` section on its own (as the sbatch renderer gets it) with defaults filled
    in and every value checked, as :func:`evores.config.load` checks it in a whole config
    (whose ``train.evaluations_per_gpu`` is passed in)."""
    slurm = copy.deepcopy(SLURM_DEFAULTS)
    for key, value in dict(section or {}).items():
        if key not in slurm:
            refuse_unknown(f"slurm.{key}", slurm, origin="[slurm]")
        slurm[key] = checked_type(f"slurm.{key}", slurm[key], value, strings=key == "extra")
    check_slurm(slurm, evaluations_per_gpu)
    return slurm


def check_slurm(slurm: dict[str, Any], evaluations_per_gpu: int = 1) -> None:
    """The ranges of the ``[slurm]`` values (their types are checked on merging)."""
    for key in ("partition", "account", "time"):
        check_script_text(f"slurm.{key}", slurm[key])
    for flag in slurm["extra"]:
        check_script_text("slurm.extra entry", flag)
    for key in ("nodes", "cpus_per_task"):
        if slurm[key] < 1:
            raise ConfigError(f"slurm.{key} must be >= 1, got {slurm[key]}")
    for key in ("gpus_per_node", "workers_per_node", "signal_seconds"):
        if slurm[key] < 0:
            raise ConfigError(f"slurm.{key} must be >= 0, got {slurm[key]}")
    slots = slurm["gpus_per_node"] * evaluations_per_gpu
    if slurm["gpus_per_node"] and slurm["workers_per_node"] > slots:
        raise ConfigError(
            f"slurm.workers_per_node = {slurm['workers_per_node']} exceeds slurm.gpus_per_node "
            f"x train.evaluations_per_gpu = {slurm['gpus_per_node']} x {evaluations_per_gpu}: "
            "each GPU takes that many evaluating ranks; use at most that many, 0 for as many, "
            "or raise train.evaluations_per_gpu"
        )
    limit = walltime_seconds(slurm["time"])
    if slurm["signal_seconds"] >= limit:
        raise ConfigError(
            f"slurm.signal_seconds = {slurm['signal_seconds']} is not below slurm.time = "
            f"{slurm['time']!r} ({limit} s); warn earlier than the walltime or give more time"
        )
    for flag in slurm["extra"]:
        if not re.fullmatch(r"--[a-z][a-z0-9-]*(=.*)?", flag, flags=re.DOTALL):
            raise ConfigError(
                f"slurm.extra entry {flag!r} is not a long sbatch flag; write '--flag=value' "
                "or '--flag', e.g. '--qos=high'"
            )


def check_script_text(name: str, value: str) -> None:
    """Refuse a control character in what a batch script will hold: a newline in an
    ``#SBATCH`` line would end it, and the rest would run as a command of the job."""
    bad = next((c for c in str(value) if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ConfigError(
            f"{name} {str(value)!r} holds the control character {bad!r}, which a batch script "
            "cannot carry safely; remove it"
        )


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

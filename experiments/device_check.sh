#!/bin/bash
# The GPU check of evores, for a machine with one CUDA GPU; it fits in 8 minutes. It runs
#   1. the CUDA-marked tests (tests/training/test_gpu.py, `-m cuda`);
#   2. one `mpiexec -n 3` run with train.evaluations_per_gpu = 2 (the driver and two evaluating
#      ranks sharing the one GPU, under CUDA MPS when nvidia-cuda-mps-control exists) on a short
#      schedule, then the same run serially (K = 1), compared evaluation by evaluation;
#   3. experiments/gpu_throughput.py with a time cap;
# and writes what they print, the figures included, to one file: the first argument, else
# $OUT/device_check.txt where OUT is set, else /tmp/device_check.txt.
#
#   bash experiments/device_check.sh [FIGURES_FILE]
#
# Preparing the GPU machine. It has Python 3.12 with torch, torchvision, h5py, matplotlib and
# mpi4py, but no DEAP, no MPI library and no network, so those two travel with the checkout as
# wheels, and the dataset beside them. Once, on a machine with pip and a network, in the
# repository root:
#   echo /.whl/ >> .git/info/exclude; echo /.data/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl deap==1.4.4 mpich==5.0.2 pytest==9.2.0 \
#       pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0
#   (cd ../shared/datasets && for dir in imagenette224/*/*/; do mkdir -p "$OLDPWD/.data/$dir"
#       ls "$dir" | head -n 200 | xargs -I{} cp "$dir/{}" "$OLDPWD/.data/$dir"; done)
# The wheels are 15 MiB; the dataset, 200 training images a class and all 1000 validation
# images, 36 MiB: together they stay under a 64 MiB transfer (the whole set would not).
# Then copy .whl/ and .data/ along with the checkout (both ignored by git). This script
# installs .whl/*.whl into /tmp/site (pip --no-index, nothing fetched) and puts mpich's
# mpiexec and libmpi on PATH / LD_LIBRARY_PATH for mpi4py. Without .data/imagenette224 it
# uses ../shared/datasets/imagenette224, and skips step 3 when neither exists.
#
# Time caps (seconds), to shorten a re-run: EVORES_CHECK_TESTS (default 90), EVORES_CHECK_MPI
# (150, both runs), EVORES_CHECK_THROUGHPUT (210; gpu_throughput starts no new cell after
# 30 s less). Every step runs even when an earlier one failed; the exit status is the number
# of steps that failed.

set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
figures=${1:-${OUT:-/tmp}/device_check.txt}
: > "$figures"
failed=0
work=$(mktemp -d /tmp/evores-check.XXXXXX)

say() { echo "$*" | tee -a "$figures"; }
# Run a step: its name, then a command; its output goes to the terminal and the figures file.
step() {
    local name=$1
    shift
    say ""
    say "== $name"
    local started=$SECONDS
    "$@" 2>&1 | tee -a "$figures"
    local status=${PIPESTATUS[0]}
    say "-- $name: exit $status after $(( SECONDS - started )) s"
    (( status == 0 )) || failed=$(( failed + 1 ))
}

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
    export LD_LIBRARY_PATH=/tmp/site/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export EVORES_CACHE_DIR=$work/cache

environment() {
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    else
        echo "no nvidia-smi"
    fi
    python3 - <<'EOF'
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("GPU", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
from mpi4py import MPI
print(MPI.Get_library_version().splitlines()[0])
EOF
}

# CUDA MPS for the ranks that share the GPU, private to this check; stopped on exit.
mps=0
start_mps() {
    if command -v nvidia-cuda-mps-control > /dev/null 2>&1; then
        export CUDA_MPS_PIPE_DIRECTORY=$work/mps-pipe CUDA_MPS_LOG_DIRECTORY=$work/mps-log
        mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
        if nvidia-cuda-mps-control -d; then
            mps=1
            say "CUDA MPS: started"
            return
        fi
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    fi
    say "CUDA MPS: not available; the ranks time-share the GPU"
}
stop_mps() {
    if (( mps )); then
        echo quit | nvidia-cuda-mps-control
        mps=0
    fi
}
trap stop_mps EXIT

# A short schedule on the embedded data: two rungs, a handful of two-epoch trainings. One
# torch thread per rank: CPU results depend on the thread count, and a serial run would
# otherwise take every core.
SHORT_RUN=(
    --set "schedule.resolutions=[16, 32]" --set "schedule.evaluations=[8, 4]"
    --set search.population=4 --set search.elitism=1 --set schedule.elites=2
    --set train.max_epochs=2 --set train.patience=1 --set train.threads=1
)

mpi_runs() {
    local cap=${EVORES_CHECK_MPI:-150}
    timeout $(( cap * 2 / 3 )) mpiexec -n 3 python3 -m evores.run --out "$work/k2" \
        "${SHORT_RUN[@]}" --set train.evaluations_per_gpu=2 || return 1
    timeout $(( cap / 3 )) python3 -m evores.run --out "$work/serial" "${SHORT_RUN[@]}" \
        || return 1
    python3 - "$work/k2" "$work/serial" <<'EOF'
import json, sys
from pathlib import Path

FIELDS = ("kind", "hparams", "resolution", "seed", "status", "val_accuracy", "test_accuracy",
          "epochs", "best_epoch", "repairs")
runs = []
for directory in sys.argv[1:]:
    records = [json.loads(line) for line in (Path(directory) / "evaluations.jsonl").open()]
    runs.append({tuple(r["key"]): {f: r.get(f) for f in FIELDS} for r in records})
    done = [r for r in records if r["status"] != "interrupted"]
    wall = sum(r["wall_seconds"] for r in done)
    print(f"{directory}: {len(done)} evaluations, ranks {sorted({r['rank'] for r in done})}, "
          f"precision {sorted({r.get('precision') for r in done})}, "
          f"{wall:.1f} s training in all, peak memory "
          f"{max(r['peak_memory_bytes'] for r in done) / 2**20:.0f} MiB")
same = runs[0] == runs[1]
print("K=2 under mpiexec and K=1 serial give the same evaluations:", same)
sys.exit(0 if same else 1)
EOF
}

throughput() {
    local dataset=.data/imagenette224
    [ -d "$dataset" ] || dataset=../shared/datasets/imagenette224
    if [ ! -d "$dataset" ]; then
        echo "no imagenette224 in .data/ or ../shared/datasets/: throughput not measured"
        return 1
    fi
    local cap=${EVORES_CHECK_THROUGHPUT:-210}
    timeout "$cap" python3 experiments/gpu_throughput.py "$dataset" --resolutions 32 128 \
        --population 8 --epochs 1 --per-gpu 2 4 8 --max-seconds $(( cap - 30 )) \
        --cache-dir "$work/cache" --out "$work/throughput.jsonl"
    local status=$?
    [ -f "$work/throughput.jsonl" ] && cat "$work/throughput.jsonl"
    return $status
}

say "evores device check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
step "environment" environment
step "CUDA tests" timeout "${EVORES_CHECK_TESTS:-90}" python3 -m pytest -q -rs -m cuda \
    tests/training/test_gpu.py
start_mps
step "mpiexec -n 3, train.evaluations_per_gpu = 2, against a serial run" mpi_runs
step "throughput" throughput
stop_mps
say ""
say "device check: $failed step(s) failed; figures in $figures"
exit "$failed"

"""evores.training.device (device, precision, process settings, K ranks per GPU) and the GPU path.

The CPU tests check what selects and wires the GPU path; the ``cuda``-marked tests train on a
real GPU and skip, saying so, where CUDA is not available (experiments/device_check.sh runs
them on a GPU machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_fitness import PX, SplitRecorder, genome, make_split, without_timing

from evores import config as configuration
from evores.core.errors import ConfigError
from evores.core.results import KIND_FINAL, KIND_SEARCH, make_task
from evores.execution.worker import make_work
from evores.training import device as devices
from evores.training.fitness import PreparedData, evaluate, train_and_test

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")

cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is False"
)
no_cuda_here = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the behaviour on a machine without CUDA"
)


def python(code: str, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (``drop``: variables left out of its environment)."""
    environment = {k: v for k, v in os.environ.items() if k not in drop}
    environment["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'tests'}"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=environment,
        timeout=300,
    )  # fmt: skip


# --------------------------------------------------------------------------- selection (CPU)


def test_importing_evores_sets_no_cuda_flag():
    code = (
        "import os, torch, evores, evores.training.device, evores.training.fitness, "
        "evores.execution.worker, evores.engine.cli; "
        "print(torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled(), "
        "'CUBLAS_WORKSPACE_CONFIG' in os.environ)"
    )
    result = python(code, drop=("CUBLAS_WORKSPACE_CONFIG",))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False"]


@pytest.mark.parametrize(("asked", "used"), [("auto", "fp32"), ("fp32", "fp32"), ("bf16", "bf16")])
def test_precision_on_the_cpu(asked, used):
    assert devices.resolve_precision(asked, CPU) == used


def test_unknown_precision_names_the_choices():
    with pytest.raises(ConfigError, match="auto, fp32, bf16"):
        devices.resolve_precision("half", CPU)


def test_the_cpu_fp32_model_is_trained_as_it_is():
    model = torch.nn.Linear(3, 2)
    assert devices.for_training(model, CPU, "fp32") is model


def test_bf16_autocasts_the_forward_pass_and_returns_fp32_logits():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    wrapped = devices.for_training(model, CPU, "bf16")
    out = wrapped(torch.randn(2, 3, 5, 5))
    assert out.dtype == torch.float32 and out.shape == (2, 36)
    assert list(wrapped.parameters()) == list(model.parameters())


@pytest.mark.parametrize("deterministic", [True, False])
def test_process_settings_leave_the_cpu_alone(monkeypatch, deterministic):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    devices.configure_process(CPU, deterministic=deterministic, evaluations_per_gpu=4)
    after = (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    assert after == before and "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_memory_share_per_rank():
    assert devices.memory_fraction(1) is None  # alone on its GPU: no cap
    assert devices.memory_fraction(2) == pytest.approx(0.45)
    assert devices.memory_fraction(8) == pytest.approx(0.9 / 8)
    with pytest.raises(ConfigError, match="evaluations_per_gpu"):
        devices.memory_fraction(0)


def test_flags_are_read_every_step_on_the_cpu_and_every_few_on_a_gpu():
    assert devices.check_interval(CPU) == 1
    assert devices.check_interval(torch.device("cuda", 0)) == devices.CHECK_EVERY["cuda"] > 1


def clean_launcher_env(monkeypatch, env: dict, gpus: int) -> None:
    for var in list(os.environ):
        if var.startswith("SLURM_") or var in (
            "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "CUDA_VISIBLE_DEVICES"
        ):  # fmt: skip
            monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)


@pytest.mark.parametrize(
    ("env", "per_gpu", "expected"),
    [
        ({"MPI_LOCALRANKID": "3"}, 2, "cuda:1"),  # mpiexec: local ranks 2, 3 on GPU 1
        ({"MPI_LOCALRANKID": "3"}, 4, "cuda:0"),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "5", "SLURM_STEP_TASKS_PER_NODE": "5",
          "SLURM_PROCID": "4", "SLURM_LOCALID": "4", "CUDA_VISIBLE_DEVICES": "0,1"}, 2, "cuda:1"),
    ],
)  # fmt: skip
def test_auto_device_puts_k_ranks_on_a_gpu(monkeypatch, env, per_gpu, expected):
    clean_launcher_env(monkeypatch, env, gpus=2)
    assert devices.resolve_device(evaluations_per_gpu=per_gpu) == torch.device(expected)


def test_train_section_holds_the_gpu_keys():
    train = configuration.load()["train"]
    assert (train["precision"], train["deterministic"], train["evaluations_per_gpu"]) == (
        "auto", True, 1
    )  # fmt: skip
    with pytest.raises(ConfigError, match="train.precision = 'fp16' is unknown"):
        configuration.load(overrides=['train.precision="fp16"'])


def test_a_rank_trains_in_the_configured_precision_and_records_it():
    config = configuration.load(
        overrides=['train.precision="bf16"', "train.max_epochs=1", "train.threads=1"]
    )
    work = make_work(config, SplitRecorder())
    searched = work(make_task([0, 0, 0], KIND_SEARCH, genome(), PX, 0))
    final = work(make_task([1, 0, 0], KIND_FINAL, genome(), PX, 0, epochs=1))
    assert (searched["status"], searched["precision"]) == ("ok", "bf16")
    assert (final["status"], final["precision"]) == ("ok", "bf16")


# --------------------------------------------------------------------------- the scripts (CPU)


@no_cuda_here
def test_gpu_throughput_without_cuda_says_why_and_exits_0():
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "gpu_throughput.py")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "CUDA is not available" in result.stdout


def image_folder(root: Path) -> Path:
    """A two-class ImageFolder with train/ and val/, 20 px JPEGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 5)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
                pixels[:10] = 250 if label == "b" else pixels[:10]
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
    return root


@pytest.mark.slow
def test_gpu_throughput_runs_every_cell_on_the_cpu(tmp_path):
    out = tmp_path / "figures.jsonl"
    command = [
        sys.executable, str(ROOT / "experiments" / "gpu_throughput.py"),
        str(image_folder(tmp_path / "images")), "--allow-cpu", "--resolutions", "8",
        "--population", "2", "--epochs", "1", "--per-gpu", "2", "--naive-workers", "0",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["cell"] for row in rows] == [
        "naive fp32", "evores fp32 K=1", "evores bf16 K=1", "evores bf16 K=1 autotune",
        "evores bf16 K=2",
    ]  # fmt: skip
    assert all(row["failed"] == 0 and row["evals_per_gpu_hour"] > 0 for row in rows)


def test_device_check_is_valid_bash():
    script = ROOT / "experiments" / "device_check.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- on a GPU


@pytest.fixture(scope="module")
def gpu_data():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: torch.cuda.is_available() is False")
    gpu = torch.device("cuda", 0)
    devices.configure_process(gpu, deterministic=True)
    return PreparedData.from_arrays(*make_split(96, 0), *make_split(48, 1), 3, device=gpu)


@cuda
@needs_cuda
def test_a_gpu_evaluation_trains_there_in_bf16_and_repeats_exactly(gpu_data):
    first = evaluate(genome(), PX, gpu_data, seed=0, max_epochs=3)
    again = evaluate(genome(), PX, gpu_data, seed=0, max_epochs=3)
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert (first.status, first.precision) == ("ok", expected)
    assert without_timing(first) == without_timing(again)  # train.deterministic = true
    assert first.val_accuracy > 0.5


@cuda
@needs_cuda
def test_fp32_on_the_gpu_learns_like_the_cpu(gpu_data):
    on_gpu = evaluate(genome(), PX, gpu_data, seed=0, max_epochs=3, precision="fp32")
    cpu_data = PreparedData.from_arrays(*make_split(96, 0), *make_split(48, 1), 3)
    on_cpu = evaluate(genome(), PX, cpu_data, seed=0, max_epochs=3)
    assert on_gpu.precision == "fp32" and on_gpu.epochs == on_cpu.epochs
    assert abs(on_gpu.val_accuracy - on_cpu.val_accuracy) <= 0.1  # other kernels, same model


@cuda
@needs_cuda
def test_peak_memory_is_measured_per_evaluation(gpu_data):
    big = evaluate(genome(conv_filters=[256, 256], batch_size=64), PX, gpu_data, seed=0,
                   max_epochs=1)  # fmt: skip
    small = evaluate(genome(), PX, gpu_data, seed=0, max_epochs=1)
    assert 0 < small.peak_memory_bytes < big.peak_memory_bytes


@cuda
@needs_cuda
def test_a_nan_on_the_gpu_is_the_same_failure(gpu_data):
    space = {"learning_rate": [1e-4, 100.0]}
    from evores.strategies.space import SearchSpace

    wide = SearchSpace.from_dict({**SearchSpace().to_dict(), **space})
    result = evaluate(genome(learning_rate=90.0), PX, gpu_data, seed=0, max_epochs=5, space=wide)
    assert (result.status, result.failure, result.val_accuracy) == ("failed", "nan", 0.0)
    assert result.reason.startswith("loss became ")


@cuda
@needs_cuda
def test_the_final_retraining_runs_on_the_gpu():
    gpu = torch.device("cuda", 0)
    data = PreparedData.from_cache(SplitRecorder(), PX, device=gpu, final=True)
    assert data.train_x.device.type == "cuda"
    result = train_and_test(genome(), PX, data, seed=0, epochs=2, device=gpu)
    assert result.status == "ok" and result.test_accuracy > 0.5 and result.peak_memory_bytes > 0


@cuda
@needs_cuda
def test_a_rank_that_outgrows_its_share_fails_with_out_of_memory():
    # In a process of its own: the memory cap holds for the whole process.
    code = """
import torch
from test_fitness import genome, make_split
from evores.training import device
from evores.training.fitness import PreparedData, evaluate
gpu = torch.device("cuda", 0)
share = 256 * 2**20  # a 256 MiB share of the GPU: K ranks of 0.9 / K each
k = int(0.9 * torch.cuda.get_device_properties(gpu).total_memory / share)
device.configure_process(gpu, deterministic=True, evaluations_per_gpu=k)
data = PreparedData.from_arrays(*make_split(1024, 0, px=64), *make_split(64, 1, px=64), 3,
                                device=gpu)
hog = genome(conv_filters=[256, 256], conv_kernels=[7, 7], batch_size=512)
print(evaluate(hog, 64, data, seed=0, max_epochs=1).failure)
print(evaluate(genome(), 64, data, seed=0, max_epochs=1).status)
"""
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["oom", "ok"]  # the next evaluation is unharmed

"""Where and how a rank trains: its device, numeric precision, CUDA settings and GPU share.

Selection happens here and nowhere else, and only when a caller asks: importing this module
sets no CUDA flag (the process-wide settings are made by :func:`configure_process`, which an
evaluating rank calls once). On the CPU everything here leaves training as it always was:
fp32, the model and the batches untouched, no process setting changed.

- :func:`resolve_device`: the torch device of this rank (SLURM binding, MPI local rank,
  ``train.evaluations_per_gpu`` ranks per GPU).
- :func:`resolve_precision`: ``"auto" | "fp32" | "bf16"`` to what a training on a device uses.
- :func:`for_training`: the model as a device trains it (channels_last and bf16 autocast on
  CUDA); :func:`configure_process`: deterministic algorithms or cuDNN autotuning, and this
  rank's share of its GPU's memory.
- :data:`CHECK_EVERY`: how many training steps pass between two reads of the device's flags.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from evores.core.errors import ConfigError
from evores.core.results import PRECISION_CHOICES

__all__ = [
    "PRECISION_CHOICES",
    "CHECK_EVERY",
    "resolve_device",
    "resolve_precision",
    "for_training",
    "configure_process",
    "memory_fraction",
    "check_interval",
]

logger = logging.getLogger("evores.training.device")


# Steps between two host reads of the NaN/inf flag and the clock, per device type. A read
# waits for the GPU to finish every queued kernel, so reading each step makes small networks
# launch-bound; every 16 steps bounds the work wasted after a NaN to 16 steps. On the CPU a
# read costs nothing, and checking every step keeps the CPU path exactly what it was.
CHECK_EVERY = {"cpu": 1, "cuda": 16}

# Outside SLURM (whose variables evores.hpc.environment reads): the MPI launchers' node-local rank.
_LOCAL_RANK_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK")

# What deterministic cuBLAS needs (NVIDIA's cuBLAS docs, "Results reproducibility"); it must be
# in the environment before the first cuBLAS call of the process.
_CUBLAS_WORKSPACE = ":4096:8"

# Of a GPU's memory, the share the ranks on it may allocate together; the rest is left to the
# CUDA contexts (one per rank, outside PyTorch's allocator) and the MPS server.
_SHARED_GPU_HEADROOM = 0.9


# --------------------------------------------------------------------------- the device


def _local_rank() -> int:
    """This process's index among the ranks on its node, as the MPI launcher tells it."""
    for var in _LOCAL_RANK_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def resolve_device(
    device: str | torch.device | None = None, *, evaluations_per_gpu: int = 1
) -> torch.device:
    """The torch device to train on.

    ``None`` / ``"auto"``: when CUDA is available, in a SLURM job the GPU of
    :func:`evores.hpc.environment.local_gpu_index` (by ``SLURM_LOCALID``, ``evaluations_per_gpu``
    evaluating ranks per GPU; the CPU for the driver rank), elsewhere
    ``cuda:<local rank // evaluations_per_gpu>`` (``MPI_LOCALRANKID`` /
    ``OMPI_COMM_WORLD_LOCAL_RANK``, else 0); otherwise the CPU. Device indices are relative to
    ``CUDA_VISIBLE_DEVICES``: when the launcher binds one GPU per task only one device is
    visible, so an index beyond the visible count means "my own GPU" and maps to ``cuda:0``
    (never modulo, which would silently stack ranks on shared GPUs). Explicit devices are
    honoured; asking for an absent GPU raises :class:`ConfigError`.
    """
    _check_per_gpu(evaluations_per_gpu)
    if device is None or device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        from evores.hpc import environment as slurm

        if slurm.in_step():
            index = slurm.local_gpu_index(evaluations_per_gpu=evaluations_per_gpu)
            return torch.device("cpu") if index is None else torch.device("cuda", index)
        local, count = _local_rank() // evaluations_per_gpu, torch.cuda.device_count()
        if local >= count:
            logger.info("GPU %d wanted but %d visible; using cuda:0", local, count)
            local = 0
        return torch.device("cuda", local)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda:<n>'") from exc
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} asked for but this machine has no MPS; use 'cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(
            f"device {device!r} is of a type evores does not train on; use 'auto', 'cpu' or "
            "'cuda:<n>'"
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for but CUDA is not available; use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} GPU(s) visible"
            )
    return dev


def _check_per_gpu(evaluations_per_gpu: int) -> None:
    if isinstance(evaluations_per_gpu, bool) or int(evaluations_per_gpu) < 1:
        raise ConfigError(
            f"train.evaluations_per_gpu = {evaluations_per_gpu!r} must be a whole number >= 1"
        )


def check_interval(device: torch.device) -> int:
    """Training steps between two host reads of the device's flags (see :data:`CHECK_EVERY`)."""
    return CHECK_EVERY.get(device.type, 1)


# --------------------------------------------------------------------------- precision


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"``: what a training on ``device`` runs in.

    ``"auto"`` is bf16 autocast on a CUDA GPU that supports bf16 and fp32 elsewhere (the CPU
    included: its bf16 kernels are no faster for these networks, and fp32 keeps CPU results
    what they were). An explicit ``"bf16"`` on a GPU without bf16 raises :class:`ConfigError`.
    """
    if precision not in PRECISION_CHOICES:
        raise ConfigError(
            f"train.precision = {precision!r} is unknown; use one of {', '.join(PRECISION_CHOICES)}"
        )
    if device.type != "cuda":
        return "fp32" if precision == "auto" else precision
    supported = torch.cuda.is_bf16_supported()
    if precision == "auto":
        return "bf16" if supported else "fp32"
    if precision == "bf16" and not supported:
        raise ConfigError(
            f"train.precision = 'bf16' but {torch.cuda.get_device_name(device)} has no bf16 "
            "support; use 'fp32' or 'auto'"
        )
    return precision


class _DeviceModel(nn.Module):
    """A network as a GPU trains it: inputs in channels_last, the forward pass under autocast
    (``dtype`` None: none), logits back in float32 so the loss is computed in fp32."""

    def __init__(self, inner: nn.Module, device_type: str, dtype: torch.dtype | None,
                 channels_last: bool) -> None:  # fmt: skip
        super().__init__()
        self.inner = inner
        self.device_type, self.dtype, self.channels_last = device_type, dtype, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype is None:
            return self.inner(x)
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.inner(x).float()


def for_training(model: nn.Module, device: torch.device, precision: str) -> nn.Module:
    """``model`` (already on ``device``) as it trains there in ``precision`` (fp32 / bf16).

    On CUDA the weights and batches use channels_last (cuDNN's fast layout for convolutions)
    and bf16 runs the forward pass under autocast; the backward pass runs outside autocast,
    as PyTorch advises. On the CPU in fp32 this is ``model`` itself, untouched.
    """
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if precision == "bf16" else None
    if not cuda and dtype is None:
        return model
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    return _DeviceModel(model, device.type, dtype, channels_last=cuda)


# --------------------------------------------------------------------------- process settings


def memory_fraction(evaluations_per_gpu: int) -> float | None:
    """The share of its GPU's memory one of ``evaluations_per_gpu`` ranks may allocate
    (None: no cap, the rank has the GPU to itself)."""
    _check_per_gpu(evaluations_per_gpu)
    if evaluations_per_gpu == 1:
        return None
    return _SHARED_GPU_HEADROOM / evaluations_per_gpu


def configure_process(
    device: torch.device, *, deterministic: bool, evaluations_per_gpu: int = 1
) -> None:
    """Make the process-wide CUDA settings of a rank that trains on ``device``; on the CPU
    nothing changes.

    ``deterministic``: deterministic algorithms (and the cuBLAS workspace they need; it must
    be set before the first cuBLAS call, so call this before training), cuDNN autotuning off;
    else cuDNN autotuning (``cudnn.benchmark``), which picks the fastest kernels for each
    shape but may pick differently from run to run. With several ranks per GPU, each caps
    its PyTorch allocations at its share of the GPU (:func:`memory_fraction`), so a training
    that outgrows its share fails with out-of-memory (and is retried at half the batch size)
    instead of starving a neighbour.
    """
    if device.type != "cuda":
        return
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
        # warn_only: an op without a deterministic kernel warns instead of failing training.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    fraction = memory_fraction(evaluations_per_gpu)
    if fraction is not None:
        torch.cuda.set_per_process_memory_fraction(fraction, device)
    logger.info(
        "%s: %s, %d evaluation(s) per GPU%s", device,
        "deterministic algorithms" if deterministic else "cuDNN autotuning",
        evaluations_per_gpu, "" if fraction is None else f", memory capped at {fraction:.0%}",
    )  # fmt: skip

"""The Hinz-template CNN that every genome describes.

Per conv layer: Conv2d (odd kernel, 'same' padding) -> ReLU -> MaxPool2d(2); then flatten, the
fully connected layers (Linear -> ReLU) and a final Linear to the classes. Softmax is folded into
the cross-entropy loss, so the network returns logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from evores.core.errors import ConfigError


def feature_size(resolution: int, n_conv: int) -> int:
    """Side of the feature map after ``n_conv`` conv blocks (each 2x2 pool floors the halving)."""
    side = resolution
    for _ in range(n_conv):
        side //= 2
    return side


def _layers(hparams: dict, resolution: int) -> tuple[list[int], list[int], list[int]]:
    """The layer lists, checked enough that the network can be built at ``resolution``."""
    filters = [int(f) for f in hparams["conv_filters"]]
    kernels = [int(k) for k in hparams["conv_kernels"]]
    units = [int(u) for u in hparams["fc_units"]]
    if len(filters) != len(kernels):
        raise ConfigError(
            f"conv_filters has {len(filters)} entries but conv_kernels has {len(kernels)}; "
            "give one kernel per conv layer"
        )
    if any(k < 1 or k % 2 == 0 for k in kernels):
        raise ConfigError(f"conv_kernels {kernels} must be odd and positive for 'same' padding")
    if any(v < 1 for v in filters + units):
        raise ConfigError(f"layer widths must be positive, got filters {filters}, units {units}")
    if feature_size(resolution, len(filters)) < 1:
        raise ConfigError(
            f"{len(filters)} conv layers pool a {resolution} px image below 1 px; "
            "repair the genome for the resolution (evores.strategies.space.repair) first"
        )
    return filters, kernels, units


def build_cnn(hparams: dict, resolution: int, n_classes: int, in_channels: int = 3) -> nn.Module:
    """The network for ``hparams`` on square ``resolution`` px images with ``n_classes`` outputs.

    Weights are drawn from torch's global RNG (PyTorch's default initialisers); callers that
    need reproducibility seed it, as :func:`evores.training.fitness.evaluate` does inside
    ``fork_rng``.
    """
    filters, kernels, units = _layers(hparams, resolution)
    layers: list[nn.Module] = []
    channels = in_channels
    for width, k in zip(filters, kernels, strict=True):
        layers += [nn.Conv2d(channels, width, k, padding=k // 2), nn.ReLU(), nn.MaxPool2d(2)]
        channels = width
    layers.append(nn.Flatten())
    features = channels * feature_size(resolution, len(filters)) ** 2
    for width in units:
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    layers.append(nn.Linear(features, n_classes))
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (weights and biases)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def conv_flops(hparams: dict, resolution: int, *, n_classes: int = 10, in_channels: int = 3) -> int:
    """Forward multiply-accumulates (MACs) for one image: conv layers plus FC layers.

    Pooling, ReLU and bias additions are ignored; they are small next to the convolutions.
    A training step costs about three times this (forward + two backward products). Used to
    compare how the cost of an epoch should grow with the resolution.
    """
    filters, kernels, units = _layers(hparams, resolution)
    macs, side, channels = 0, resolution, in_channels
    for width, k in zip(filters, kernels, strict=True):
        macs += side * side * k * k * channels * width
        side //= 2
        channels = width
    features = channels * side * side
    for width in [*units, n_classes]:
        macs += features * width
        features = width
    return macs


def weight_tensors(model: nn.Module) -> Sequence[torch.Tensor]:
    """The weight matrices and kernels (not biases) that the l1 / l2 penalties act on."""
    return [p for p in model.parameters() if p.ndim > 1]

"""The learned resizer (after Talebi & Milanfar, 2021): a small CNN that shrinks the images.

With ``data.resizer = "learned"`` the classifier no longer sees the cache's fixed-filter copy
at the stage's resolution: it sees the cache's copy at a higher *source* resolution
(``data.resizer_source``, 0 = twice the stage's), fed through :class:`LearnedResizer`, which
outputs the stage's resolution and trains with the classifier under the same loss, optimizer
and budget. Its parameters count in ``n_parameters``, its cost in the timings, and the
``l1`` / ``l2`` penalties act on its weights as on the classifier's.

The architecture: a bilinear resize of the input (the skip path) plus a CNN path, 7x7 conv
-> LeakyReLU -> 1x1 conv -> LeakyReLU -> BN -> bilinear resize -> ``blocks`` residual blocks
(3x3 conv - BN - LeakyReLU - 3x3 conv - BN, plus their input) -> 3x3 conv -> BN, added to
it. The paper uses ``width`` = 16 and ``blocks`` = 1.

A source resolution above every image of the dataset is refused by the cache with the rule it
applies to any resolution (a DataError: such a copy would only measure interpolation); when
only some images are smaller they are upscaled, as for any resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from evores.data.resizing import ResizerSpec

__all__ = [
    "LearnedResizer",
    "ResizedClassifier",
    "with_resizer",
]

_SLOPE = 0.2  # LeakyReLU's negative slope, as in the paper


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LearnedResizer(nn.Module):
    """Images (N, C, s, s) at any source side s -> (N, C, ``target``, ``target``)."""

    def __init__(self, target: int, channels: int = 3, width: int = 16, blocks: int = 1) -> None:
        super().__init__()
        self.target = int(target)
        self.head = nn.Sequential(
            nn.Conv2d(channels, width, 7, padding=3),
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(width, width, 1),
            nn.LeakyReLU(_SLOPE),
            nn.BatchNorm2d(width),
        )
        self.blocks = nn.Sequential(*(_Residual(width) for _ in range(blocks)))
        self.tail = nn.Sequential(
            nn.Conv2d(width, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = _resize(self.head(x), self.target)
        features = self.blocks(features)
        return _resize(x, self.target) + self.tail(features)


class ResizedClassifier(nn.Module):
    """The learned resizer followed by the classifier; one network, one set of weights."""

    def __init__(self, resizer: LearnedResizer, classifier: nn.Module) -> None:
        super().__init__()
        self.resizer = resizer
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.resizer(x))


def with_resizer(classifier: nn.Module, spec: ResizerSpec, target: int, channels: int):
    """``classifier`` behind a fresh learned resizer of shape ``spec`` to ``target`` px."""
    resizer = LearnedResizer(target, channels, spec.width, spec.blocks)
    return ResizedClassifier(resizer, classifier)

"""The Hinz-template CNN: layer order, shapes, parameter and MAC counts, and its refusals."""

import pytest
import torch
from torch import nn

from evores.core.errors import ConfigError
from evores.training.model import build_cnn, conv_flops, count_parameters, feature_size


def genome(filters=(8, 16), kernels=(3, 5), units=(32,)):
    return {
        "learning_rate": 0.01,
        "conv_filters": list(filters),
        "conv_kernels": list(kernels),
        "fc_units": list(units),
        "batch_size": 32,
        "l1": 0.0,
        "l2": 0.0,
    }


def test_layer_order_follows_the_template():
    model = build_cnn(genome(), 16, n_classes=4)
    kinds = [type(m) for m in model]
    assert kinds == [
        nn.Conv2d, nn.ReLU, nn.MaxPool2d,
        nn.Conv2d, nn.ReLU, nn.MaxPool2d,
        nn.Flatten, nn.Linear, nn.ReLU, nn.Linear,
    ]  # fmt: skip
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3), (5, 5)]
    assert [c.padding for c in convs] == [(1, 1), (2, 2)]  # 'same' for odd kernels
    assert all(m.kernel_size == 2 for m in model if isinstance(m, nn.MaxPool2d))


@pytest.mark.parametrize(
    ("resolution", "filters", "units"),
    [(8, (4,), (16,)), (16, (8, 8, 8), (16, 8)), (12, (4, 4, 4), (8,)), (15, (4, 4), (8, 8, 8))],
)
def test_forward_gives_logits_per_class(resolution, filters, units):
    h = genome(filters, [3] * len(filters), units)
    model = build_cnn(h, resolution, n_classes=3, in_channels=1)
    out = model(torch.zeros(2, 1, resolution, resolution))
    assert out.shape == (2, 3)


def test_parameter_count_matches_the_formula():
    model = build_cnn(genome(), 16, n_classes=4)
    conv = (3 * 3 * 3 * 8 + 8) + (5 * 5 * 8 * 16 + 16)
    fc = (16 * 4 * 4 * 32 + 32) + (32 * 4 + 4)
    assert count_parameters(model) == conv + fc


def test_conv_flops_counts_macs_and_grows_with_resolution():
    h = genome()
    expected = 16 * 16 * 9 * 3 * 8 + 8 * 8 * 25 * 8 * 16 + 16 * 4 * 4 * 32 + 32 * 10
    assert conv_flops(h, 16) == expected
    # Every term scales with the pixel count, so doubling the side quadruples the work.
    assert conv_flops(h, 32) - 32 * 10 == 4 * (conv_flops(h, 16) - 32 * 10)


def test_feature_size_floors_each_pooling():
    assert [feature_size(15, n) for n in range(5)] == [15, 7, 3, 1, 0]


@pytest.mark.parametrize(
    "bad",
    [
        genome(filters=(8, 8, 8, 8), kernels=(3, 3, 3, 3)),  # 8 px pooled to 0 px
        genome(kernels=(3, 4)),  # even kernel has no 'same' padding
        genome(kernels=(3,)),  # one kernel for two conv layers
        genome(units=(0,)),
    ],
)
def test_unbuildable_genomes_raise_config_error(bad):
    with pytest.raises(ConfigError):
        build_cnn(bad, 8, n_classes=2)

"""Hypothesis strategies shared by the tests of the search space and its operators."""

from __future__ import annotations

from hypothesis import strategies as st

from evores.strategies.genes import Categorical, Integer, LogFloat
from evores.strategies.space import SearchSpace


@st.composite
def log_bounds(draw: st.DrawFn, lo: float, hi: float) -> tuple[float, float]:
    a = draw(st.floats(lo, hi, allow_nan=False))
    b = draw(st.floats(a, hi, allow_nan=False))
    return 10.0**a, 10.0**b


@st.composite
def int_bounds(draw: st.DrawFn, lo: int, hi: int) -> tuple[int, int]:
    a = draw(st.integers(lo, hi))
    return a, draw(st.integers(a, hi))


@st.composite
def spaces(draw: st.DrawFn) -> SearchSpace:
    """Random valid search spaces, including degenerate (low == high) ranges."""
    choices = st.lists(st.integers(0, 5).map(lambda i: 2 * i + 1), min_size=1, max_size=4,
                       unique=True)  # fmt: skip
    batches = st.lists(st.sampled_from([2**i for i in range(11)]), min_size=1, unique=True)
    return SearchSpace(
        learning_rate=LogFloat(*draw(log_bounds(-6, 1))),
        conv_layers=Integer(*draw(int_bounds(1, 7))),
        conv_filters=Integer(*draw(int_bounds(1, 300)), log=True),
        conv_kernels=Categorical(tuple(draw(choices))),
        fc_layers=Integer(*draw(int_bounds(1, 4))),
        fc_units=Integer(*draw(int_bounds(1, 2000)), log=True),
        batch_size=Categorical(tuple(draw(batches))),
        l1=LogFloat(*draw(log_bounds(-10, 0)), allow_zero=draw(st.booleans())),
        l2=LogFloat(*draw(log_bounds(-10, 0)), allow_zero=draw(st.booleans())),
    )


seeds = st.integers(0, 2**63 - 1)

"""The hyperparameter search space and the canonical genome it describes.

Gene types are declared explicitly (log-uniform floats, integers, categoricals), never inferred
from values, so a bound like ``[1, 6]`` cannot silently change meaning. The canonical genome is
the plain dict described in the design sheet; this module validates it, samples it, converts it
to and from the flat form external optimisers such as Optuna use, repairs it for a resolution
and narrows the space around elites between stages (Hinz et al.).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from evores.core.errors import ConfigError
from evores.strategies.genes import (
    Categorical,
    Gene,
    Integer,
    LogFloat,
    is_int,
    is_real,
    narrow_float,
    narrow_int,
    suggest_gene,
)

HPARAM_KEYS = (
    "learning_rate",
    "conv_filters",
    "conv_kernels",
    "fc_units",
    "batch_size",
    "l1",
    "l2",
)
FLAT_SCALAR_KEYS = ("learning_rate", "conv_layers", "fc_layers", "batch_size", "l1", "l2")
# conv_kernel_i is the flat name of conv_kernels[i] before the genes had one vocabulary.
_LAYER_KEY = re.compile(r"^(conv_filters|conv_kernels|conv_kernel|fc_units)_(0|[1-9][0-9]*)$")

# The earlier names of the layer genes in the plain form ([space] and a checkpoint's space),
# before they took the genome's names. from_dict reads them; config.load also says so.
DEPRECATED_NAMES = {"filters": "conv_filters", "kernel": "conv_kernels", "units": "fc_units"}


@dataclass(frozen=True)
class SearchSpace:
    """The bounds of every gene; plain data via to_dict/from_dict for config and checkpoints.

    The scale of each gene is fixed (filters and units log, depths linear, learning rate never
    zero) because the plain form carries only bounds; the constructor enforces it.
    """

    learning_rate: LogFloat = LogFloat(1e-4, 1.0)
    conv_layers: Integer = Integer(1, 6)
    conv_filters: Integer = Integer(8, 256, log=True)
    conv_kernels: Categorical = Categorical((3, 5, 7))
    fc_layers: Integer = Integer(1, 3)
    fc_units: Integer = Integer(16, 1024, log=True)
    batch_size: Categorical = Categorical((16, 32, 64, 128, 256, 512))
    l1: LogFloat = LogFloat(1e-7, 1e-2, allow_zero=True)
    l2: LogFloat = LogFloat(1e-7, 1e-2, allow_zero=True)

    def __post_init__(self) -> None:
        for f in fields(self):
            gene, kind = getattr(self, f.name), type(f.default)
            if not isinstance(gene, kind):
                raise ConfigError(
                    f"search space '{f.name}' must be a {kind.__name__}, got {gene!r}; "
                    f"use e.g. {f.default!r}"
                )
        if self.learning_rate.allow_zero:
            raise ConfigError("search space 'learning_rate' allows 0; set allow_zero=False")
        for name, log in (("conv_layers", False), ("fc_layers", False)):
            self._check_integer(name, log=log, min_low=1)
        for name in ("conv_filters", "fc_units"):
            self._check_integer(name, log=True, min_low=1)
        for name in ("conv_kernels", "batch_size"):
            choices = getattr(self, name).choices
            if not all(is_int(c) and c > 0 for c in choices):
                raise ConfigError(
                    f"search space '{name}' choices {list(choices)!r} must be positive integers"
                )
        even = [k for k in self.conv_kernels.choices if k % 2 == 0]
        if even:
            raise ConfigError(
                f"search space 'conv_kernels' choices {list(self.conv_kernels.choices)!r} hold "
                f"the even kernel(s) {even}: a 'same'-padded convolution needs an odd kernel; "
                "use odd sizes such as [3, 5, 7]"
            )

    def _check_integer(self, name: str, *, log: bool, min_low: int) -> None:
        gene = getattr(self, name)
        if gene.log != log:
            raise ConfigError(
                f"search space '{name}' has log={gene.log}; this gene is always "
                f"{'log' if log else 'linear'}, set log={log}"
            )
        if gene.low < min_low:
            raise ConfigError(
                f"search space '{name}' low={gene.low} is below {min_low}; "
                f"use a range like [{min_low}, {max(gene.high, min_low)}]"
            )

    # ---- plain form -------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The plain config form: [low, high] for ranges, a list for choices, zero flags."""
        out: dict[str, Any] = {}
        for f in fields(self):
            gene = getattr(self, f.name)
            if isinstance(gene, Categorical):
                out[f.name] = list(gene.choices)
            else:
                out[f.name] = [gene.low, gene.high]
            if isinstance(gene, LogFloat) and f.name != "learning_rate":
                out[f"{f.name}_allow_zero"] = gene.allow_zero
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> SearchSpace:
        """Build from the plain form; missing genes keep their defaults.

        The deprecated names (:data:`DEPRECATED_NAMES`) are read as their genes, silently: the
        checkpoints of earlier runs store them.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"search space must be a mapping of gene -> bounds, got {d!r}")
        d = current_names(d, where="search space")
        valid = list(cls().to_dict())
        unknown = [k for k in d if k not in valid]
        if unknown:
            raise ConfigError(
                f"search space has unknown key(s) {unknown!r}; valid keys are {', '.join(valid)}"
            )
        genes = {
            f.name: _gene_from_plain(f.name, d[f.name], f.default) if f.name in d else f.default
            for f in fields(cls)
        }
        for name in ("l1", "l2"):
            flag = d.get(f"{name}_allow_zero", genes[name].allow_zero)
            if not isinstance(flag, bool):
                raise ConfigError(
                    f"search space '{name}_allow_zero' = {flag!r} must be true or false"
                )
            genes[name] = replace(genes[name], allow_zero=flag)
        return cls(**genes)

    # ---- the canonical genome ---------------------------------------------------------------

    def validate(self, hparams: Mapping) -> dict:
        """A normalised copy (builtin ints/floats, lists) of ``hparams``; ConfigError if invalid.

        Invalid hyperparameters are programmer or config errors, never silently clipped.
        """
        if not isinstance(hparams, Mapping):
            raise ConfigError(f"hparams must be a dict, got {type(hparams).__name__}")
        _check_keys("hparams", hparams, HPARAM_KEYS)
        filters = _check_list("conv_filters", hparams["conv_filters"])
        kernels = _check_list("conv_kernels", hparams["conv_kernels"])
        units = _check_list("fc_units", hparams["fc_units"])
        _check_same_depth(filters, kernels)
        _check_depth("conv", len(filters), self.conv_layers)
        _check_depth("fc", len(units), self.fc_layers)
        return {
            "learning_rate": _check_value(
                "learning_rate", hparams["learning_rate"], self.learning_rate
            ),
            "conv_filters": _check_layers("conv_filters", filters, self.conv_filters),
            "conv_kernels": _check_layers("conv_kernels", kernels, self.conv_kernels),
            "fc_units": _check_layers("fc_units", units, self.fc_units),
            "batch_size": _check_value("batch_size", hparams["batch_size"], self.batch_size),
            "l1": _check_value("l1", hparams["l1"], self.l1),
            "l2": _check_value("l2", hparams["l2"], self.l2),
        }

    def sample(self, rng: np.random.Generator) -> dict:
        """A random genome: depths uniform, then each layer's genes, then the scalars."""
        n_conv = self.conv_layers.sample(rng)
        n_fc = self.fc_layers.sample(rng)
        return {
            "learning_rate": self.learning_rate.sample(rng),
            "conv_filters": [self.conv_filters.sample(rng) for _ in range(n_conv)],
            "conv_kernels": [self.conv_kernels.sample(rng) for _ in range(n_conv)],
            "fc_units": [self.fc_units.sample(rng) for _ in range(n_fc)],
            "batch_size": self.batch_size.sample(rng),
            "l1": self.l1.sample(rng),
            "l2": self.l2.sample(rng),
        }

    def encode(self, hparams: Mapping) -> dict:
        """The flat form: learning_rate, conv_layers, conv_filters_i, conv_kernels_i, fc_layers,
        fc_units_i, batch_size, l1, l2 (one scalar per key, as Optuna suggests them)."""
        h = self.validate(hparams)
        flat: dict[str, Any] = {"learning_rate": h["learning_rate"]}
        flat["conv_layers"] = len(h["conv_filters"])
        flat.update({f"conv_filters_{i}": v for i, v in enumerate(h["conv_filters"])})
        flat.update({f"conv_kernels_{i}": v for i, v in enumerate(h["conv_kernels"])})
        flat["fc_layers"] = len(h["fc_units"])
        flat.update({f"fc_units_{i}": v for i, v in enumerate(h["fc_units"])})
        flat.update(batch_size=h["batch_size"], l1=h["l1"], l2=h["l2"])
        return flat

    def decode(self, flat: Mapping) -> dict:
        """The validated canonical genome for a flat dict.

        Rule for keys: every scalar key is required; ``conv_filters_i``/``conv_kernels_i`` for
        i < conv_layers and ``fc_units_i`` for i < fc_layers are required; layer keys at or
        beyond the stated depth are ignored (an optimiser may report layers of a deeper
        network it suggested in the same trial); any other key is rejected. The earlier name
        ``conv_kernel_i`` is read as ``conv_kernels_i`` (both for one layer is an error).
        """
        if not isinstance(flat, Mapping):
            raise ConfigError(f"flat hyperparameters must be a dict, got {type(flat).__name__}")
        scalars = {
            k: v for k, v in flat.items() if not (isinstance(k, str) and _LAYER_KEY.match(k))
        }
        _check_keys("flat hyperparameters", scalars, FLAT_SCALAR_KEYS)
        n_conv = _check_value("conv_layers", flat["conv_layers"], self.conv_layers)
        n_fc = _check_value("fc_layers", flat["fc_layers"], self.fc_layers)
        return self.validate(
            {
                "learning_rate": flat["learning_rate"],
                "conv_filters": _layer_values(flat, "conv_filters", "conv_layers", n_conv),
                "conv_kernels": _layer_values(
                    flat, "conv_kernels", "conv_layers", n_conv, earlier="conv_kernel"
                ),
                "fc_units": _layer_values(flat, "fc_units", "fc_layers", n_fc),
                "batch_size": flat["batch_size"],
                "l1": flat["l1"],
                "l2": flat["l2"],
            }
        )

    def suggest(self, trial: Any) -> dict:
        """A genome from an Optuna ``trial``, over this space's ranges and scales.

        The parameters are the flat encoding's names (a zero-allowed penalty adds a boolean
        ``l1_zero`` / ``l2_zero``, asked first); the genome comes back decoded and validated.
        Only ``trial.suggest_int`` / ``suggest_float`` / ``suggest_categorical`` are used.
        """
        flat: dict[str, Any] = {
            "learning_rate": suggest_gene(trial, "learning_rate", self.learning_rate)
        }
        flat["conv_layers"] = suggest_gene(trial, "conv_layers", self.conv_layers)
        for i in range(flat["conv_layers"]):
            flat[f"conv_filters_{i}"] = suggest_gene(trial, f"conv_filters_{i}", self.conv_filters)
            flat[f"conv_kernels_{i}"] = suggest_gene(trial, f"conv_kernels_{i}", self.conv_kernels)
        flat["fc_layers"] = suggest_gene(trial, "fc_layers", self.fc_layers)
        for i in range(flat["fc_layers"]):
            flat[f"fc_units_{i}"] = suggest_gene(trial, f"fc_units_{i}", self.fc_units)
        for name in ("batch_size", "l1", "l2"):
            flat[name] = suggest_gene(trial, name, getattr(self, name))
        return self.decode(flat)

    # ---- staging ----------------------------------------------------------------------------

    def narrow(self, elites: list[dict], margin: float) -> SearchSpace:
        """The space for the next stage: each range shrinks to the elites' span, widened.

        Log genes widen by the factor (high/low)**margin of the current range, linear ints by
        ceil(margin * (high - low)); the result is intersected with the current bounds,
        integers round outward, so every elite stays valid and no range is ever empty.
        Margins >= 1 keep the full range. A zero-allowed float whose elites are all 0 keeps
        its bounds (a log range cannot be centred on 0). Categoricals are unchanged.
        """
        if not is_real(margin) or not math.isfinite(margin) or margin < 0:
            raise ConfigError(f"narrow margin={margin!r} must be a finite number >= 0, e.g. 0.1")
        if not elites:
            raise ConfigError("narrow needs at least one elite genome; pass the stage's best")
        hs = [self.validate(e) for e in elites]
        m = min(float(margin), 1.0)
        return replace(
            self,
            learning_rate=narrow_float(self.learning_rate, [h["learning_rate"] for h in hs], m),
            conv_layers=narrow_int(self.conv_layers, [len(h["conv_filters"]) for h in hs], m),
            conv_filters=narrow_int(
                self.conv_filters, [v for h in hs for v in h["conv_filters"]], m
            ),
            fc_layers=narrow_int(self.fc_layers, [len(h["fc_units"]) for h in hs], m),
            fc_units=narrow_int(self.fc_units, [v for h in hs for v in h["fc_units"]], m),
            l1=narrow_float(self.l1, [h["l1"] for h in hs], m),
            l2=narrow_float(self.l2, [h["l2"] for h in hs], m),
        )


def current_names(
    plain: Mapping, *, where: str, renamed: Mapping[str, str] = DEPRECATED_NAMES
) -> dict:
    """A copy of ``plain`` with each earlier name of ``renamed`` replaced by its current one.

    Both names of one gene is an error: which value was meant cannot be told.
    """
    current = dict(plain)
    for earlier, name in renamed.items():
        if earlier not in current:
            continue
        if name in current:
            raise ConfigError(
                f"{where} gives both {earlier!r} and {name!r}; {earlier!r} is the earlier name "
                f"of {name!r}: keep only {name!r}"
            )
        current[name] = current.pop(earlier)
    return current


def _gene_from_plain(name: str, value: Any, default: Gene) -> Gene:
    """One gene from its plain form, with errors that name the gene."""
    try:
        if isinstance(default, Categorical):
            if not isinstance(value, (list, tuple)):
                example = list(default.choices)
                raise ConfigError(f"{value!r} is not a list of choices; give e.g. {example}")
            return Categorical(tuple(value))
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            example = [default.low, default.high]
            raise ConfigError(f"{value!r} is not a [low, high] pair; give e.g. {example}")
        if isinstance(default, LogFloat):
            return LogFloat(value[0], value[1], default.allow_zero)
        return Integer(value[0], value[1], default.log)
    except ConfigError as exc:
        raise ConfigError(f"search space '{name}': {exc}") from None


def _check_keys(what: str, given: Mapping, required: tuple[str, ...]) -> None:
    missing = [k for k in required if k not in given]
    if missing:
        raise ConfigError(f"{what} is missing {missing!r}; give all of {', '.join(required)}")
    unknown = [k for k in given if k not in required]
    if unknown:
        raise ConfigError(
            f"{what} has unknown key(s) {unknown!r}; valid keys are {', '.join(required)}"
        )


def _check_list(name: str, value: Any) -> list:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"hparams '{name}' = {value!r} must be a list with one value per layer")
    return list(value)


def _check_layers(name: str, values: list, gene: Gene) -> list:
    return [_check_value(f"{name}[{i}]", v, gene) for i, v in enumerate(values)]


def _check_same_depth(filters: list, kernels: list) -> None:
    if len(filters) != len(kernels):
        raise ConfigError(
            f"hparams has {len(filters)} conv_filters but {len(kernels)} conv_kernels; "
            "give one kernel per conv layer"
        )


def _check_depth(prefix: str, depth: int, gene: Integer) -> None:
    if not gene.contains(depth):
        raise ConfigError(
            f"hparams has {depth} {prefix} layers, outside {prefix}_layers {gene.describe()}; "
            "add or remove layers or widen the search space"
        )


def _check_value(name: str, value: Any, gene: Gene) -> Any:
    """``value`` as a builtin of the gene's type if it lies in the gene, else ConfigError."""
    if isinstance(gene, Categorical):
        choice = gene.match(value)
        if choice is None:
            raise ConfigError(f"{name} = {value!r} is not {gene.describe()}; use one of those")
        return choice
    if isinstance(gene, Integer):
        ok = is_int(value)
        kind = "an integer (bool and 3.0 are not)"
    else:
        ok = is_real(value) and math.isfinite(value)
        kind = "a finite number"
    if not ok:
        raise ConfigError(f"{name} = {value!r} is not {kind}; give {kind} in {gene.describe()}")
    value = int(value) if isinstance(gene, Integer) else float(value)
    if not gene.contains(value):
        raise ConfigError(
            f"{name} = {value!r} is outside {gene.describe()}; use a value in range "
            "or widen the search space"
        )
    return value


def _layer_values(
    flat: Mapping, prefix: str, depth_key: str, depth: int, earlier: str | None = None
) -> list:
    """The values of ``prefix_0`` .. ``prefix_{depth-1}``, each also read as ``earlier_i``."""
    if earlier is not None:
        flat = current_names(
            flat,
            where="flat hyperparameters",
            renamed={f"{earlier}_{i}": f"{prefix}_{i}" for i in range(depth)},
        )
    keys = [f"{prefix}_{i}" for i in range(depth)]
    missing = [k for k in keys if k not in flat]
    if missing:
        raise ConfigError(
            f"flat hyperparameters are missing {missing!r} ({depth_key} = {depth}); "
            "give one value per layer"
        )
    return [flat[k] for k in keys]


# ---- resolution -----------------------------------------------------------------------------


def max_conv_layers(resolution: int) -> int:
    """How many conv layers fit: each is followed by a 2x2 max-pool that floors the map size
    by half, and the map must still be >= 1 px after the last pool (32 -> 5, 8 -> 3, 1 -> 0)."""
    if not is_int(resolution) or resolution < 1:
        raise ConfigError(f"resolution = {resolution!r} must be a positive integer number of px")
    return int(resolution).bit_length() - 1


def check_buildable(space: SearchSpace, resolutions: Iterable[int]) -> None:
    """Refuse (ConfigError) what ``space`` can produce but the model cannot use on the ladder.

    Depth is repaired for each resolution (:func:`repair`) and widths, odd kernels and every
    scalar build at any resolution; what is left is a kernel wider than the images. At the
    lowest resolution ``px`` a 'same'-padded kernel wider than ``2 * px - 1`` has taps that
    only ever see the padding: it costs its full size in every step and can learn nothing
    a ``2 * px - 1`` kernel cannot.
    """
    lowest = min(resolutions)
    widest = 2 * lowest - 1
    choices = list(space.conv_kernels.choices)
    too_wide = [k for k in choices if k > widest]
    if too_wide:
        smallest_px = (max(too_wide) + 2) // 2
        raise ConfigError(
            f"space.conv_kernels {choices} holds {too_wide}, wider than any use on the "
            f"{lowest} px images of the first stage (at most {widest}); drop them or start "
            f"schedule.resolutions at {smallest_px} px or more"
        )


def repair(hparams: Mapping, resolution: int) -> tuple[dict, list[str]]:
    """A copy of ``hparams`` with the deepest conv layers dropped to fit ``resolution``.

    Deterministic, so a repaired genome scores the same on every rank; the notes say what
    changed and why (empty when nothing did). The input is not modified.
    """
    limit = max_conv_layers(resolution)
    if limit < 1:
        raise ConfigError(
            f"resolution = {resolution} px leaves no room for a conv layer and its 2x2 pool; "
            "use a resolution of at least 2 px"
        )
    if not isinstance(hparams, Mapping):
        raise ConfigError(f"hparams must be a dict, got {type(hparams).__name__}")
    _check_keys("hparams", hparams, HPARAM_KEYS)
    filters = _check_list("conv_filters", hparams["conv_filters"])
    kernels = _check_list("conv_kernels", hparams["conv_kernels"])
    _check_same_depth(filters, kernels)
    out = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in hparams.items()}
    if len(filters) <= limit:
        return out, []
    out["conv_filters"], out["conv_kernels"] = filters[:limit], kernels[:limit]
    note = f"conv layers {len(filters)} -> {limit}: {resolution} px allows at most {limit} poolings"
    return out, [note]

"""What a learned resizer reads: its shape and the source resolution it takes for each stage.
Plain data, so the dataset side knows which resolutions to cache; the network itself is
:mod:`evores.training.resizer`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from evores.core.errors import ConfigError

RESIZERS = ("fixed", "learned")


@dataclass(frozen=True)
class ResizerSpec:
    """A learned resizer's shape: channels ``width``, residual ``blocks``, and the ``source``
    resolution it reads (0: twice the target resolution)."""

    width: int = 16
    blocks: int = 1
    source: int = 0

    def __post_init__(self) -> None:
        if self.width < 1 or self.blocks < 0 or self.source < 0:
            raise ConfigError(
                f"learned resizer width={self.width}, blocks={self.blocks}, "
                f"source={self.source}: need width >= 1, blocks >= 0, source >= 0 (0 = 2x)"
            )

    def source_for(self, resolution: int) -> int:
        """The source resolution it reads for a ``resolution`` px target."""
        source = self.source or 2 * resolution
        if source < resolution:
            raise ConfigError(
                f"data.resizer_source {source} is below the stage resolution {resolution}; "
                "the resizer shrinks images: set it to at least the largest resolution, or 0 (2x)"
            )
        return source

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def resizer_spec(data: dict[str, Any]) -> ResizerSpec | None:
    """The config's ``[data]`` resizer settings: a spec for "learned", None for "fixed"."""
    if data.get("resizer", "fixed") == "fixed":
        return None
    return ResizerSpec(
        width=int(data["resizer_width"]),
        blocks=int(data["resizer_blocks"]),
        source=int(data["resizer_source"]),
    )

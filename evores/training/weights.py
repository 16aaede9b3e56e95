"""A trained network's weights on disk: safetensors (plain tensors, never pickle), written
atomically, with the JSON metadata that rebuilding the network needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evores.core.atomic import atomic_path


def save_weights(model, path: str | Path, metadata: dict[str, Any]) -> None:
    """``model``'s tensors (float32 on the CPU, contiguous) to ``path`` atomically, with
    ``metadata`` (JSON-able values) stored as the file's string metadata."""
    from safetensors.torch import save_file

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in
               model.state_dict().items()}  # fmt: skip
    strings = {name: json.dumps(value) for name, value in metadata.items()}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=strings)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata :func:`save_weights` stored in ``path``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {name: json.loads(value) for name, value in (handle.metadata() or {}).items()}

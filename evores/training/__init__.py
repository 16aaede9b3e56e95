"""Training one genome at one resolution: the fitness API, the Hinz template CNN, the learned
resizer, the device and its precision, and the weights on disk."""

from evores.core.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "evaluate": "fitness", "train_and_test": "fitness", "TrainBudget": "fitness",
    "PreparedData": "prepared", "build_cnn": "model",
})  # fmt: skip

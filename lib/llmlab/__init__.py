"""llmlab: plain-PyTorch implementations behind the llmlab notebooks.

One module per topic (``svd``, ``perplexity``, ``decoding``, ``schedules``, ``accumulation``,
``checkpointing``, ``precision``, ``lora``) plus shared helpers: :func:`default_device`,
:func:`seed_everything`, ``llmlab.plotting`` (one figure style) and ``llmlab.widgets``.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__version__ = "0.1.0"

__all__ = ["default_device", "seed_everything", "__version__"]


def default_device() -> torch.device:
    """The device every notebook uses: CUDA if present, else Apple's MPS, else the CPU.

    Set the environment variable ``LLMLAB_DEVICE`` (e.g. ``cpu``) to override the choice.
    """
    forced = os.environ.get("LLMLAB_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python's, NumPy's and torch's random generators (all devices) for repeatable runs."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

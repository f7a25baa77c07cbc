"""Small torch helpers every topic module shares: devices, dtypes, random state, the ignore label.

* :func:`default_device` picks the device every notebook uses (CUDA, then MPS, then the CPU);
  :func:`resolve_device` turns a ``device`` argument into a ``torch.device`` (``None`` means
  :func:`default_device`) and :func:`model_device` reads where a model lives.
* :func:`resolve_dtype`: the one set of dtype names llmlab accepts (``"fp16"``, ``"bf16"``,
  ``"float32"``, ``torch.float64`` ...).
* :func:`seed_everything` seeds every generator; :func:`isolated_rng` runs a block with its own
  random stream and leaves the caller's untouched.
* :data:`IGNORE_INDEX` = -100, the label PyTorch's cross-entropy (and Hugging Face) ignores.
* :func:`eval_mode` runs a block with a model in eval mode and gives it back its mode;
  :func:`pad_id` is the id a tokenizer pads with (its pad token, else its EOS token).
* :func:`read_floats` reads the losses a training loop collected as tensors, in one host sync;
  :func:`grads_by_name` copies a model's gradients out (accumulation and DDP compare them).
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
from torch import nn

from ._checks import check_int

__all__ = [
    "IGNORE_INDEX",
    "DTYPE_NAMES",
    "default_device",
    "seed_everything",
    "resolve_device",
    "resolve_dtype",
    "model_device",
    "isolated_rng",
    "RNGState",
    "rng_state",
    "replayed_rng",
    "eval_mode",
    "pad_id",
    "read_floats",
    "grads_by_name",
]

#: The label of a position that gets no loss (PyTorch's ``cross_entropy(ignore_index=-100)``).
IGNORE_INDEX = -100

#: Every dtype name llmlab accepts, lower case, and the dtype it means.
DTYPE_NAMES = {
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp64": torch.float64, "float64": torch.float64, "double": torch.float64,
}
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def default_device() -> torch.device:
    """The device every notebook uses: CUDA if present, else Apple's MPS, else the CPU.

    Set the environment variable ``LLMLAB_DEVICE`` (e.g. ``cpu``) to override the choice.
    """
    forced = os.environ.get("LLMLAB_DEVICE")
    if forced:
        return resolve_device(forced, name="LLMLAB_DEVICE")
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python's, NumPy's and torch's random generators (all devices) for repeatable runs."""
    seed = check_int("seed", seed, low=0, high=2**63 - 1)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device=None, *, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device``: None means :func:`default_device`.

    Accepts a ``torch.device``, a string such as ``"cpu"``, ``"cuda:0"`` or an int (a CUDA
    index). Raises ``ValueError`` for a string torch does not know and for a device this machine
    does not have (``"cuda"`` without a GPU), ``TypeError`` for anything else.
    """
    if device is None:
        return default_device()
    if isinstance(device, bool) or not isinstance(device, (torch.device, str, int)):
        raise TypeError(f"{name} must be a torch.device, a string such as 'cpu' or 'cuda', or None; got {device!r:.30}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{name} must name a device such as 'cpu', 'cuda' or 'cuda:0', got {device!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={device!r}: no CUDA GPU is available here (use 'cpu')")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{name}={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{name}={device!r}: Apple MPS is not available here (use 'cpu')")
    return dev


def resolve_dtype(dtype, *, name: str = "dtype", default: torch.dtype | None = None,
                  allowed: tuple[torch.dtype, ...] = _FLOAT_DTYPES) -> torch.dtype:
    """``dtype`` (a ``torch.dtype`` or a name from :data:`DTYPE_NAMES`) as a ``torch.dtype``.

    ``None`` gives ``default`` (an error if there is none). ``allowed`` limits the result;
    anything else raises ``ValueError`` listing what is accepted (``TypeError`` for a value
    that is neither a dtype nor a string).
    """
    if dtype is None and default is not None:
        return default
    names = sorted(k for k, v in DTYPE_NAMES.items() if v in allowed)
    listing = ", ".join(str(d) for d in allowed)
    if isinstance(dtype, str):
        resolved = DTYPE_NAMES.get(dtype.lower())
    elif isinstance(dtype, torch.dtype):
        resolved = dtype
    else:
        raise TypeError(f"{name} must be a torch.dtype or one of the names {names}, got {type(dtype).__name__}")
    if resolved not in allowed:
        raise ValueError(f"{name} must be one of {listing} (or the names {names}), got {dtype!r}")
    return resolved


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` (an ``nn.Module``) lives: the device of its first parameter (or buffer); the CPU if it has none."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def isolated_rng(seed: int | None = None):
    """Run a block on its own random stream: torch's CPU (and initialised CUDA) generators are
    saved on entry and restored on exit, and seeded with ``seed`` if given.

    ``with isolated_rng(0): layer = nn.Linear(4, 4)`` gives the same layer every time and leaves
    the caller's ``torch.rand`` sequence exactly where it was.
    """
    if seed is not None:
        seed = check_int("seed", seed, low=0, high=2**63 - 1)
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        yield


class RNGState:
    """A snapshot of the random state a computation on ``device`` draws from (CPU, plus CUDA there)."""

    __slots__ = ("cpu", "cuda", "device")

    def __init__(self, cpu: torch.Tensor, cuda: torch.Tensor | None, device: torch.device):
        self.cpu, self.cuda, self.device = cpu, cuda, device


def rng_state(device=None) -> RNGState:
    """Snapshot the CPU generator and, for a CUDA ``device``, that device's generator."""
    dev = resolve_device(device) if device is not None else torch.device("cpu")
    cuda = torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None
    return RNGState(torch.get_rng_state(), cuda, dev)


@contextlib.contextmanager
def replayed_rng(state: RNGState):
    """Run a block from the random state ``state`` was taken at, then give the caller's state back.

    This is what recomputation needs: a ``Dropout`` replayed in backward must draw the same mask
    it drew in the forward pass (``torch.utils.checkpoint``'s ``preserve_rng_state``).
    """
    if not isinstance(state, RNGState):
        raise TypeError(f"state must be an RNGState from rng_state(), got {type(state).__name__}")
    devices = [state.device] if state.cuda is not None else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(state.cpu)
        if state.cuda is not None:
            torch.cuda.set_rng_state(state.cuda, state.device)
        yield


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run a block with ``model.eval()`` (Dropout off), then give ``model`` back the mode it had,
    also when the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def pad_id(tokenizer, *, default: int | None = None) -> int | None:
    """The id ``tokenizer`` pads with: its pad token, else its EOS token (Llama-style tokenizers
    have no pad token; the attention mask hides the padding anyway), else ``default``."""
    if not (hasattr(tokenizer, "pad_token_id") and hasattr(tokenizer, "eos_token_id")):
        raise TypeError(f"tokenizer must be a tokenizer with pad_token_id and eos_token_id, got {type(tokenizer).__name__}")
    if default is not None:
        check_int("default", default, low=0)
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return default


def read_floats(values: list[torch.Tensor]) -> tuple[float, ...]:
    """0-d tensors a loop collected (``losses.append(loss.detach())``) as Python floats, read in one
    host sync after the loop instead of one ``.item()`` per step (which stalls a GPU every step)."""
    return tuple(torch.stack(values).tolist()) if values else ()


def grads_by_name(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> a detached copy of each trainable parameter's gradient (zeros where the loss did not reach)."""
    return {name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
            for name, p in model.named_parameters() if p.requires_grad}

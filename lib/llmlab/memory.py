"""Where training memory goes: parameter counts, the model-state ledger, saved activations.

* :func:`count_parameters` -> ``(trainable, total)``, the one order llmlab uses everywhere.
* :class:`StateLedger`: bytes of the model states per component (weights, grads, fp32 master
  weights, optimizer states, other). :func:`memory_ledger` fills it from the formulas,
  :func:`measured_ledger` from the real tensors of a training setup: the two can be compared
  line by line (16 bytes per parameter for AdamW, with or without mixed precision).
* :class:`SavedTensorTracker` and :func:`saved_activation_bytes`: the bytes autograd keeps for
  backward (activations), counted with ``torch.autograd.graph.saved_tensors_hooks``; identical
  on the CPU and on a GPU.
* :class:`LiveActivationTracker`: the bytes of every tensor a model's layers produce, for as long
  as the tensor is *alive* (whoever holds it: autograd, or just the next layer). Under
  ``torch.no_grad`` nothing is saved, yet activations do exist for a moment; this tracker sees
  them, so "inference needs O(1) memory in depth" is a measurement rather than a count of zero.
* :func:`peak_allocated_bytes`: the most bytes torch's allocator held at once while a function
  ran, above what it held before (every tensor: activations, temporaries, gradients), on the CPU
  and on a GPU.
"""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

from ._checks import check_callable, check_choice, check_int, check_module
from ._torch import resolve_device
from .timing import cpu_profile

__all__ = [
    "ParamCount",
    "count_parameters",
    "OPTIMIZER_STATES",
    "PRECISIONS",
    "StateLedger",
    "memory_ledger",
    "measured_ledger",
    "tensor_bytes",
    "SavedTensorTracker",
    "saved_activation_bytes",
    "LiveActivationTracker",
    "peak_allocated_bytes",
]


class ParamCount(NamedTuple):
    """Numbers of parameters: ``trainable`` (``requires_grad``) and ``total``."""

    trainable: int
    total: int


def count_parameters(model: nn.Module) -> ParamCount:
    """``(trainable, total)`` numbers of parameters of ``model``; shared (tied) tensors count once."""
    check_module("model", model)
    params = list(model.parameters())  # nn.Module.parameters() de-duplicates tied weights
    return ParamCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor's elements (``numel * element_size``); a step of the ledgers, which pass it tensors."""
    return t.numel() * t.element_size()


#: Optimizer state tensors kept per trainable parameter (each the size of the parameter, fp32).
OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "sgd_momentum": 1, "sgd": 0}
#: ``"fp32"``: everything in fp32; ``"mixed"``: half weights and grads, fp32 master and states.
PRECISIONS = ("mixed", "fp32")


@dataclass(frozen=True)
class StateLedger:
    """Bytes of a training setup's model states, per component (activations are not model states).

    ``other`` holds small optimizer bookkeeping (torch's Adam keeps one ``step`` scalar per
    parameter tensor); it is 0 in the formula.
    """

    weights: int
    grads: int
    master_weights: int
    optimizer_states: int
    other: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.master_weights + self.optimizer_states + self.other

    def as_dict(self) -> dict[str, int]:
        """The components and ``total``, as a dict (for tables)."""
        return {**asdict(self), "total": self.total}

    def __getitem__(self, key: str) -> int:
        """``ledger["total"]``, ``ledger["weights"]``: the mapping access the ledger had when it was a dict."""
        return self.as_dict()[key]


def _count(model) -> ParamCount:
    """Counts of a module, or of a bare parameter count (all of them trainable)."""
    if isinstance(model, nn.Module):
        return count_parameters(model)
    if isinstance(model, bool) or not isinstance(model, int):
        raise TypeError(f"model must be an nn.Module or a parameter count (int), got {type(model).__name__}")
    n = check_int("model", model, low=0)
    return ParamCount(n, n)


def memory_ledger(model, *, optimizer: str = "adamw", precision: str = "mixed") -> StateLedger:
    """Bytes of the model states per component, from the formulas (no tensor is touched).

    ``model``: an ``nn.Module`` (N = its parameters, tied ones once; frozen ones get weights
    only) or a parameter count. With k fp32 optimizer states per trainable parameter
    (:data:`OPTIMIZER_STATES`: AdamW/Adam 2, SGD with momentum 1, SGD 0):

    - ``precision="fp32"``:  weights 4N, grads 4N, master_weights 0,  optimizer_states 4kN;
    - ``precision="mixed"``: weights 2N, grads 2N, master_weights 4N, optimizer_states 4kN
      (fp16 or bf16 weights and grads, fp32 master copy and states).

    AdamW: 16 bytes per parameter either way.
    """
    check_choice("optimizer", optimizer, OPTIMIZER_STATES)
    check_choice("precision", precision, PRECISIONS)
    n_train, n_all = _count(model)
    k = OPTIMIZER_STATES[optimizer]
    half = precision == "mixed"
    return StateLedger(
        weights=(2 if half else 4) * n_all,
        grads=(2 if half else 4) * n_train,
        master_weights=4 * n_train if half else 0,
        optimizer_states=4 * k * n_train,
    )


def measured_ledger(model: nn.Module, optimizer=None) -> StateLedger:
    """Bytes of the real tensors of a training setup, per component; call it after a step.

    ``optimizer``: None (weights and grads only), a ``torch.optim.Optimizer`` over the model's own
    parameters, or a mixed-precision wrapper exposing ``master_params`` and an inner
    ``optimizer`` (:class:`llmlab.precision.MasterWeightsOptimizer`). Sums, de-duplicating shared
    tensors: ``weights`` (model parameters), ``grads`` (their ``.grad``, plus fp32 master grads if
    any are alive), ``master_weights``, ``optimizer_states`` (state tensors shaped like their
    parameter: Adam's m and v, SGD's momentum) and ``other`` (the remaining state tensors).
    Buffers (e.g. rotary tables) are not model states and are not counted.
    """
    check_module("model", model)
    master = getattr(optimizer, "master_params", None)
    inner = getattr(optimizer, "optimizer", optimizer) if master is not None else optimizer
    if inner is not None and not isinstance(inner, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, a MasterWeightsOptimizer or None, got {inner!r:.40}")
    if inner is not None:
        keeps_state = isinstance(inner, (torch.optim.Adam, torch.optim.AdamW)) or any(
            group.get("momentum", 0) for group in inner.param_groups)
        if keeps_state and len(inner.state) == 0:
            raise ValueError("optimizer has no state yet: call measured_ledger after one optimizer step")
    params = list(model.parameters())
    weights = sum(tensor_bytes(p) for p in params)
    grads = sum(tensor_bytes(p.grad) for p in params if p.grad is not None)
    master_bytes = 0
    if master is not None:
        master_bytes = sum(tensor_bytes(m) for m in master)
        grads += sum(tensor_bytes(m.grad) for m in master if m.grad is not None)
    states = other = 0
    for param, state in (inner.state.items() if inner is not None else ()):
        for value in state.values():
            if not isinstance(value, torch.Tensor):
                continue
            if value.shape == param.shape and value.dim() > 0:
                states += tensor_bytes(value)
            else:
                other += tensor_bytes(value)
    return StateLedger(weights=weights, grads=grads, master_weights=master_bytes, optimizer_states=states, other=other)


# ---------------------------------------------------------------------------------------------
# Saved activations
# ---------------------------------------------------------------------------------------------


class _Packed:
    """What the pack hook hands autograd instead of the tensor; its death = the tensor's release."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


class SavedTensorTracker:
    """Context manager counting live bytes autograd has saved for backward, and their peak.

    ``with SavedTensorTracker(params) as tr: ...`` then read ``tr.peak_bytes`` (activations),
    ``tr.peak_param_bytes`` (saved views of ``params``) and ``tr.n_packed``. Bytes are per
    storage (a tensor saved twice counts once) and are decremented when autograd frees the
    saved tensor.
    """

    def __init__(self, params=()):
        if isinstance(params, torch.Tensor) or not hasattr(params, "__iter__"):
            raise TypeError(f"params must be an iterable of tensors (e.g. model.parameters()), got {type(params).__name__}")
        params = list(params)
        if not all(isinstance(p, torch.Tensor) for p in params):
            raise TypeError("params must hold tensors (e.g. model.parameters())")
        self._param_storages = {p.untyped_storage().data_ptr() for p in params}
        self._refs: dict[int, int] = {}      # storage pointer -> number of live saved copies
        self._nbytes: dict[int, int] = {}    # storage pointer -> bytes
        self.live_bytes = 0
        self.live_param_bytes = 0
        self.peak_bytes = 0
        self.peak_param_bytes = 0
        self.n_packed = 0
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> _Packed:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        self.n_packed += 1
        if self._refs.get(key, 0) == 0:
            self._nbytes[key] = storage.nbytes()
            if key in self._param_storages:
                self.live_param_bytes += storage.nbytes()
                self.peak_param_bytes = max(self.peak_param_bytes, self.live_param_bytes)
            else:
                self.live_bytes += storage.nbytes()
                self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self._refs[key] = self._refs.get(key, 0) + 1
        # Keep a detached alias (same storage): holding a saved *output* itself would keep its
        # grad_fn alive, which holds this object, a cycle through C++ that Python's garbage
        # collector cannot see; the activations (and this count) would never be released.
        packed = _Packed(t.detach())
        weakref.finalize(packed, self._release, key)
        return packed

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            nbytes = self._nbytes.pop(key)
            if key in self._param_storages:
                self.live_param_bytes -= nbytes
            else:
                self.live_bytes -= nbytes

    @staticmethod
    def _unpack(packed: _Packed) -> torch.Tensor:
        return packed.tensor

    def __enter__(self) -> "SavedTensorTracker":
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)


def saved_activation_bytes(model: nn.Module, inputs) -> int:
    """Bytes autograd saves for backward during one forward of ``model(**inputs)`` (or ``model(inputs)``).

    Every distinct saved tensor except the model's own parameters (those are model states,
    counted by the ledger). Run it on an fp32 model and on a half-precision copy to see where
    mixed precision saves memory: the activations.
    """
    check_module("model", model)
    tracker = SavedTensorTracker(model.parameters())
    with torch.enable_grad(), tracker:
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
        peak = tracker.peak_bytes
    del out
    return peak


class LiveActivationTracker:
    """Context manager measuring the live bytes of the activations a model's layers produce.

    ``with LiveActivationTracker(model) as tr: model(x)`` then read ``tr.peak_bytes``. A forward
    hook on every leaf module registers its output tensors; each distinct *storage* counts its
    bytes from the moment it is produced until it is freed (a ``weakref.finalize`` on the storage
    fires when the last holder lets go: the next layer's local variable, or autograd's saved
    tensors). So under ``torch.no_grad`` an activation lives only until the next one exists, while
    in a training forward pass autograd keeps the ones backward needs. The model's input and
    tensors a module creates internally without returning them are not counted. Identical on
    CPU and GPU (on CUDA, ``torch.cuda.max_memory_allocated`` is the allocator's wider view).
    ``live_bytes`` is what is still alive now; the hooks are removed on exit.
    """

    def __init__(self, model: nn.Module):
        check_module("model", model)
        self._leaves = [m for m in model.modules() if next(m.children(), None) is None] or [model]
        self._handles: list = []
        self._live: dict[int, int] = {}   # storage pointer -> bytes, for the storages alive now
        self.live_bytes = 0
        self.peak_bytes = 0
        self.n_tensors = 0

    def _hook(self, module, args, output) -> None:
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        for t in outputs:
            if isinstance(t, torch.Tensor):
                self._register(t)

    def _register(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self._live or storage.nbytes() == 0:
            return  # a view of a tensor already counted (or an empty one)
        self._live[key] = storage.nbytes()
        self.n_tensors += 1
        self.live_bytes += storage.nbytes()
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        # The storage's Python object lives exactly as long as the storage (PyObject preservation).
        weakref.finalize(storage, self._release, key)

    def _release(self, key: int) -> None:
        self.live_bytes -= self._live.pop(key, 0)

    def __enter__(self) -> "LiveActivationTracker":
        self._handles = [m.register_forward_hook(self._hook) for m in self._leaves]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


# ---------------------------------------------------------------------------------------------
# Peak allocation
# ---------------------------------------------------------------------------------------------


def peak_allocated_bytes(fn, *, device=None) -> int:
    """The most bytes torch's allocator held at once while ``fn()`` ran, above what it held before.

    On CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the
    bytes allocated before. On the CPU torch keeps no such counter, and neither ``tracemalloc``
    (it sees Python's allocator, not torch's) nor the process's resident size (it includes what
    glibc keeps cached, and Python) measure it; this runs ``fn`` under
    ``torch.profiler.profile(profile_memory=True)``, which records every allocation and free of
    torch's CPU allocator with its size, and returns the peak of their running sum. Tensors that
    existed before ``fn`` are the zero line; the profiler does not know their sizes, so if ``fn``
    frees one of them the result is an upper bound (torch logs a warning). ``device`` (None: :func:`llmlab.default_device`)
    says which allocator to watch.
    """
    check_callable("fn", fn, what="a callable taking no arguments")
    device = resolve_device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - base)
    if device.type != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda' (torch reports no allocation peak for {device.type!r})")
    cpu = torch.autograd.DeviceType.CPU
    prof = cpu_profile(fn, profile_memory=True)
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == cpu), key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:  # nbytes > 0 for an allocation, < 0 for a free
        live += event.nbytes()
        peak = max(peak, live)
    return peak

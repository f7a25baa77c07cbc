"""Gradient checkpointing on an n-layer chain: what each strategy keeps, and what it recomputes.

Backward through layer i needs that layer's input activation ``h_i`` (shape ``(batch, width)``).
A strategy decides which of ``h_0 .. h_n`` to keep after the forward pass and which to
recompute when backward reaches them. In units of one activation:

    strategy        peak live saved activations    layer forward executions
    store_all       n + 1             O(n)         n
    recompute_all   3                 O(1)         n (n + 1) / 2          O(n^2)
    sqrt            s + L_last        O(sqrt n)    2n - L_last <= 2n      O(n)
    torch           torch.utils.checkpoint.checkpoint_sequential(use_reentrant=False)

(``s`` segments, ``L_last`` layers in the last one; ``s = ceil(sqrt n)`` equal segments by default, so
about ``2 sqrt(n)`` activations; unequal segments of lengths s, s-1, ..., 1 would keep about
``sqrt(2n)``, still O(sqrt n); ``measure(..., "sqrt", sizes=[...])`` runs such a split).
:func:`theory_saved_activations` and :func:`theory_forward_calls` give the exact counts for equal
segments and :func:`measure` measures them.

Recomputation replays layers, so a random layer (``Dropout``) must draw the same numbers again:
each recomputed segment keeps the random state its first run started from and replays from it,
as ``torch.utils.checkpoint`` does with ``preserve_rng_state=True``: the CPU generator and that
of the input's device (CUDA, MPS), through :func:`llmlab._torch.rng_state`.

How memory is measured (:class:`llmlab.memory.SavedTensorTracker`): every tensor autograd saves for backward passes through
``torch.autograd.graph.saved_tensors_hooks``. The pack hook wraps it in a small holder; the
holder is freed when autograd releases that saved tensor (after the node's backward), and a
``weakref.finalize`` on it decrements the count. Bytes are counted once per *storage*: the
output of layer i saved by its Tanh and the input of layer i+1 saved by its Linear are the same
tensor, and so is a checkpoint saved by several recompute nodes. Tensors that are (views of)
the model's **parameters** (Linear saves ``W^T``) are not activations: they are excluded from
``peak_saved_bytes`` and reported separately as ``peak_param_bytes``. This accounting is the
same on CPU and GPU; on CUDA, :class:`CheckpointStats` also carries the allocator's view.
For ``"torch"`` the hooks see the segment inputs torch keeps and the un-checkpointed last
segment; the tensors torch recomputes during backward sit behind torch's own (inner) hooks and
are not counted (the peak is reached at the end of the forward pass anyway).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.utils.checkpoint
from torch import nn

from ._checks import check_choice, check_int, check_sequence, check_tensor
from ._torch import isolated_rng, replayed_rng, rng_state
from .fitting import ScalingFit, fit_scaling, loglog_slope
from .memory import SavedTensorTracker
from .timing import Stopwatch

STRATEGIES = ("store_all", "recompute_all", "sqrt", "torch")

__all__ = [
    "STRATEGIES",
    "CheckpointStats",
    "LayerCall",
    "make_chain",
    "measure",
    "run_strategy",
    "default_segments",
    "segment_sizes",
    "theory_saved_activations",
    "theory_forward_calls",
    "SavedTensorTracker",
    "max_relative_grad_error",
    "ScalingFit",
    "fit_scaling",
    "loglog_slope",
]


# ---------------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------------


def make_chain(n_layers: int, width: int, *, seed: int = 0) -> nn.Sequential:
    """An ``nn.Sequential`` of ``n_layers`` blocks ``Linear(width, width) -> Tanh``.

    Every block maps ``(batch, width) -> (batch, width)``, so one activation is always
    ``batch * width`` numbers. Weights are orthogonal (gain 1) so the signal neither dies nor
    explodes over hundreds of layers; the global random state is left untouched.
    """
    check_int("n_layers", n_layers, low=1, high=10_000)
    check_int("width", width, low=1, high=16_384)
    if n_layers * width * width > 2**28:  # 1 GiB of float32 weights: far past any lab experiment
        raise ValueError(f"n_layers * width**2 must be <= 2**28 weights (1 GiB), got {n_layers} * {width}**2")
    check_int("seed", seed, low=0)
    gen = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(n_layers):
        with isolated_rng():  # nn.Linear's default init draws from the global RNG: leave it alone
            linear = nn.Linear(width, width)
        with torch.no_grad():
            q, r = torch.linalg.qr(torch.randn(width, width, generator=gen))
            linear.weight.copy_(q * torch.sign(torch.diagonal(r)))  # Haar-random orthogonal
            linear.bias.uniform_(-0.1, 0.1, generator=gen)
        blocks.append(nn.Sequential(linear, nn.Tanh()))
    return nn.Sequential(*blocks)


# ---------------------------------------------------------------------------------------------
# Theory
# ---------------------------------------------------------------------------------------------


def default_segments(n_layers: int) -> int:
    """``ceil(sqrt(n))``: the number of segments (checkpoints) that balances memory."""
    check_int("n_layers", n_layers, low=1)
    return math.isqrt(n_layers - 1) + 1 if n_layers > 1 else 1


def segment_sizes(n_layers: int, segments: int) -> list[int]:
    """Split ``n_layers`` into ``segments`` contiguous segments, as equal as possible.

    The first ``n mod s`` segments get one extra layer, so the last segment is never the larger.
    """
    check_int("n_layers", n_layers, low=1)
    _check_segments(segments, n_layers)
    q, r = divmod(n_layers, segments)
    return [q + 1 if j < r else q for j in range(segments)]


def theory_saved_activations(n_layers: int, strategy: str, segments: int | None = None) -> int:
    """Peak number of live saved activations (units of ``batch * width`` elements).

    - store_all: ``h_0 .. h_n`` -> ``n + 1``.
    - recompute_all: the input ``h_0``, plus the one layer being differentiated (its input and
      its output) -> ``3`` (``2`` when ``n = 1``: that layer's input *is* ``h_0``).
    - sqrt with ``s`` segments of sizes ``L_0 .. L_{s-1}``: at the end of the forward pass the
      ``s - 1`` checkpoints plus the last segment kept in full (its input and ``L_{s-1}``
      outputs) -> ``s + L_{s-1}``; backward through segment j holds ``j + 1`` checkpoints and
      its ``L_j`` recomputed outputs, never more. With ``s = ceil(sqrt n)`` that is about
      ``2 sqrt(n)``.
    """
    _check_theory_args(n_layers, strategy, segments)
    if strategy == "store_all":
        return n_layers + 1
    if strategy == "recompute_all":
        return 2 if n_layers == 1 else 3
    s = default_segments(n_layers) if segments is None else segments
    sizes = segment_sizes(n_layers, s)
    return s + sizes[-1]


def theory_forward_calls(n_layers: int, strategy: str, segments: int | None = None) -> int:
    """Number of layer forward executions for one forward + backward.

    - store_all: ``n``.
    - recompute_all: layer i's backward needs ``h_i``, rebuilt from ``h_0`` in ``i`` steps plus
      one step with autograd on; the forward pass itself *is* the last layer's rebuild, so
      ``sum_{i=1..n} i = n (n + 1) / 2``.
    - sqrt: ``n`` in the forward pass, then every segment but the last (kept in full) is run
      again once: ``2n - L_last``.
    """
    _check_theory_args(n_layers, strategy, segments)
    n = n_layers
    if strategy == "store_all":
        return n
    if strategy == "recompute_all":
        return n * (n + 1) // 2
    s = default_segments(n) if segments is None else segments
    return 2 * n - segment_sizes(n, s)[-1]



# ---------------------------------------------------------------------------------------------
# The manual strategies: a segment that saves only its checkpoint and recomputes in backward
# ---------------------------------------------------------------------------------------------


class _RecomputedSegment(torch.autograd.Function):
    """``y = layers[start:end](h)`` run without autograd; backward rebuilds it from a checkpoint.

    Forward saves only ``checkpoint`` (``h`` itself for the sqrt strategy, the chain input
    ``h_0`` for recompute_all). Backward first replays ``layers[:start]`` from the checkpoint
    without autograd (if the checkpoint is not ``h``), then replays the segment with autograd
    on and differentiates it. The segment's parameters are inputs, so their gradients flow out
    through ordinary autograd.
    """

    @staticmethod
    def forward(ctx, h, checkpoint, layers, ckpt_start, start, end, ckpt_rng, *params):
        ctx.layers, ctx.ckpt_start, ctx.start, ctx.end = layers, ckpt_start, start, end
        ctx.ckpt_rng = ckpt_rng  # the random state when the layers after the checkpoint first ran
        ctx.save_for_backward(checkpoint)
        for layer in layers[start:end]:
            h = layer(h)
        return h

    @staticmethod
    def backward(ctx, grad_y):
        (checkpoint,) = ctx.saved_tensors
        layers = ctx.layers
        h = checkpoint
        params = [p for layer in layers[ctx.start:ctx.end] for p in layer.parameters()]
        # Replay from the random state of the first run, so a Dropout draws the same masks again.
        with replayed_rng(ctx.ckpt_rng):
            with torch.no_grad():                  # rebuild h_start from the checkpoint
                for layer in layers[ctx.ckpt_start:ctx.start]:
                    h = layer(h)
            h = h.detach().requires_grad_(True)
            with torch.enable_grad():              # replay the segment, this time keeping its graph
                y = h
                for layer in layers[ctx.start:ctx.end]:
                    y = layer(y)
        grads = torch.autograd.grad(y, [h, *params], grad_y)
        return (grads[0], None, None, None, None, None, None, *grads[1:])


def _run_segment(layers, h, checkpoint, ckpt_start, start, end, ckpt_rng):
    params = [p for layer in layers[start:end] for p in layer.parameters()]
    return _RecomputedSegment.apply(h, checkpoint, layers, ckpt_start, start, end, ckpt_rng, *params)


def _forward_recompute_all(layers, x):
    """Layers 0..n-2 each as a node that keeps only ``h_0``; the last layer runs normally.

    Every node replays from ``h_0`` and from the random state before layer 0, so the replayed
    layers draw the same random numbers, in the same order, as the forward pass did.
    """
    n = len(layers)
    h, start_rng = x, rng_state(x.device)
    for i in range(n - 1):
        h = _run_segment(layers, h, x, 0, i, i + 1, start_rng)
    return layers[n - 1](h)


def _forward_sqrt(layers, x, sizes):
    """Segments of ``sizes`` layers: each but the last keeps its input (a checkpoint) and the random
    state; the last runs normally."""
    h, start = x, 0
    for size in sizes[:-1]:
        h = _run_segment(layers, h, h, start, start, start + size, rng_state(h.device))
        start += size
    for layer in layers[start:]:
        h = layer(h)
    return h


# ---------------------------------------------------------------------------------------------
# measure
# ---------------------------------------------------------------------------------------------


class LayerCall(NamedTuple):
    """One layer (block) forward execution, in the order they ran: the checkpoint schedule."""

    layer: int               # index of the block in the chain
    recompute: bool          # True if it ran during backward (a replay), False in the forward pass
    live_saved_bytes: int    # activations saved for backward and alive right after this call
                             # (when it started, for a call torch's early-stopping replay cut short)


@dataclass(frozen=True)
class CheckpointStats:
    """One forward + backward of a chain under one strategy.

    peak_saved_bytes: peak live bytes of activations saved for backward (parameters excluded).
    forward_calls: layer (block) forward executions, recomputation included.
    seconds: wall time of forward + backward.
    grads: parameter name -> gradient of ``loss = output.sum()``.
    peak_param_bytes: peak live bytes of saved tensors that are views of parameters.
    cuda_peak_bytes: on CUDA, ``torch.cuda.max_memory_allocated`` during the step minus what was
        allocated before it (activations, recomputation, gradients, workspace); None on CPU.
    schedule: every layer forward as a :class:`LayerCall`, in execution order (``forward_calls``
        of them): which layer ran, whether it was a recomputation, and the saved bytes then.
    """

    peak_saved_bytes: int
    forward_calls: int
    seconds: float
    grads: dict[str, torch.Tensor]
    peak_param_bytes: int = 0
    cuda_peak_bytes: int | None = None
    schedule: tuple[LayerCall, ...] = ()


def measure(model: nn.Sequential, x: torch.Tensor, strategy: str, *, segments: int | None = None,
            sizes: Sequence[int] | None = None) -> CheckpointStats:
    """Run ``loss = model(x).sum()`` forward and backward under ``strategy`` and measure it.

    ``model`` is an ``nn.Sequential`` of blocks (one block = one "layer"), e.g. from
    :func:`make_chain`; ``x`` is ``(batch, width)`` on the model's device and is detached
    (gradients are taken for the parameters only, so layer 0 needs no ``W^T``). ``segments`` (sqrt
    and torch only, ``1 <= segments <= n``, default ``ceil(sqrt n)``) sets the number of
    segments, split as :func:`segment_sizes` does; ``sizes`` (sqrt only, instead of ``segments``)
    gives the segments' lengths in layers, first to last, any split that adds up to ``n``. The
    model is left as it was: the counting hooks are removed and every parameter's ``.grad`` is
    restored.
    """
    layers, segments = _check_run_args(model, x, strategy, segments, sizes)
    named = list(model.named_parameters())
    old_grads = {name: p.grad for name, p in named}
    schedule: list[LayerCall] = []
    in_backward = False
    tracker = SavedTensorTracker(p for _, p in named)

    def started(index):
        def hook(module, args):  # counted when it starts: torch's recomputation may stop inside a layer
            schedule.append(LayerCall(index, in_backward, tracker.live_bytes))
        return hook

    def finished(module, args, output):  # blocks do not nest: the last call is this one
        schedule[-1] = schedule[-1]._replace(live_saved_bytes=tracker.live_bytes)

    handles = [h for i, layer in enumerate(layers)
               for h in (layer.register_forward_pre_hook(started(i)), layer.register_forward_hook(finished))]
    x = x.detach()
    is_cuda = x.device.type == "cuda"
    try:
        for _, p in named:
            p.grad = None
        if is_cuda:
            torch.cuda.synchronize(x.device)
            base = torch.cuda.memory_allocated(x.device)
            torch.cuda.reset_peak_memory_stats(x.device)
        with Stopwatch(x.device) as stopwatch, tracker:
            loss = _forward(model, layers, x, strategy, segments).sum()  # the output dies here
            in_backward = True  # every layer forward from here on is a recomputation
            loss.backward()
        cuda_peak = torch.cuda.max_memory_allocated(x.device) - base if is_cuda else None
        grads = {name: p.grad for name, p in named}
    finally:
        for h in handles:
            h.remove()
        for name, p in named:
            p.grad = old_grads[name]
    return CheckpointStats(
        peak_saved_bytes=tracker.peak_bytes,
        forward_calls=len(schedule),
        seconds=stopwatch.seconds,
        grads=grads,
        peak_param_bytes=tracker.peak_param_bytes,
        cuda_peak_bytes=cuda_peak,
        schedule=tuple(schedule),
    )


def run_strategy(model: nn.Sequential, x: torch.Tensor, strategy: str, *, segments: int | None = None,
                 sizes: Sequence[int] | None = None) -> torch.Tensor:
    """The forward pass of ``model(x)`` under ``strategy``, nothing measured: returns the output,
    whose graph recomputes as the strategy says when backward runs (``.sum().backward()``).

    The same arguments as :func:`measure`, without its counting hooks: what to time.
    """
    layers, segments = _check_run_args(model, x, strategy, segments, sizes)
    return _forward(model, layers, x.detach(), strategy, segments)


def _forward(model, layers, x, strategy, segments) -> torch.Tensor:
    if strategy == "store_all":
        return model(x)
    if strategy == "recompute_all":
        return _forward_recompute_all(layers, x)
    if strategy == "sqrt":
        return _forward_sqrt(layers, x, segments if isinstance(segments, list) else segment_sizes(len(layers), segments))
    return torch.utils.checkpoint.checkpoint_sequential(model, segments, x, use_reentrant=False)


def max_relative_grad_error(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """``max over parameters of ||g - g_ref|| / ||g_ref||`` (the same parameter names required).

    A reference gradient that is exactly zero has no relative error: ``ValueError`` names it.
    """
    if not isinstance(grads, dict) or not isinstance(reference, dict):
        raise TypeError("grads and reference must be dicts name -> tensor")
    if grads.keys() != reference.keys() or not reference:
        raise ValueError(f"grads and reference must name the same parameters, got {sorted(grads)} and {sorted(reference)}")
    errors = []
    for k in reference:
        if grads[k].shape != reference[k].shape:
            raise ValueError(f"grads[{k!r}] has shape {tuple(grads[k].shape)}, reference[{k!r}] {tuple(reference[k].shape)}")
        norm = reference[k].double().norm()
        if norm == 0:
            raise ValueError(f"reference gradient {k!r} is zero: its relative error is undefined")
        errors.append(((grads[k].double() - reference[k].double()).norm() / norm).item())
    return max(errors)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _check_run_args(model, x, strategy, segments, sizes=None) -> tuple[list[nn.Module], int | list[int]]:
    """The layers of ``model`` and the segment count (default ``ceil(sqrt n)``), or the list of
    segment lengths when ``sizes`` is given, all checked."""
    _check_strategy(strategy)
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential of layers, got {type(model).__name__}")
    if len(model) < 1:
        raise ValueError("model must hold at least one layer")
    check_tensor("x", x, floating=True)
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be (batch, ...) with batch >= 1, got shape {tuple(x.shape)}")
    layers = list(model.children())
    first = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    if first is not None and x.shape[-1] != first.in_features:
        raise ValueError(f"x must be (batch, {first.in_features}) for this chain, got shape {tuple(x.shape)}")
    if sizes is not None:
        if strategy != "sqrt" or segments is not None:
            raise ValueError(f"sizes only applies to strategy 'sqrt', in place of segments; got strategy {strategy!r}, "
                             f"segments {segments!r}")
        sizes = [check_int("sizes", k, low=1) for k in check_sequence("sizes", sizes, what="segment lengths")]
        if sum(sizes) != len(layers):
            raise ValueError(f"sizes must add up to the chain's {len(layers)} layers, got {sizes} (sum {sum(sizes)})")
        return layers, sizes
    if segments is None:
        return layers, default_segments(len(layers))
    if strategy not in ("sqrt", "torch"):
        raise ValueError(f"segments only applies to strategy 'sqrt' or 'torch', not {strategy!r}")
    return layers, _check_segments(segments, len(layers))


def _check_segments(segments, n_layers: int) -> int:
    return check_int("segments", segments, low=1, high=n_layers)


def _check_strategy(strategy, *, manual_only: bool = False) -> None:
    check_choice("strategy", strategy, STRATEGIES[:3] if manual_only else STRATEGIES)


def _check_theory_args(n_layers, strategy, segments) -> None:
    _check_strategy(strategy, manual_only=True)
    check_int("n_layers", n_layers, low=1)
    if segments is not None:
        if strategy != "sqrt":
            raise ValueError(f"segments only applies to strategy 'sqrt', not {strategy!r}")
        _check_segments(segments, n_layers)

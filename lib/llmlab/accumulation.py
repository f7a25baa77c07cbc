"""Gradient accumulation: when K micro-batches give the big-batch gradient, and when they do not.

With a batch of N = K·b examples split into K equal micro-batches B_1 ... B_K of b examples,
the big-batch mean loss is the mean of the micro-batch means::

    L(θ) = 1/N Σ_i ℓ_i(θ) = 1/K Σ_j [ 1/b Σ_{i∈B_j} ℓ_i(θ) ] = 1/K Σ_j L_j(θ)

so backpropagating L_j / K for each micro-batch and summing the gradients (what ``.backward()``
does when ``.grad`` is not cleared) gives ∇L exactly, up to rounding. Without the 1/K the
sum is K·∇L. The identity needs every ℓ_i to depend only on example i: BatchNorm in training
mode breaks it (it normalises with the statistics of the b examples it sees, not of all N),
and so does a token-level loss whose micro-batches hold different numbers of tokens unless it
is normalised by the total token count (:func:`token_loss_grads`).

No function here changes the model it is given: each works on a deep copy.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_callable, check_choice, check_length_range, check_float, check_int, check_module, check_tensor
from ._torch import IGNORE_INDEX, grads_by_name, isolated_rng, read_floats, resolve_dtype
from .modelinfo import check_token_ids

__all__ = [
    "KINDS", "AccumulationResult", "AccumulationRun", "accumulation_pass", "full_batch_grads",
    "accumulated_grads", "relative_difference", "batchnorm_running_stats", "divisors", "make_model",
    "make_batch", "loss_fn_for", "make_token_model", "make_token_batch", "micro_batch_token_counts",
    "token_loss_grads", "train_with_accumulation", "recalibrate_batchnorm",
]

LossFn = Callable[[Tensor, Tensor], Tensor]

#: The model kinds :func:`make_model` builds (and the accumulation widget offers).
KINDS = ("linear", "cnn_bn", "cnn_gn")


# ---- Argument checks ------------------------------------------------------------------------------


def divisors(n: int) -> list[int]:
    """All K in 1..n with n % K == 0: the accumulation steps a batch of n can be split into."""
    n = check_int("n", n, low=1, high=10**7)  # a batch size; the loop below is O(n)
    return [k for k in range(1, n + 1) if n % k == 0]


def _check_steps(steps, batch_size: int) -> None:
    check_int("steps", steps, low=1)
    if batch_size % steps != 0:
        raise ValueError(f"steps must divide the batch size {batch_size} into equal parts, one of {divisors(batch_size)}")


def _check_model_and_loss(model, loss_fn) -> None:
    """What both accumulation entry points train: a ``model`` (an ``nn.Module``) and a callable ``loss_fn``."""
    check_module("model", model)
    check_callable("loss_fn", loss_fn, what="a callable (prediction, target) -> scalar loss")


def _check_batch(x, y) -> int:
    """x and y: tensors with the same leading batch size >= 1; returns it."""
    check_tensor("x", x, min_numel=1)
    check_tensor("y", y, min_numel=1)
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same leading batch size, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    return int(x.shape[0])


def _fresh_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (same mode, same buffers) with every ``.grad`` cleared."""
    model_copy = copy.deepcopy(model)
    for p in model_copy.parameters():
        p.grad = None
    return model_copy


# ---- Accumulation on a deep copy ------------------------------------------------------------------


@dataclass(frozen=True)
class AccumulationResult:
    """What one accumulated optimizer step sees.

    ``grads``: name -> summed gradient (the model's ``.grad`` after the K backward passes).
    ``running_stats``: the copy's BatchNorm ``running_mean`` / ``running_var`` after the pass
    (empty for a model without BatchNorm). ``micro_losses``: the K unscaled micro-batch losses
    L_j. ``loss``: the loss that was backpropagated in total, Σ_j L_j / K (or Σ_j L_j).
    """

    grads: dict[str, Tensor]
    running_stats: dict[str, Tensor]
    micro_losses: tuple[float, ...]
    loss: float
    steps: int
    scale_loss: bool


def _accumulate_into(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, steps: int,
                     scale_loss: bool) -> tuple[float, ...]:
    """Run K forward/backward passes on ``model`` itself, summing into ``.grad``; return the L_j
    (read after the K passes: no host sync between them)."""
    micro_losses = []
    for x_j, y_j in zip(x.chunk(steps), y.chunk(steps)):
        loss_j = loss_fn(model(x_j), y_j)
        if loss_j.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar (0-d) loss, got shape {tuple(loss_j.shape)}")
        (loss_j / steps if scale_loss else loss_j).backward()
        micro_losses.append(loss_j.detach())
    return read_floats(micro_losses)


def accumulation_pass(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, steps: int, *,
                      scale_loss: bool = True) -> AccumulationResult:
    """Accumulate gradients over ``steps`` equal micro-batches of ``(x, y)`` on a copy of ``model``.

    ``x``: (N, ...) inputs, ``y``: (N, ...) targets, ``loss_fn(model(x_j), y_j)`` a scalar mean
    loss. Micro-batch j holds rows j·b ... (j+1)·b − 1 with b = N / K. Each L_j is divided by K
    when ``scale_loss`` (so Σ_j ∇(L_j / K) = ∇L for per-example losses). ``steps=1`` is the
    plain big-batch step. The model keeps its train/eval mode; ``model`` itself is untouched.
    """
    _check_model_and_loss(model, loss_fn)
    batch_size = _check_batch(x, y)
    _check_steps(steps, batch_size)
    model_copy = _fresh_copy(model)
    micro_losses = _accumulate_into(model_copy, loss_fn, x, y, steps, scale_loss)
    total = sum(micro_losses) / steps if scale_loss else sum(micro_losses)
    return AccumulationResult(
        grads=grads_by_name(model_copy),
        running_stats=batchnorm_running_stats(model_copy),
        micro_losses=micro_losses,
        loss=total,
        steps=steps,
        scale_loss=scale_loss,
    )


def full_batch_grads(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """name -> ∇L for one forward/backward pass on the whole batch ``(x, y)`` (model unchanged)."""
    return accumulation_pass(model, loss_fn, x, y, 1).grads


def accumulated_grads(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, steps: int, *,
                      scale_loss: bool = True) -> dict[str, Tensor]:
    """name -> Σ_j ∇(L_j / K) over K = ``steps`` equal micro-batches (Σ_j ∇L_j if not ``scale_loss``).

    Equals :func:`full_batch_grads` to rounding when every example's loss depends only on that
    example (no BatchNorm in training mode). ``steps`` must divide the batch size.
    """
    return accumulation_pass(model, loss_fn, x, y, steps, scale_loss=scale_loss).grads


def relative_difference(grads_a: dict[str, Tensor], grads_b: dict[str, Tensor]) -> float:
    """‖a − b‖ / ‖b‖ with the norm over all parameters together: sqrt(Σ_p ‖a_p − b_p‖²) / sqrt(Σ_p ‖b_p‖²).

    Computed in float64. Both dicts must have the same names and shapes; ‖b‖ must be > 0.
    """
    if not isinstance(grads_a, dict) or not isinstance(grads_b, dict):
        raise TypeError("grads_a and grads_b must be dicts name -> tensor")
    if set(grads_a) != set(grads_b) or not grads_a:
        raise ValueError(f"grads_a and grads_b must have the same names; differ in {set(grads_a) ^ set(grads_b)}")
    diff_sq = 0.0
    ref_sq = 0.0
    for name, b in grads_b.items():
        a = grads_a[name]
        if a.shape != b.shape:
            raise ValueError(f"shapes differ for {name!r}: {tuple(a.shape)} vs {tuple(b.shape)}")
        a64 = a.detach().double()
        b64 = b.detach().to(a64.device).double()
        diff_sq += float(((a64 - b64) ** 2).sum())
        ref_sq += float((b64 ** 2).sum())
    if ref_sq == 0.0:
        raise ValueError("grads_b has norm 0: the relative difference is undefined")
    return math.sqrt(diff_sq) / math.sqrt(ref_sq)


def batchnorm_running_stats(model: nn.Module) -> dict[str, Tensor]:
    """``"<layer>.running_mean"`` / ``"<layer>.running_var"`` -> copies of every BatchNorm's running statistics.

    Empty for a model without BatchNorm (GroupNorm and LayerNorm keep no running statistics).
    A step of the accumulation and DDP entry points, which pass it the model they train.
    """
    stats = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            stats[f"{name}.running_mean"] = module.running_mean.detach().clone()
            stats[f"{name}.running_var"] = module.running_var.detach().clone()
    return stats


# ---- Small models and a deterministic synthetic data set ------------------------------------------

_IN_FEATURES = 16   # linear regression: x (N, 16) -> y (N, 4)
_OUT_FEATURES = 4
_IMAGE_SIZE = 8     # CNN: x (N, 1, 8, 8) -> 4 classes
_N_CLASSES = 4


def _cnn(norm: Callable[[int], nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), norm(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2), norm(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, _N_CLASSES),
    )


def make_model(kind: str, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A small model in training mode, initialised from ``seed``.

    ``"linear"``: ``nn.Linear(16, 4)`` (pair with MSE). ``"cnn_bn"`` / ``"cnn_gn"``: two 3×3
    convolutions, each followed by BatchNorm2d / GroupNorm(4 groups) and ReLU, global average
    pooling and a linear classifier, for (N, 1, 8, 8) images and 4 classes. The two CNNs get
    identical convolution and classifier weights for the same seed.
    """
    check_choice("kind", kind, KINDS)
    dtype = resolve_dtype(dtype)
    with isolated_rng(seed):  # seeded init; the caller's random stream is left alone
        if kind == "linear":
            model = nn.Linear(_IN_FEATURES, _OUT_FEATURES)
        elif kind == "cnn_bn":
            model = _cnn(nn.BatchNorm2d)
        else:
            model = _cnn(lambda c: nn.GroupNorm(4, c))
    return model.to(dtype).train()


def _class_patterns(dtype: torch.dtype) -> Tensor:
    """(4, 8, 8) prototype images: a horizontal bar, a vertical bar, a diagonal, a centred square."""
    s = _IMAGE_SIZE
    patterns = torch.zeros(_N_CLASSES, s, s, dtype=dtype)
    patterns[0, s // 2 - 1 : s // 2 + 1, :] = 1.0
    patterns[1, :, s // 2 - 1 : s // 2 + 1] = 1.0
    patterns[2] = torch.eye(s, dtype=dtype) + torch.eye(s, dtype=dtype).roll(1, dims=1)
    patterns[3, 2:-2, 2:-2] = 1.0
    return patterns


def make_batch(kind: str, batch_size: int = 32, *, seed: int = 0,
               dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """A deterministic synthetic batch ``(x, y)`` for ``kind`` (same seed -> same tensors).

    ``"linear"``: x (N, 16) standard normal, y = x W* + 0.1·noise with a fixed W* (N, 4).
    ``"cnn_bn"``, ``"cnn_gn"``: x (N, 1, 8, 8) = a class prototype shifted by up to one pixel,
    times a random contrast in [0.5, 1.5], plus 0.3·noise; y (N,) class labels in 0..3.
    """
    check_choice("kind", kind, KINDS)
    batch_size = check_int("batch_size", batch_size, low=1, high=2**20)
    seed = check_int("seed", seed, low=0)
    dtype = resolve_dtype(dtype)
    g = torch.Generator().manual_seed(seed)
    if kind == "linear":
        w_star = torch.randn(_IN_FEATURES, _OUT_FEATURES, generator=torch.Generator().manual_seed(1234))
        x = torch.randn(batch_size, _IN_FEATURES, generator=g)
        y = x @ w_star + 0.1 * torch.randn(batch_size, _OUT_FEATURES, generator=g)
        return x.to(dtype), y.to(dtype)
    y = torch.randint(0, _N_CLASSES, (batch_size,), generator=g)
    shifts = torch.randint(-1, 2, (batch_size, 2), generator=g)
    contrast = 0.5 + torch.rand(batch_size, generator=g)
    base = _class_patterns(torch.float64)[y]
    images = torch.stack([b.roll((int(s0), int(s1)), dims=(0, 1)) for b, (s0, s1) in zip(base, shifts)])
    x = contrast[:, None, None] * images + 0.3 * torch.randn(batch_size, _IMAGE_SIZE, _IMAGE_SIZE,
                                                             generator=g, dtype=torch.float64)
    return x[:, None].to(dtype), y


def loss_fn_for(kind: str) -> LossFn:
    """The mean loss that goes with ``kind``: MSE for ``"linear"``, cross-entropy for the CNNs."""
    check_choice("kind", kind, KINDS)
    return F.mse_loss if kind == "linear" else F.cross_entropy


# ---- The token-level trap -------------------------------------------------------------------------

def make_token_model(*, vocab_size: int = 50, dim: int = 16, seed: int = 0) -> nn.Module:
    """A bigram language model ``Embedding(vocab, dim) -> Linear(dim, vocab)``: (B, T) ids -> (B, T, vocab) logits."""
    vocab_size = check_int("vocab_size", vocab_size, low=2, high=2**20)
    dim = check_int("dim", dim, low=1, high=2**14)
    with isolated_rng(seed):  # seeded init; the caller's random stream is left alone
        model = nn.Sequential(nn.Embedding(vocab_size, dim), nn.Linear(dim, vocab_size))
    return model


def make_token_batch(batch_size: int = 32, *, max_len: int = 32, vocab_size: int = 50, seed: int = 0, min_len: int = 2,
                     group_by_length: bool = False) -> tuple[Tensor, Tensor]:
    """Variable-length sequences, right-padded: ``(inputs, targets)`` both (B, max_len − 1).

    Lengths are uniform in [min_len, max_len]; targets are the inputs shifted by one, with
    ``-100`` (ignored by cross-entropy) at padded positions. ``group_by_length`` sorts the
    sequences by length, as length-grouped samplers do, which makes micro-batch token counts
    (and the trap) more unequal.
    """
    batch_size, min_len, max_len, seed = check_length_range(batch_size, min_len, max_len, seed, high=2**20)
    vocab_size = check_int("vocab_size", vocab_size, low=2)
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=g)
    if group_by_length:
        lengths = lengths.sort().values
    tokens = torch.randint(0, vocab_size, (batch_size, max_len), generator=g)
    mask = torch.arange(max_len)[None, :] < lengths[:, None]
    tokens = tokens.masked_fill(~mask, 0)
    inputs = tokens[:, :-1]
    targets = tokens[:, 1:].masked_fill(~mask[:, 1:], IGNORE_INDEX)
    return inputs, targets


def micro_batch_token_counts(targets: Tensor, steps: int, *, ignore_index: int = IGNORE_INDEX) -> list[int]:
    """Number of real (non-ignored) target tokens in each of the ``steps`` micro-batches."""
    check_tensor("targets", targets, integer=True, min_numel=1)
    _check_steps(steps, int(targets.shape[0]))
    return [int((t != ignore_index).sum()) for t in targets.chunk(steps)]


_NORMALIZATIONS = ("micro_batch_mean", "total_tokens")


def token_loss_grads(model: nn.Module, inputs: Tensor, targets: Tensor, steps: int, *,
                     normalization: str = "total_tokens", ignore_index: int = IGNORE_INDEX) -> dict[str, Tensor]:
    """name -> gradient of a token-level cross-entropy accumulated over ``steps`` micro-batches.

    ``inputs``: (B, T) token ids, ``targets``: (B, T) next-token ids with ``ignore_index`` at
    padding, ``model(inputs)``: (B, T, V) logits. With n_j real tokens in micro-batch j and
    n = Σ_j n_j, the big-batch loss is L = 1/n Σ_tokens ℓ_t.

    - ``"micro_batch_mean"`` (the trap): backpropagate (1/K)·(1/n_j) Σ_{t∈j} ℓ_t, i.e. the
      per-micro-batch mean divided by K. Equals L only when every n_j = n/K.
    - ``"total_tokens"`` (the fix): backpropagate (1/n) Σ_{t∈j} ℓ_t, with n counted over the
      whole batch before the first micro-batch. Sums to L exactly.

    With ``steps=1`` both are the big-batch mean. Works on a deep copy; ``model`` is unchanged.
    """
    batch_size = _check_batch(inputs, targets)
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs and targets must have the same shape, got {tuple(inputs.shape)}, {tuple(targets.shape)}")
    check_token_ids(model, inputs, name="inputs")
    _check_steps(steps, batch_size)
    check_choice("normalization", normalization, _NORMALIZATIONS)
    n_tokens = micro_batch_token_counts(targets, steps, ignore_index=ignore_index)
    if normalization == "micro_batch_mean" and min(n_tokens) == 0:
        raise ValueError("a micro-batch has no real tokens: its mean loss is undefined")
    n_total = sum(n_tokens)
    if n_total == 0:
        raise ValueError("targets hold no real tokens (all are ignore_index)")
    model_copy = _fresh_copy(model)
    for x_j, y_j, n_j in zip(inputs.chunk(steps), targets.chunk(steps), n_tokens):
        logits = model_copy(x_j)
        token_loss_sum = F.cross_entropy(logits.flatten(0, -2), y_j.flatten(), ignore_index=ignore_index,
                                         reduction="sum")
        if normalization == "micro_batch_mean":
            loss_j = token_loss_sum / n_j / steps
        else:
            loss_j = token_loss_sum / n_total
        loss_j.backward()
    return grads_by_name(model_copy)


# ---- A short training run: big batch vs accumulation ----------------------------------------------


@dataclass(frozen=True)
class AccumulationRun:
    """One SGD run. ``losses``: the backpropagated loss of each update (Σ_j L_j / K);
    ``params``: (n_updates + 1, P) all parameters flattened, before and after each update;
    ``running_stats``: BatchNorm running statistics at the end; ``model``: the trained copy."""

    losses: tuple[float, ...]
    params: Tensor
    running_stats: dict[str, Tensor]
    model: nn.Module


def train_with_accumulation(model: nn.Module, loss_fn: LossFn, batches: list[tuple[Tensor, Tensor]], steps: int, *,
                            lr: float = 0.05, momentum: float = 0.9, scale_loss: bool = True) -> AccumulationRun:
    """SGD (with ``momentum``) on a copy of ``model``: one update per ``(x, y)`` in ``batches``, each
    gradient accumulated over ``steps`` micro-batches (``steps=1``: the big batch). ``model`` is unchanged."""
    _check_model_and_loss(model, loss_fn)
    if not batches:
        raise ValueError("batches must hold at least one (x, y) batch")
    lr = check_float("lr", lr, low=0, low_open=True)
    momentum = check_float("momentum", momentum, low=0, high=1, high_open=True)
    for x, y in batches:
        _check_steps(steps, _check_batch(x, y))
    model_copy = _fresh_copy(model)
    optimizer = torch.optim.SGD(model_copy.parameters(), lr=lr, momentum=momentum)
    params = [nn.utils.parameters_to_vector(model_copy.parameters()).detach().clone()]
    losses = []
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        micro_losses = _accumulate_into(model_copy, loss_fn, x, y, steps, scale_loss)
        optimizer.step()
        losses.append(sum(micro_losses) / steps if scale_loss else sum(micro_losses))
        params.append(nn.utils.parameters_to_vector(model_copy.parameters()).detach().clone())
    return AccumulationRun(losses=tuple(losses), params=torch.stack(params),
                           running_stats=batchnorm_running_stats(model_copy), model=model_copy)


def recalibrate_batchnorm(model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> nn.Module:
    """A copy of ``model`` in eval mode whose BatchNorm running statistics are recomputed, with the weights
    fixed, as the plain average over ``batches`` (``momentum=None``: a cumulative average, not an EMA, so the
    0 / 1 start of the statistics leaves no trace). ``model`` is unchanged."""
    check_module("model", model)
    if not batches:
        raise ValueError("batches must hold at least one (x, y) batch")
    net = copy.deepcopy(model).train()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for x, _ in batches:
            net(x)
    return net.eval()

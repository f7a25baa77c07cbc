"""Token-level losses under DDP: averaging per-rank mean losses is notebook 04's trap again, and the fix.

A language model's loss is a mean over *tokens*: L = (1/n) Σ_t ℓ_t over the n real (non-padding)
target tokens of the batch. Under DDP rank r holds n_r of them, backpropagates a loss, and DDP
*averages* the N gradients. If every rank backpropagates its own mean, L_r = (1/n_r) Σ_{t∈r} ℓ_t
(what ``F.cross_entropy`` returns), the update follows

    (1/N) Σ_r L_r = Σ_r (n / (N n_r)) · (n_r / n) L_r   ≠   L   unless every n_r = n / N,

which over-weights the tokens of a rank that holds few of them: the micro-batch trap of notebook 04,
spread over devices. The fix is one more all-reduce, of the token count: each rank backpropagates
N · (1/n) Σ_{t∈r} ℓ_t with n = Σ_r n_r, so that DDP's average is (1/n) Σ_t ∇ℓ_t, the big-batch
gradient. Hugging Face's ``Trainer`` does exactly this (``average_tokens_across_devices``, on by
default: it gathers the label count of every rank and multiplies the loss by the number of processes).

:func:`ddp_token_losses` runs both ways in one set of processes, with PyTorch's
``DistributedDataParallel``, and returns the gradients and the loss each way reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .._checks import check_choice, check_tensor, check_world_size
from .._torch import IGNORE_INDEX
from .ddp import _same_on_every_rank, rank_shard
from .launch import MAX_WORLD_SIZE, check_importable, run

__all__ = ["TOKEN_NORMALIZATIONS", "TokenLossPass", "DDPTokenLoss", "token_loss_rank_pass", "ddp_token_losses"]

#: ``"rank_mean"``: each rank backpropagates its own mean token loss (the trap);
#: ``"global_tokens"``: the summed token loss × N / (all-reduced token count) (the fix).
TOKEN_NORMALIZATIONS = ("rank_mean", "global_tokens")


@dataclass(frozen=True)
class TokenLossPass:
    """One rank after one DDP backward: ``grads`` (name -> all-reduced gradient), ``n_tokens`` (its real
    target tokens), ``mean_loss`` (its own mean token loss) and ``reported_loss`` (the loss a log would
    print: the mean of the ranks' means for ``"rank_mean"``, the global token mean for ``"global_tokens"``)."""

    grads: dict[str, Tensor]
    n_tokens: int
    mean_loss: float
    reported_loss: float


def _one_pass(rank: int, world_size: int, model_fn, x: Tensor, y: Tensor, normalization: str) -> TokenLossPass:
    model = model_fn()
    ddp = DistributedDataParallel(model)
    x_r, y_r = rank_shard(x, rank, world_size), rank_shard(y, rank, world_size)
    logits = ddp(x_r)
    loss_sum = F.cross_entropy(logits.flatten(0, -2), y_r.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    n_r = (y_r != IGNORE_INDEX).sum()
    if normalization == "rank_mean":
        loss = loss_sum / n_r                                  # F.cross_entropy's default: this rank's mean
        reported = loss.detach().clone()
        dist.all_reduce(reported)                              # what a log shows: the mean of the ranks' means
        reported /= world_size
    else:
        totals = torch.stack([loss_sum.detach(), n_r.to(loss_sum.dtype)])
        dist.all_reduce(totals)                                # Σ_r loss sums and n = Σ_r n_r, in one call
        loss = loss_sum * world_size / totals[1]               # × N: DDP divides the summed gradients by N
        reported = totals[0] / totals[1]
    loss.backward()                                            # DDP all-reduces (averages) the gradients here
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return TokenLossPass(grads, int(n_r), float(loss_sum.detach() / n_r), float(reported))


def token_loss_rank_pass(rank: int, world_size: int, model_fn: Callable[[], nn.Module], x: Tensor, y: Tensor,
                         normalizations: tuple[str, ...] = TOKEN_NORMALIZATIONS) -> dict[str, TokenLossPass]:
    """What each rank runs (inside :func:`llmlab.distributed.run`): for each normalization, a fresh
    ``model_fn()`` wrapped in ``DistributedDataParallel``, one forward/backward on this rank's
    contiguous shard of ``(x, y)``, normalised as ``normalization`` says (see the module docstring)."""
    out = {}
    for normalization in normalizations:
        out[normalization] = _one_pass(rank, world_size, model_fn, x, y, normalization)
        dist.barrier()
    return out


@dataclass(frozen=True)
class DDPTokenLoss:
    """One DDP step with a token-level loss: ``grads`` (equal on every rank, checked),
    ``tokens_per_rank`` (n_r), ``rank_mean_losses`` (L_r) and ``reported_loss`` (see :class:`TokenLossPass`)."""

    grads: dict[str, Tensor]
    tokens_per_rank: tuple[int, ...]
    rank_mean_losses: tuple[float, ...]
    reported_loss: float


def ddp_token_losses(model_fn: Callable[[], nn.Module], x: Tensor, y: Tensor, world_size: int, *,
                     normalizations=TOKEN_NORMALIZATIONS, timeout: float = 120) -> dict[str, DDPTokenLoss]:
    """One DDP step of a token-level cross-entropy, for each of ``normalizations``, in one set of processes.

    ``model_fn()``: a seeded, importable builder (e.g. ``functools.partial(llmlab.accumulation.make_token_model)``)
    whose model maps ids (B, T) to logits (B, T, V); ``x`` (B, T) ids and ``y`` (B, T) next-token ids
    with ``-100`` at padding (:func:`llmlab.accumulation.make_token_batch`); B divisible by
    ``world_size``, each rank gets B / world_size consecutive rows. Returns normalization ->
    :class:`DDPTokenLoss`. ``"global_tokens"`` gives the gradient of the batch's mean token loss to
    rounding; ``"rank_mean"`` gives it only when every rank holds the same number of tokens.
    """
    check_importable("model_fn", model_fn)
    check_tensor("x", x, dim=2, integer=True, min_numel=1)
    check_tensor("y", y, dim=2, integer=True, min_numel=1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape (B, T), got {tuple(x.shape)} and {tuple(y.shape)}")
    world_size = check_world_size(world_size, high=MAX_WORLD_SIZE, divides={"x's batch size": x.shape[0]})
    if isinstance(normalizations, str) or not normalizations:
        raise TypeError(f"normalizations must be a non-empty tuple of names from {TOKEN_NORMALIZATIONS}, "
                        f"got {normalizations!r}")
    normalizations = tuple(check_choice("normalizations", n, TOKEN_NORMALIZATIONS) for n in normalizations)
    counts = [int((s != IGNORE_INDEX).sum()) for s in y.chunk(world_size)]
    if min(counts) == 0:
        raise ValueError(f"y must hold at least one real target token (not -100) in every rank's shard; tokens per "
                         f"rank: {counts}")
    passes = run(token_loss_rank_pass, world_size, model_fn, x, y, normalizations, timeout=timeout)
    out = {}
    for normalization in normalizations:
        per_rank = [p[normalization] for p in passes]
        out[normalization] = DDPTokenLoss(
            grads=_same_on_every_rank(per_rank),
            tokens_per_rank=tuple(p.n_tokens for p in per_rank),
            rank_mean_losses=tuple(p.mean_loss for p in per_rank),
            reported_loss=per_rank[0].reported_loss)
    return out

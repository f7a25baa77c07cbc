"""Synchronised BatchNorm: normalise with the statistics of the *global* batch, summed over every rank.

Under data parallelism each rank sees only its shard of the batch, so a plain BatchNorm in
training mode normalises with per-rank statistics: the notebook-04 accumulation trap, now across
devices. Synchronised BatchNorm adds up, per channel, the three numbers the global statistics
are made of, with one ``all_reduce``::

    n = Σ_r n_r,   S1 = Σ_r Σ_{i∈r} x_i,   S2 = Σ_r Σ_{i∈r} x_i²
    μ = S1 / n,    σ² = S2 / n − μ²,        x̂ = (x − μ) / sqrt(σ² + ε),   y = γ x̂ + β

and the backward pass needs two more global sums, Σ g and Σ g·x̂ (g = ∂L/∂y)::

    ∂L/∂x_i = γ / sqrt(σ² + ε) · (g_i − Σ g / n − x̂_i · Σ g x̂ / n)

while ∂L/∂γ = Σ_{i∈r} g_i x̂_i and ∂L/∂β = Σ_{i∈r} g_i stay per rank: DistributedDataParallel
all-reduces parameter gradients anyway. Sums (not means) make ranks with different batch sizes,
even an empty one, exact without extra bookkeeping.

PyTorch's own ``torch.nn.SyncBatchNorm`` refuses CPU tensors ("SyncBatchNorm expected input tensor
to be on GPU ..."); :func:`sync_batch_norm` and :class:`SyncBatchNorm` work on any device and
backend (gloo on the CPU). Without an initialised process group they are plain BatchNorm.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_float, check_int, check_tensor

__all__ = ["sync_batch_norm", "SyncBatchNorm", "convert_sync_batchnorm"]


def _world(group) -> int:
    """Number of ranks the statistics are summed over (1 without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def _sum_over_ranks(t: Tensor, group) -> Tensor:
    if _world(group) > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def _reduce_dims(x: Tensor) -> list[int]:
    """Every dimension but the channels (dim 1): (N, C), (N, C, L), (N, C, H, W) ..."""
    return [0, *range(2, x.dim())]


def _per_channel(v: Tensor, x: Tensor) -> Tensor:
    """A (C,) vector shaped to broadcast against x (N, C, ...)."""
    return v.reshape(1, -1, *([1] * (x.dim() - 2)))


class _SyncBatchNormFunction(torch.autograd.Function):
    """Forward: y = γ x̂ + β with global μ, σ²; returns also μ and the unbiased σ² (for the running stats)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, group):
        dims, channels = _reduce_dims(x), x.shape[1]
        # One all_reduce of [S1 (C), S2 (C), n (1)], accumulated in float64 so that S2/n − μ² does
        # not cancel away the variance when |μ| is large against σ.
        n_local = x.numel() // channels if channels else 0
        stats = torch.cat([x.sum(dims, dtype=torch.float64), x.square().sum(dims, dtype=torch.float64),
                           torch.tensor([float(n_local)], dtype=torch.float64, device=x.device)])
        stats = _sum_over_ranks(stats, group)
        s1, s2, n = stats[:channels], stats[channels:2 * channels], stats[-1]
        n_total = int(n.item())
        if n_total <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {n_total} over all ranks")
        mean = s1 / n
        var = (s2 / n - mean.square()).clamp_min(0.0)          # biased: what normalises the batch
        invstd = torch.rsqrt(var + eps)
        x_hat = (x - _per_channel(mean.to(x.dtype), x)) * _per_channel(invstd.to(x.dtype), x)
        y = x_hat if weight is None else x_hat * _per_channel(weight, x)
        y = y if bias is None else y + _per_channel(bias, x)
        ctx.save_for_backward(x_hat, weight, invstd.to(x.dtype))
        ctx.n, ctx.group = n_total, group
        unbiased = var * n / (n - 1)                             # what the running variance tracks
        ctx.mark_non_differentiable(mean, unbiased)
        return y, mean.to(x.dtype), unbiased.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        x_hat, weight, invstd = ctx.saved_tensors
        dims = _reduce_dims(grad_y)
        sum_g = grad_y.sum(dims)                  # ∂L/∂β on this rank
        sum_g_xhat = (grad_y * x_hat).sum(dims)   # ∂L/∂γ on this rank
        grad_weight = sum_g_xhat.clone() if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = sum_g.clone() if ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            # The input gradient couples every example of the global batch: sum Σg and Σg·x̂ over ranks.
            sums = _sum_over_ranks(torch.cat([sum_g, sum_g_xhat]), ctx.group)
            channels = sum_g.numel()
            mean_g, mean_g_xhat = sums[:channels] / ctx.n, sums[channels:] / ctx.n
            scale = invstd if weight is None else invstd * weight
            grad_x = _per_channel(scale, grad_y) * (grad_y - _per_channel(mean_g, grad_y)
                                                    - x_hat * _per_channel(mean_g_xhat, grad_y))
        return grad_x, grad_weight, grad_bias, None, None


def sync_batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None = None,
                    bias: Tensor | None = None, *, training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
                    group=None) -> Tensor:
    """``F.batch_norm`` whose training-mode statistics are those of the batch of *all* ranks of ``group``.

    ``x``: (N, C, ...) this rank's shard (ranks may hold different N, even 0). ``weight``, ``bias``
    (C,) or None; ``running_mean`` / ``running_var`` (C,) are updated in place with the global
    mean and unbiased variance (``running ← (1 − momentum) running + momentum · stat``), as one
    BatchNorm over the global batch would. ``group``: a process group (None: the default one;
    without an initialised process group nothing is communicated). In eval mode
    (``training=False``) it is ``F.batch_norm`` with the running statistics: nothing to sync.
    Every rank must call it (and its backward) in the same order: each holds collectives.
    """
    check_tensor("x", x, dim=tuple(range(2, 9)))
    eps = check_float("eps", eps, low=0, low_open=True)
    momentum = check_float("momentum", momentum, low=0, high=1)
    if not training:
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    y, mean, var = _SyncBatchNormFunction.apply(x, weight, bias, eps, group)
    with torch.no_grad():
        if running_mean is not None:
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
        if running_var is not None:
            running_var.lerp_(var.to(running_var.dtype), momentum)
    return y


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of a data-parallel group, on any device (gloo on the CPU included).

    Same constructor, parameters, buffers and running-statistics rule as ``nn.BatchNorm1d/2d/3d``
    (and ``torch.nn.SyncBatchNorm``); the statistics come from :func:`sync_batch_norm`. Accepts
    (N, C) and (N, C, ...) inputs. Build it with :func:`convert_sync_batchnorm`.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None, device=None, dtype=None):
        num_features = check_int("num_features", num_features, low=1)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {x.dim()}D input")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average, as nn.BatchNorm does
                factor = 1.0 / float(self.num_batches_tracked)
        batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return sync_batch_norm(x, self.running_mean if track else None, self.running_var if track else None,
                               self.weight, self.bias, training=batch_stats, momentum=factor, eps=self.eps,
                               group=self.process_group)


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """``module`` with every BatchNorm layer replaced by a :class:`SyncBatchNorm` holding the same
    parameters, buffers and mode (like ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``).

    Children are replaced in place; the return value is ``module`` itself, or a new layer if
    ``module`` is a BatchNorm. A step of :func:`llmlab.distributed.batchnorm_under_ddp`'s ranks, which
    hand it the model their checked ``model_fn`` built (like torch's, it does not check ``module``).
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        converted = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats, process_group)
        if module.affine:
            with torch.no_grad():
                converted.weight = module.weight
                converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, process_group))
    return module

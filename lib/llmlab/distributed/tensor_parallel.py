"""Tensor parallelism (Megatron-LM, Shoeybi et al. 2019): one layer's matrices split over N ranks.

**MLP.** Y = W₂ GeLU(W₁ X) with W₁ of shape ffn × hidden (``nn.Linear``'s weight). Split W₁ by *rows*, the
output features (Megatron's "column-parallel" A in its XA notation): each rank computes h_r = GeLU(W₁ʳ X), a
slice of the hidden units (GeLU acts elementwise, so no communication). Split W₂ by *columns*, the input
features ("row-parallel" B): each rank computes the partial product W₂ʳ h_r; the output is the sum of the
partials: **one all-reduce in forward**. In backward
the conjugate happens: the gradient of X is a sum of N partial gradients, **one all-reduce in backward**.
Megatron writes the two as the autograd functions f (identity forward, all-reduce backward, where the
block starts) and g (all-reduce forward, identity backward, where it ends).

**Attention.** The heads are independent: split W_Q, W_K, W_V by output features along head boundaries (rank r
keeps heads r·n/N … (r+1)·n/N − 1) and the output projection W_O by input features; again one all-reduce
forward and one backward per block.

Each all-reduce moves the activations, batch × sequence × hidden values, and a ring all-reduce sends
2 (N − 1)/N of them per rank: TP talks every layer, forward and backward, which is why it stays inside a
node with fast links. :func:`tensor_parallel_step` runs a block for real on gloo ranks and holds its outputs
and gradients against the same block on one process and, optionally, against PyTorch's own
``torch.distributed.tensor.parallel`` (``ColwiseParallel``/``RowwiseParallel`` on a device mesh).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_int, check_world_size
from .launch import MAX_WORLD_SIZE, run

#: The entry point, its input and result. The building blocks (MLP, Attention, the f/g functions, the
#: column/row-parallel layers, shard_block, tp_rank_step ...) are importable from this module for reading
#: and for torchrun scripts; they trust their callers, as inner functions do.
__all__ = ["BLOCKS", "TPSpec", "TPRun", "tensor_parallel_step"]

#: The blocks :func:`tensor_parallel_step` can split.
BLOCKS = ("mlp", "attention")


class MLP(nn.Module):
    """The one-device reference: ``down(GeLU(up(x)))``, ``up``: hidden → ffn, ``down``: ffn → hidden."""

    def __init__(self, hidden: int, ffn: int):
        super().__init__()
        self.up = nn.Linear(hidden, ffn)
        self.down = nn.Linear(ffn, hidden)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class Attention(nn.Module):
    """The one-device reference: causal multi-head self-attention, ``x`` (batch, seq, hidden) → same shape.

    The number of heads is read from the width of the projected queries (``q.shape[-1] // head_dim``), so
    the same forward runs on a rank that holds only some of the heads (PyTorch's ``ColwiseParallel``
    hands this module its local slice of the projections)."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.head_dim = hidden // heads
        self.q, self.k, self.v, self.o = (nn.Linear(hidden, hidden) for _ in range(4))

    def forward(self, x):
        b, s, _ = x.shape

        def split(t):                      # (b, s, heads · head_dim) -> (b, heads, s, head_dim)
            return t.view(b, s, -1, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(att.transpose(1, 2).reshape(b, s, -1))


class CollectiveLog:
    """Records each collective a tensor-parallel block issues: ``(phase, op, payload_bytes)`` with
    phase "forward" or "backward"; ``bytes(phase)`` sums the payloads."""

    def __init__(self):
        self.records: list[tuple[str, str, int]] = []

    def add(self, phase: str, op: str, tensor: torch.Tensor) -> None:
        self.records.append((phase, op, tensor.numel() * tensor.element_size()))

    def bytes(self, phase: str | None = None) -> int:
        return sum(b for ph, _, b in self.records if phase is None or ph == phase)


def _all_reduce(x: torch.Tensor, group, log: CollectiveLog | None, phase: str) -> torch.Tensor:
    x = x.contiguous()
    dist.all_reduce(x, group=group)
    if log is not None:
        log.add(phase, "all_reduce", x)
    return x


class _CopyToTensorParallel(torch.autograd.Function):
    """Megatron's f: identity in forward, all-reduce of the gradient in backward."""

    @staticmethod
    def forward(ctx, x, group, log):
        ctx.group, ctx.log = group, log
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad.clone(), ctx.group, ctx.log, "backward"), None, None


class _ReduceFromTensorParallel(torch.autograd.Function):
    """Megatron's g: all-reduce in forward, identity for the gradient in backward."""

    @staticmethod
    def forward(ctx, x, group, log):
        return _all_reduce(x.clone(), group, log, "forward")

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def copy_to_tensor_parallel(x: torch.Tensor, group=None, log: CollectiveLog | None = None) -> torch.Tensor:
    """Enter a tensor-parallel region: ``x`` unchanged; its gradient all-reduced (summed) over the ranks."""
    return _CopyToTensorParallel.apply(x, group, log)


def reduce_from_tensor_parallel(x: torch.Tensor, group=None, log: CollectiveLog | None = None) -> torch.Tensor:
    """Leave a tensor-parallel region: the ranks' partial results summed (all-reduce); gradient passed through."""
    return _ReduceFromTensorParallel.apply(x, group, log)


class ColumnParallelLinear(nn.Module):
    """Rank ``rank``'s share of ``linear`` split by output features (the rows of ``weight``, i.e. the
    columns of Wᵀ): ``out_features / world_size`` outputs, with their bias. ``index`` picks the rows
    (default: the ``rank``-th contiguous chunk)."""

    def __init__(self, linear: nn.Linear, rank: int, world_size: int, index: torch.Tensor | None = None):
        super().__init__()
        rows = torch.arange(linear.out_features).chunk(world_size)[rank] if index is None else index
        self.weight = nn.Parameter(linear.weight.detach()[rows].clone())
        self.bias = nn.Parameter(linear.bias.detach()[rows].clone()) if linear.bias is not None else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """Rank ``rank``'s share of ``linear`` split by input features (the columns of ``weight``): it takes
    the matching slice of the input and returns a partial product; the full bias is added once, after
    the all-reduce, by the caller (:class:`TensorParallelMLP`)."""

    def __init__(self, linear: nn.Linear, rank: int, world_size: int, index: torch.Tensor | None = None):
        super().__init__()
        cols = torch.arange(linear.in_features).chunk(world_size)[rank] if index is None else index
        self.weight = nn.Parameter(linear.weight.detach()[:, cols].clone())
        self.bias = nn.Parameter(linear.bias.detach().clone()) if linear.bias is not None else None

    def forward(self, x):
        return F.linear(x, self.weight)


class TensorParallelMLP(nn.Module):
    """``mlp`` split over ``world_size`` ranks of ``group``: ``up`` by columns, ``down`` by rows.
    forward: f → up (local) → GeLU (local) → down (partial) → g (all-reduce) → + bias."""

    def __init__(self, mlp: MLP, rank: int, world_size: int, *, group=None, log: CollectiveLog | None = None):
        super().__init__()
        self.up = ColumnParallelLinear(mlp.up, rank, world_size)
        self.down = RowParallelLinear(mlp.down, rank, world_size)
        self.group, self.log, self.world_size = group, log, world_size

    def forward(self, x):
        if self.world_size > 1:
            x = copy_to_tensor_parallel(x, self.group, self.log)
        partial = self.down(F.gelu(self.up(x)))
        if self.world_size > 1:        # one rank holds everything: nothing to sum
            partial = reduce_from_tensor_parallel(partial, self.group, self.log)
        return partial + self.down.bias


class TensorParallelAttention(nn.Module):
    """``attention`` split by heads over ``world_size`` ranks (heads must divide evenly): rank r keeps the
    query/key/value projections of its heads (column-parallel) and the matching columns of the output
    projection (row-parallel). Attention itself runs on the local heads with no communication."""

    def __init__(self, attention: Attention, rank: int, world_size: int, *, group=None,
                 log: CollectiveLog | None = None):
        super().__init__()
        self.head_dim = attention.head_dim
        self.q, self.k, self.v = (ColumnParallelLinear(lin, rank, world_size)
                                  for lin in (attention.q, attention.k, attention.v))
        self.o = RowParallelLinear(attention.o, rank, world_size)
        self.group, self.log, self.world_size = group, log, world_size

    def forward(self, x):
        if self.world_size > 1:
            x = copy_to_tensor_parallel(x, self.group, self.log)
        b, s, _ = x.shape

        def split(t):
            return t.view(b, s, -1, self.head_dim).transpose(1, 2)

        att = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), is_causal=True)
        partial = self.o(att.transpose(1, 2).reshape(b, s, -1))
        if self.world_size > 1:
            partial = reduce_from_tensor_parallel(partial, self.group, self.log)
        return partial + self.o.bias


@dataclass(frozen=True)
class TPSpec:
    """The block and input :func:`tensor_parallel_step` uses: width ``hidden``, MLP width ``ffn``,
    ``heads`` attention heads, an input of ``batch`` × ``seq`` tokens, float64, seeded by ``seed``."""

    hidden: int = 16
    ffn: int = 64
    heads: int = 4
    batch: int = 2
    seq: int = 6
    seed: int = 0


def make_block(block: str, spec: TPSpec) -> nn.Module:
    """The one-device block ("mlp" or "attention"), float64, the same weights for the same ``spec.seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        module = MLP(spec.hidden, spec.ffn) if block == "mlp" else Attention(spec.hidden, spec.heads)
    return module.double()


def shard_block(module: nn.Module, rank: int, world_size: int, *, group=None,
                log: CollectiveLog | None = None) -> nn.Module:
    """Rank ``rank``'s tensor-parallel copy of an :class:`MLP` or :class:`Attention` ``module``."""
    cls = TensorParallelMLP if isinstance(module, MLP) else TensorParallelAttention
    return cls(module, rank, world_size, group=group, log=log)


def _block_data(spec: TPSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The input ``x`` (batch, seq, hidden) and a fixed random ``r`` of the same shape: loss = Σ r·y."""
    g = torch.Generator().manual_seed(spec.seed + 1)
    shape = (spec.batch, spec.seq, spec.hidden)
    return torch.randn(*shape, generator=g, dtype=torch.float64), torch.randn(*shape, generator=g, dtype=torch.float64)


def tp_rank_step(rank: int, world_size: int, block: str, spec: TPSpec, compare_dtensor: bool = False) -> dict:
    """What each rank runs (in a process group of ``world_size``, started by :func:`run` or ``torchrun``): its
    shard of the block forward and backward, then, with ``compare_dtensor``, PyTorch's own tensor parallelism.
    Gather the ranks' results and hand them to :func:`assemble_tp_run`."""
    full = make_block(block, spec)
    x, r = _block_data(spec)
    log = CollectiveLog()
    tp = shard_block(full, rank, world_size, log=log)
    x = x.requires_grad_(True)
    y = tp(x)
    (y * r).sum().backward()
    out = {"output": y.detach(), "input_grad": x.grad, "log": log.records,
           "grads": {n: p.grad for n, p in tp.named_parameters()}}
    if compare_dtensor:
        out.update(_dtensor_rank(world_size, block, spec))
    return out


def _dtensor_rank(world_size: int, block: str, spec: TPSpec) -> dict:
    """The same block under ``torch.distributed.tensor.parallel`` on a 1-D CPU device mesh."""
    # Function-level: importing DTensor's parallel API costs ~1 s per process; only this path needs it.
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    module = make_block(block, spec)
    mesh = init_device_mesh("cpu", (world_size,))
    plan = ({"up": ColwiseParallel(), "down": RowwiseParallel()} if block == "mlp" else
            {"q": ColwiseParallel(), "k": ColwiseParallel(), "v": ColwiseParallel(), "o": RowwiseParallel()})
    parallelize_module(module, mesh, plan)
    x, r = _block_data(spec)
    x = x.requires_grad_(True)
    y = module(x)
    (y * r).sum().backward()
    return {"dtensor_output": torch.as_tensor(y.detach()).clone(), "dtensor_input_grad": x.grad,
            "dtensor_grads": {n: p.grad.full_tensor() for n, p in module.named_parameters()}}


@dataclass(frozen=True)
class TPRun:
    """A tensor-parallel block's forward and backward on ``world_size`` gloo ranks against one process.

    ``output``/``input_grad``: rank 0's (every rank holds the full output after the all-reduce);
    ``grads``: each parameter's full gradient, assembled from the ranks' shards (column shards stacked
    along the output features, row shards along the input features); ``reference_*``: the same block on
    one process; ``forward_bytes``/``backward_bytes``: the payload of the collectives rank 0 issued in each
    phase, and ``collectives``: how many; ``dtensor_*``: PyTorch's own tensor parallelism, or None."""

    block: str
    world_size: int
    output: torch.Tensor
    input_grad: torch.Tensor
    grads: dict[str, torch.Tensor]
    reference_output: torch.Tensor
    reference_input_grad: torch.Tensor
    reference_grads: dict[str, torch.Tensor]
    forward_bytes: int
    backward_bytes: int
    collectives: int
    dtensor_output: torch.Tensor | None = None
    dtensor_input_grad: torch.Tensor | None = None
    dtensor_grads: dict[str, torch.Tensor] | None = None

    def max_error(self, *, against: str = "reference") -> float:
        """The largest absolute difference, over the output, the input gradient and every parameter
        gradient, between the tensor-parallel run and ``against`` ("reference" or "dtensor")."""
        out, gin, grads = ((self.reference_output, self.reference_input_grad, self.reference_grads)
                           if against == "reference" else
                           (self.dtensor_output, self.dtensor_input_grad, self.dtensor_grads))
        diffs = [(self.output - out).abs().max(), (self.input_grad - gin).abs().max()]
        diffs += [(self.grads[n] - g).abs().max() for n, g in grads.items()]
        return float(torch.stack(diffs).max())


def _assemble(block: str, per_rank: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Full gradients from the shards: column-parallel pieces along dim 0, row-parallel weights along dim 1;
    a row-parallel bias is replicated (every rank holds the same full gradient): rank 0's."""
    rows = ("down",) if block == "mlp" else ("o",)
    full = {}
    for name in per_rank[0]:
        layer, kind = name.split(".")
        if layer in rows:
            full[name] = per_rank[0][name] if kind == "bias" else torch.cat([g[name] for g in per_rank], dim=1)
        else:
            full[name] = torch.cat([g[name] for g in per_rank], dim=0)
    return full


def tensor_parallel_step(block: str = "mlp", world_size: int = 2, spec: TPSpec | None = None, *,
                         compare_dtensor: bool = False, timeout: float = 120) -> TPRun:
    """Run ``block`` ("mlp" or "attention") split over ``world_size`` gloo ranks (in [1, 32]) for one
    forward and backward of loss = Σ r·y, and the same block on this process. ``spec.ffn`` (MLP) or
    ``spec.heads`` (attention) must be divisible by ``world_size``; ``spec.hidden`` by ``spec.heads``.
    With ``compare_dtensor`` the same processes also run PyTorch's ``ColwiseParallel``/``RowwiseParallel``."""
    check_choice("block", block, BLOCKS)
    spec = TPSpec() if spec is None else spec
    if not isinstance(spec, TPSpec):
        raise TypeError(f"spec must be a TPSpec, got {type(spec).__name__}")
    for name in ("hidden", "ffn", "heads", "batch", "seq"):
        check_int(f"spec.{name}", getattr(spec, name), low=1, high=4096)
    if spec.hidden % spec.heads:
        raise ValueError(f"spec.hidden must be divisible by spec.heads, got {spec.hidden} and {spec.heads}")
    split = {"spec.ffn": spec.ffn} if block == "mlp" else {"spec.heads": spec.heads}
    world_size = check_world_size(world_size, high=MAX_WORLD_SIZE, divides=split)
    ranks = run(tp_rank_step, world_size, block, spec, compare_dtensor, timeout=timeout)
    return assemble_tp_run(block, spec, ranks)


def assemble_tp_run(block: str, spec: TPSpec, ranks: list[dict]) -> TPRun:
    """The :class:`TPRun` of the per-rank results of :func:`tp_rank_step` (in rank order), with the same block
    run on this process as the reference."""
    reference = make_block(block, spec)
    x, r = _block_data(spec)
    x.requires_grad_(True)
    y = reference(x)
    (y * r).sum().backward()
    log = ranks[0]["log"]
    return TPRun(
        block=block, world_size=len(ranks), output=ranks[0]["output"], input_grad=ranks[0]["input_grad"],
        grads=_assemble(block, [rk["grads"] for rk in ranks]), reference_output=y.detach(),
        reference_input_grad=x.grad, reference_grads={n: p.grad for n, p in reference.named_parameters()},
        forward_bytes=sum(b for ph, _, b in log if ph == "forward"),
        backward_bytes=sum(b for ph, _, b in log if ph == "backward"), collectives=len(log),
        dtensor_output=ranks[0].get("dtensor_output"), dtensor_input_grad=ranks[0].get("dtensor_input_grad"),
        dtensor_grads=ranks[0].get("dtensor_grads"))

"""Memory per rank under DDP, ZeRO-1 and ZeRO-3 (FSDP2), measured on real tensors against the ledger.

:func:`sharding_table` measures three stages of :mod:`llmlab.distributed.ledger` with PyTorch's own
implementations, in sub-groups of one set of processes: ``DistributedDataParallel`` (ddp: everything
replicated), ``torch.distributed.optim.ZeroRedundancyOptimizer`` around AdamW (zero1: each rank keeps
the optimizer states of whole parameters, assigned greedily, largest first, to the least-loaded
rank) and FSDP2 ``fully_shard`` (zero3: every parameter split by rows, the ``torch.chunk`` pieces
along dim 0, stored padded to equal pieces). The bytes are those of the distinct storages each rank
holds after a few AdamW steps, so the rounding of whole-parameter partitioning and of row padding
shows. ZeRO-2 stays a formula: torch's nearest, FSDP's ``SHARD_GRAD_OP``, reshards the full weights after
backward, so at rest it holds ZeRO-3's bytes.

This module imports FSDP and ZeRO (a second or more per process), so ``llmlab.distributed`` does
not import it: ``from llmlab.distributed.sharding import ...``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from .._checks import check_choice, check_int
from .._torch import isolated_rng, read_floats
from ..memory import StateLedger, memory_ledger
from .ledger import sharded_ledger
from .launch import MAX_WORLD_SIZE, run

__all__ = ["TINY_TRANSFORMER", "CausalTransformer", "make_transformer", "MEASURED_STAGES", "RankMemory", "ShardingRow",
           "shard_and_train", "sharding_table", "storage_bytes"]

#: The small decoder-only transformer of the sharding experiments (about 0.17 M parameters). The
#: vocabulary is a prime, so the embedding and head rows do not split evenly over 2 or 4 ranks.
TINY_TRANSFORMER = dict(vocab_size=509, d_model=64, n_layers=2, n_heads=4, seq_len=16)
#: The stages :func:`sharding_table` measures (zero2 has no implementation of its own in torch).
MEASURED_STAGES = ("ddp", "zero1", "zero3")


class CausalTransformer(nn.Module):
    """A causal language model: token embedding + learned positions, ``n_layers`` pre-norm transformer
    blocks (``nn.TransformerEncoderLayer`` with a causal mask), final LayerNorm and an untied head.
    ``forward(ids)``: (B, T) token ids -> (B, T, vocab) logits."""

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, seq_len: int):
        for name, value in (("vocab_size", vocab_size), ("d_model", d_model), ("n_layers", n_layers),
                            ("n_heads", n_heads), ("seq_len", seq_len)):
            check_int(name, value, low=1, high=1_000_000)
        if d_model % n_heads:
            raise ValueError(f"n_heads must divide d_model, got d_model={d_model}, n_heads={n_heads}")
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, ids: Tensor) -> Tensor:
        T = ids.shape[1]
        h = self.embed(ids) + self.pos[:T]
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=ids.device, dtype=h.dtype)
        for block in self.blocks:
            h = block(h, src_mask=causal, is_causal=True)
        return self.head(self.norm(h)).contiguous()  # a fresh tensor: FSDP hooks its output for backward


def make_transformer(*, seed: int = 0, **config) -> CausalTransformer:
    """:class:`CausalTransformer` with :data:`TINY_TRANSFORMER` overridden by ``config``, initialised from ``seed``."""
    unknown = sorted(set(config) - set(TINY_TRANSFORMER))
    if unknown:
        raise ValueError(f"config has unknown keys {unknown}; the allowed ones are {sorted(TINY_TRANSFORMER)}")
    with isolated_rng(check_int("seed", seed, low=0)):
        return CausalTransformer(**{**TINY_TRANSFORMER, **config})  # which checks the values


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (DTensors: this rank's local shard), each counted once.

    A storage is what memory holds: FSDP keeps each weight shard padded to an equal piece, and
    gradients that are views of one communication bucket share that bucket. ``tensors``: an iterable
    (None entries are skipped).
    """
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None:
            continue
        local = t.to_local() if isinstance(t, DTensor) else t
        storage = local.untyped_storage()
        if storage.nbytes():
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


@dataclass(frozen=True)
class RankMemory:
    """One rank after training under one stage: ``ledger`` (bytes this rank holds), ``params`` (the full
    trained weights, gathered: name -> tensor), ``losses`` (the global-batch loss per step) and
    ``state_numel`` (name -> optimizer-state elements this rank keeps for that parameter)."""

    ledger: StateLedger
    params: dict[str, Tensor]
    losses: tuple[float, ...]
    state_numel: dict[str, int]


def _wrap(model: nn.Module, stage: str, lr: float, group):
    """The model as ``stage`` trains it over the ranks of ``group``, and its optimizer."""
    if stage == "zero3":
        mesh = DeviceMesh.from_group(group or dist.group.WORLD, "cpu")
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model, torch.optim.AdamW(model.parameters(), lr=lr)
    # gradient_as_bucket_view: each .grad is a view into DDP's all-reduce buckets, not a second copy.
    wrapped = DistributedDataParallel(model, process_group=group, gradient_as_bucket_view=True)
    if stage == "zero1":
        return wrapped, ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW, lr=lr,
                                                process_group=group)
    return wrapped, torch.optim.AdamW(model.parameters(), lr=lr)


def shard_and_train(rank: int, world_size: int, stage: str, steps: int = 2, batch_size: int = 8, seed: int = 0,
                    lr: float = 1e-3, group=None) -> RankMemory:
    """What each rank runs: ``steps`` AdamW steps of :func:`make_transformer` under ``stage``, then its bytes.

    ``rank`` and ``world_size`` are this rank's place in ``group`` (a process group; None: the
    default one). Every rank builds the same model (``seed``) and takes its shard of a fixed batch
    of ``batch_size`` random token sequences (next-token cross-entropy). After the last step it
    reports the bytes of its weights, gradients, optimizer states (tensors shaped like their
    parameter, or their shard) and other optimizer tensors (Adam's step counters), and the full
    trained weights (FSDP's gathered with ``full_tensor()``), so stages can be checked to train alike.
    """
    model = make_transformer(seed=seed)
    with isolated_rng(seed + 1):
        ids = torch.randint(0, TINY_TRANSFORMER["vocab_size"], (batch_size, TINY_TRANSFORMER["seq_len"]))
    shard = ids.chunk(world_size)[rank]
    wrapped, opt = _wrap(model, stage, lr, group)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        logits = wrapped(shard)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), shard[:, 1:].flatten())
        loss.backward()
        opt.step()
        global_loss = loss.detach().clone()
        dist.all_reduce(global_loss, group=group)
        losses.append(global_loss / world_size)
    inner = opt.optim if isinstance(opt, ZeroRedundancyOptimizer) else opt  # ZeRO: this rank's own AdamW
    names = {p: n for n, p in model.named_parameters()}
    states, other, state_numel = [], [], {}
    for p, state in inner.state.items():
        for value in state.values():
            shaped = isinstance(value, Tensor) and value.dim() > 0 and value.shape == p.shape
            (states if shaped else other).append(value)
            if shaped:
                local = value.to_local() if isinstance(value, DTensor) else value
                state_numel[names[p]] = state_numel.get(names[p], 0) + local.numel()
    params = list(model.parameters())
    ledger = StateLedger(weights=storage_bytes(params), grads=storage_bytes(p.grad for p in params), master_weights=0,
                         optimizer_states=storage_bytes(states), other=storage_bytes(other))
    full = {n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone() for n, p in model.named_parameters()}
    return RankMemory(ledger=ledger, params=full, losses=read_floats(losses), state_numel=state_numel)


def _all_sizes(rank: int, world_size: int, sizes: tuple[int, ...], stages: tuple[str, ...],
               steps: int) -> dict[int, list[RankMemory]]:
    """In one set of processes: for each N in ``sizes``, ranks 0 .. N − 1 form a group of N and train every stage."""
    out = {}
    for n in sizes:
        group = dist.new_group(ranks=list(range(n)))  # every rank takes part in creating every group
        if rank < n:
            out[n] = []
            for stage in stages:
                out[n].append(shard_and_train(rank, n, stage, steps, group=group))
                dist.barrier(group=group)
        dist.barrier()
    return out


@dataclass(frozen=True)
class ShardingRow:
    """One stage at one world size: the measured ``per_rank`` ledgers (rank order), the ``formula``
    (:func:`sharded_ledger`), the ``unsharded`` ledger and rank 0's trained weights and losses."""

    stage: str
    world_size: int
    per_rank: tuple[StateLedger, ...]
    formula: StateLedger
    unsharded: StateLedger
    params: dict[str, Tensor]
    losses: tuple[float, ...]
    state_numel: tuple[dict[str, int], ...]

    @property
    def max_rank_bytes(self) -> int:
        """Model-state bytes of the fullest rank (what must fit on every device)."""
        return max(led.total for led in self.per_rank)


def sharding_table(world_sizes=(1, 2, 4), stages=MEASURED_STAGES, *, steps: int = 2,
                   timeout: float = 300) -> list[ShardingRow]:
    """Measure every stage in ``stages`` at every world size in ``world_sizes``, in one :func:`run` of
    max(world_sizes) processes: for each N, ranks 0 .. N − 1 form a process group of N and run
    :func:`shard_and_train` for every stage in turn (the others wait), so each process pays its
    start-up once. Rows come in the order of ``world_sizes``, then ``stages``."""
    sizes = tuple(check_int("world_sizes", n, low=1, high=MAX_WORLD_SIZE) for n in world_sizes)
    stages = tuple(check_choice("stages", s, MEASURED_STAGES) for s in stages)
    if not sizes or not stages:
        raise ValueError("world_sizes and stages must not be empty")
    if len(set(sizes)) < len(sizes):
        raise ValueError(f"world_sizes must be distinct, got {sizes}")
    steps = check_int("steps", steps, low=1, high=100)
    model = make_transformer()
    rows = []
    per_rank = run(_all_sizes, max(sizes), sizes, stages, steps, timeout=timeout)  # [rank][N][stage index]
    for n in sizes:
        for i, stage in enumerate(stages):
            ranks = [per_rank[r][n][i] for r in range(n)]
            rows.append(ShardingRow(stage=stage, world_size=n, per_rank=tuple(m.ledger for m in ranks),
                                    formula=sharded_ledger(model, n, stage), unsharded=memory_ledger(model, precision="fp32"),
                                    params=ranks[0].params, losses=ranks[0].losses,
                                    state_numel=tuple(m.state_numel for m in ranks)))
    return rows

"""A 3D-parallelism planner on paper: TP × PP × DP (with a ZeRO stage) for a model on a cluster.

For every split of the N GPUs into t (tensor) × p (pipeline) × d (data) ranks it estimates the memory
per GPU and the time of one training step, from the same ledgers as notebooks 08 and 12 and the traffic of
:mod:`llmlab.distributed.traffic`. The model of a dense transformer with P parameters, L layers, width h,
a global batch of B sequences of s tokens, micro-batches of b sequences (m = B / (d·b) per pipeline):

memory per GPU
    model states: the mixed-precision AdamW ledger (16 B/param) of the P·⌈L/p⌉/(L·t) parameters a GPU holds,
    with the ZeRO stage sharding over d (:func:`llmlab.distributed.sharded_ledger`);
    activations: the first stage of a 1F1B pipeline holds min(p, m) micro-batches of ⌈L/p⌉ layers, each
    layer 34·s·b·h/t bytes without recomputation (Korthikanti et al. 2022, Table 2, *with* sequence
    parallelism, and without its 5·a·s²·b attention-score term because FlashAttention keeps no scores: both
    came after Megatron-LM 2021, whose runs without them would store several times more) or 2·s·b·h with
    full recomputation (only each layer's bf16 input is kept, whole on every TP rank: Table 2's row). A GPT-style layer (4h MLP, multi-head
    attention) is assumed; grouped-query attention and SwiGLU change the constants a little.
time per step (communication not overlapped with compute: an upper bound on the communication part only;
the compute part rests on the assumed ``efficiency``)
    compute: 6·P·B·s FLOPs (8·P·B·s with recomputation: one more forward) at ``peak_flops × efficiency``
    per GPU; bubble: compute × (p − 1)/m. A stage holds ⌈L/p⌉ layers: where p does not divide L the
    largest stage sets the pace and the memory, so compute, parameters, activations and TP traffic are
    charged for ⌈L/p⌉ layers on every stage (the unused capacity of the smaller stages is lost); TP: 4 all-reduces of s·b·h bf16 values per layer per
    micro-batch (6 with recomputation), ring bytes 2 (t − 1)/t, on the node's links when t fits a node;
    PP: s·b·h/t bf16 values each way per micro-batch (Megatron's scatter/gather: each of the t ranks sends its
    slice); DP: the bf16 gradients of the parameters a GPU holds, ring 2 (d − 1)/d once per step (ZeRO-1/2 and DDP
    accumulate locally), and under ZeRO-3 3 (d − 1)/d for every one of the m micro-batches (all-gather of the
    weights in forward and in backward, reduce-scatter of the gradients: FSDP's pattern under accumulation).

Left out: embedding and output layers (their memory and FLOPs), the attention FLOPs (s/(6h) of the
total), interleaved schedules, overlap of communication with compute, kernel efficiency that depends on
matrix sizes, memory fragmentation and framework buffers, and failures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._checks import check_choice, check_float, check_int
from .comm import ring_allreduce_bytes
from .ledger import sharded_ledger

__all__ = ["ModelConfig", "ClusterConfig", "PlanEstimate", "estimate_plan", "plan_parallelism",
           "ZERO_STAGES", "MEGATRON_1T", "SELENE_3072", "MODEL_PRESETS"]

#: The data-parallel flavours the planner knows (notebook 12's ledger stages).
ZERO_STAGES = ("ddp", "zero1", "zero2", "zero3")


@dataclass(frozen=True)
class ModelConfig:
    """A dense decoder-only transformer and its training batch: ``params``, ``layers``, width ``hidden``,
    ``seq_len`` tokens per sequence, ``global_batch`` sequences per step."""

    name: str
    params: float
    layers: int
    hidden: int
    seq_len: int
    global_batch: int


@dataclass(frozen=True)
class ClusterConfig:
    """``gpus`` GPUs, ``gpus_per_node`` per server, ``memory_gb`` each; ``peak_flops`` (bf16 dense) of which
    large matrix multiplications reach ``efficiency``; per-GPU link bandwidth inside a node
    (``intra_node_gb_s``, NVLink) and between nodes (``inter_node_gb_s``, InfiniBand/RoCE), GB/s each way."""

    name: str
    gpus: int
    gpus_per_node: int = 8
    memory_gb: float = 80.0
    peak_flops: float = 989e12
    efficiency: float = 0.7
    intra_node_gb_s: float = 450.0
    inter_node_gb_s: float = 50.0


#: Narayanan et al. 2021 ("Efficient Large-Scale Language Model Training on GPU Clusters Using
#: Megatron-LM", SC'21), Table 1, last row: 1008B parameters, 160 heads, hidden 25,600, 128 layers,
#: t = 8, p = 64, 3,072 GPUs, batch 3,072, 163 teraFLOP/s per GPU (52 % of peak), 502 petaFLOP/s in all;
#: sequence length 2,048 (the paper's setup). Parameters from the paper's Eq. 2 with V = 51,200.
MEGATRON_1T = ModelConfig("GPT 1T (Megatron-LM 2021)", params=1008e9, layers=128, hidden=25600, seq_len=2048,
                          global_batch=3072)
#: The paper's cluster: Selene, DGX A100 80 GB servers (8 GPUs, NVLink 600 GB/s both ways = 300 each way),
#: 8 × 200 Gb/s InfiniBand HDR per server (25 GB/s per GPU each way), A100 bf16 peak 312 teraFLOP/s.
SELENE_3072 = ClusterConfig("3,072 A100 80 GB (Selene)", gpus=3072, gpus_per_node=8, memory_gb=80.0,
                            peak_flops=312e12, efficiency=0.7, intra_node_gb_s=300.0, inter_node_gb_s=25.0)


#: Models the planner offers. Llama 2 (Touvron et al. 2023, Table 1 and §2.2): 7B 32 layers × 4096, 13B
#: 40 × 5120, 70B 80 × 8192, context 4,096, global batch 4M tokens (1,024 sequences); the 1T row of
#: Narayanan et al. 2021, Table 1 (128 × 25,600, sequence 2,048, batch 3,072).
MODEL_PRESETS = {
    "Llama 2 7B": ModelConfig("Llama 2 7B", 7e9, 32, 4096, 4096, 1024),
    "Llama 2 13B": ModelConfig("Llama 2 13B", 13e9, 40, 5120, 4096, 1024),
    "Llama 2 70B": ModelConfig("Llama 2 70B", 70e9, 80, 8192, 4096, 1024),
    "GPT 1T (Megatron 2021)": ModelConfig("GPT 1T", 1008e9, 128, 25600, 2048, 3072),
}


@dataclass(frozen=True)
class PlanEstimate:
    """One configuration: ``tp`` × ``pp`` × ``dp`` = GPUs, data-parallel flavour ``zero``, micro-batches of
    ``micro_batch`` sequences, ``micro_batches`` of them per pipeline, ``recompute`` on or off.
    Memory per GPU (GB): ``states_gb`` + ``activations_gb`` = ``memory_gb``; ``fits`` if within the GPU.
    Seconds per step: ``compute_s`` + ``bubble_s`` + ``tp_comm_s`` + ``pp_comm_s`` + ``dp_comm_s`` = ``step_s``.
    ``tp_bytes``/``pp_bytes``/``dp_bytes``: what each GPU sends per step on each axis (ring all-reduces counted as
    the 2 (N − 1)/N of their payload each rank sends; PP: the first stage's activations out and gradients in);
    ``flops_per_gpu``: hardware FLOP/s per GPU achieved (recomputation included, as Megatron reports);
    ``mfu``: model FLOPs utilisation, 6·P·tokens per second per GPU over the peak (recomputation not counted)."""

    tp: int
    pp: int
    dp: int
    zero: str
    micro_batch: int
    micro_batches: int
    recompute: bool
    states_gb: float
    activations_gb: float
    memory_gb: float
    fits: bool
    compute_s: float
    bubble_s: float
    tp_comm_s: float
    pp_comm_s: float
    dp_comm_s: float
    step_s: float
    tp_bytes: float
    pp_bytes: float
    dp_bytes: float
    flops_per_gpu: float
    tokens_per_s: float
    mfu: float


def _estimate(model: ModelConfig, cluster: ClusterConfig, tp: int, pp: int, zero: str, micro_batch: int,
              recompute: bool) -> PlanEstimate:
    dp = cluster.gpus // (tp * pp)
    m = model.global_batch // (dp * micro_batch)
    s, b, h, L = model.seq_len, micro_batch, model.hidden, model.layers
    stage_layers = math.ceil(L / pp)                   # the largest stage: it sets memory and pace
    params_per_gpu = model.params * stage_layers / L / tp
    states = sharded_ledger(int(params_per_gpu), dp, zero, precision="mixed").total
    per_layer = 2 * s * b * h if recompute else 34 * s * b * h / tp
    activations = stage_layers * min(pp, m) * per_layer
    memory = (states + activations) / 1e9
    flops = (8 if recompute else 6) * model.params * model.global_batch * s
    # Every stage waits for the largest: compute is charged as if all p stages had its layers.
    compute = flops / (cluster.gpus * cluster.peak_flops * cluster.efficiency) * (stage_layers * pp / L)
    bubble = compute * (pp - 1) / m
    act_bytes = 2 * s * b * h                          # one micro-batch's activations in bf16
    intra, inter = cluster.intra_node_gb_s * 1e9, cluster.inter_node_gb_s * 1e9
    tp_link = intra if tp <= cluster.gpus_per_node else inter
    tp_bytes = stage_layers * m * (6 if recompute else 4) * ring_allreduce_bytes(act_bytes, tp) if tp > 1 else 0.0
    pp_link = intra if tp * pp <= cluster.gpus_per_node else inter
    pp_bytes = m * 2 * act_bytes / tp if pp > 1 else 0.0
    grad_bytes = 2 * params_per_gpu
    dp_link = intra if cluster.gpus <= cluster.gpus_per_node else inter
    # ZeRO-3 re-gathers the weights for every micro-batch's forward and backward and reduce-scatters its gradients
    # (holding them gathered across the accumulation would undo the sharding); the others reduce once per step.
    dp_factor = 1.5 * m if zero == "zero3" else 1.0
    dp_bytes = dp_factor * ring_allreduce_bytes(grad_bytes, dp) if dp > 1 else 0.0
    tp_comm, pp_comm, dp_comm = tp_bytes / tp_link, pp_bytes / pp_link, dp_bytes / dp_link
    step = compute + bubble + tp_comm + pp_comm + dp_comm
    return PlanEstimate(tp=tp, pp=pp, dp=dp, zero=zero, micro_batch=micro_batch, micro_batches=m, recompute=recompute,
                        states_gb=states / 1e9, activations_gb=activations / 1e9, memory_gb=memory,
                        fits=memory <= cluster.memory_gb, compute_s=compute, bubble_s=bubble, tp_comm_s=tp_comm,
                        pp_comm_s=pp_comm, dp_comm_s=dp_comm, step_s=step, tp_bytes=tp_bytes, pp_bytes=pp_bytes,
                        dp_bytes=dp_bytes,
                        flops_per_gpu=flops / (cluster.gpus * step),
                        tokens_per_s=model.global_batch * s / step,
                        mfu=6 * model.params * model.global_batch * s / (cluster.gpus * step * cluster.peak_flops))


def _check_configs(model, cluster) -> None:
    if not isinstance(model, ModelConfig):
        raise TypeError(f"model must be a ModelConfig, got {type(model).__name__}")
    if not isinstance(cluster, ClusterConfig):
        raise TypeError(f"cluster must be a ClusterConfig, got {type(cluster).__name__}")
    check_float("model.params", model.params, low=1)
    for name in ("layers", "hidden", "seq_len", "global_batch"):
        check_int(f"model.{name}", getattr(model, name), low=1)
    check_int("cluster.gpus", cluster.gpus, low=1, high=10**7)
    check_int("cluster.gpus_per_node", cluster.gpus_per_node, low=1, high=1024)
    for name in ("memory_gb", "peak_flops", "intra_node_gb_s", "inter_node_gb_s"):
        check_float(f"cluster.{name}", getattr(cluster, name), low=0, low_open=True)
    check_float("cluster.efficiency", cluster.efficiency, low=0, high=1, low_open=True)


def estimate_plan(model: ModelConfig, cluster: ClusterConfig, *, tp: int, pp: int, zero: str = "zero1",
                  micro_batch: int = 1, recompute: bool = True) -> PlanEstimate:
    """Memory per GPU and step time of one configuration (see the module docstring for the model).

    ``tp`` × ``pp`` must divide ``cluster.gpus``; ``pp`` at most ``model.layers``; the global batch must split
    into whole micro-batches of ``micro_batch`` sequences on each of the d = gpus / (tp·pp) replicas.
    """
    _check_configs(model, cluster)
    tp = check_int("tp", tp, low=1, high=cluster.gpus)
    pp = check_int("pp", pp, low=1, high=min(model.layers, cluster.gpus))
    check_choice("zero", zero, ZERO_STAGES)
    micro_batch = check_int("micro_batch", micro_batch, low=1, high=model.global_batch)
    if cluster.gpus % (tp * pp):
        raise ValueError(f"tp * pp must divide cluster.gpus, got tp={tp}, pp={pp}, gpus={cluster.gpus}")
    dp = cluster.gpus // (tp * pp)
    if model.global_batch % (dp * micro_batch):
        raise ValueError(f"model.global_batch must be a multiple of dp * micro_batch, got {model.global_batch}, "
                         f"dp={dp}, micro_batch={micro_batch}")
    return _estimate(model, cluster, tp, pp, zero, micro_batch, recompute)


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def plan_parallelism(model: ModelConfig, cluster: ClusterConfig, *, zero_stages=("zero1",),
                     micro_batches=(1, 2, 4), recompute=(True, False), max_tp: int | None = None) -> list[PlanEstimate]:
    """Every valid configuration (tp a power of two up to ``max_tp``, default the GPUs of a node; pp a divisor
    of the GPUs up to the layers; each of ``zero_stages``, ``micro_batches`` and ``recompute``), the ones that
    fit first, each group fastest first."""
    _check_configs(model, cluster)
    stages = tuple(check_choice("zero_stages", z, ZERO_STAGES) or z for z in zero_stages)
    sizes = tuple(check_int("micro_batches", b, low=1, high=model.global_batch) for b in micro_batches)
    flags = tuple(recompute)
    if not stages or not sizes or not flags:
        raise ValueError("zero_stages, micro_batches and recompute must each hold at least one value")
    max_tp = cluster.gpus_per_node if max_tp is None else check_int("max_tp", max_tp, low=1, high=cluster.gpus)
    plans = []
    for tp in (2**k for k in range(int(math.log2(max_tp)) + 1)):
        if cluster.gpus % tp:
            continue
        for pp in _divisors(cluster.gpus // tp):
            if pp > model.layers:
                break
            dp = cluster.gpus // (tp * pp)
            for b in sizes:
                if model.global_batch % (dp * b):
                    continue
                plans += [_estimate(model, cluster, tp, pp, z, b, r) for z in stages for r in flags]
    return sorted(plans, key=lambda e: (not e.fits, e.step_s))

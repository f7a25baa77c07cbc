"""Data parallelism on PyTorch's own engine (``torch.distributed``: gloo on the CPU, nccl on GPUs).

* :mod:`~llmlab.distributed.launch`: :func:`run` starts one process per rank on 127.0.0.1 and
  returns what each rank's function returned (:class:`WorkerError` carries a failed rank's traceback).
* :mod:`~llmlab.distributed.ddp`: :func:`ddp_gradients`, what ``DistributedDataParallel`` computes
  with the batch split over ranks (with ``no_sync()`` accumulation); :func:`batchnorm_under_ddp`.
* :mod:`~llmlab.distributed.batchnorm`: :func:`sync_batch_norm` / :class:`SyncBatchNorm`, BatchNorm
  over the global batch from ``all_reduce`` of per-rank sums and sums of squares.
* :mod:`~llmlab.distributed.comm`: the ring all-reduce's bytes (2 (N − 1) / N × G), measured gloo
  times and a paper model of communication against compute.
* :mod:`~llmlab.distributed.tokens`: :func:`ddp_token_losses`, a token-level loss under DDP: each rank's
  mean (the trap when ranks hold different token counts) vs the all-reduced token count (the fix).
* :mod:`~llmlab.distributed.ledger`: :func:`sharded_ledger`, the model-state bytes per rank of DDP
  and ZeRO-1/2/3 from the formulas.
* :mod:`~llmlab.distributed.sharding` (import it explicitly: it loads FSDP and ZeRO, about a second
  per process): bytes per rank under DDP, ZeRO-1 and FSDP2, measured and from the ledger.
* :mod:`~llmlab.distributed.demo`: the torchrun script, ``torchrun --standalone --nproc-per-node 2
  -m llmlab.distributed.demo``.
"""

from .batchnorm import SyncBatchNorm, convert_sync_batchnorm, sync_batch_norm
from .comm import (AllReduceTiming, RingResult, StepEstimate, crossover_tokens, measure_all_reduce,
                   ring_allreduce_bytes, simulate_ring_all_reduce, step_estimate)
from .ddp import (BatchNormComparison, RankPass, batchnorm_under_ddp, ddp_gradients, ddp_rank_pass, rank_shard)
from .launch import BACKENDS, MAX_WORLD_SIZE, WorkerError, check_importable, run
from .ledger import STAGE_LABELS, STAGES, sharded_ledger
from .tokens import TOKEN_NORMALIZATIONS, DDPTokenLoss, TokenLossPass, ddp_token_losses, token_loss_rank_pass

__all__ = [
    "run", "WorkerError", "BACKENDS", "MAX_WORLD_SIZE", "check_importable",
    "ddp_gradients", "ddp_rank_pass", "rank_shard", "RankPass", "batchnorm_under_ddp", "BatchNormComparison",
    "sync_batch_norm", "SyncBatchNorm", "convert_sync_batchnorm",
    "ring_allreduce_bytes", "simulate_ring_all_reduce", "RingResult", "measure_all_reduce", "AllReduceTiming",
    "step_estimate", "StepEstimate", "crossover_tokens",
    "sharded_ledger", "STAGES", "STAGE_LABELS",
    "ddp_token_losses", "token_loss_rank_pass", "DDPTokenLoss", "TokenLossPass", "TOKEN_NORMALIZATIONS",
]

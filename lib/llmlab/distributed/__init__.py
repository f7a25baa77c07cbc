"""Data, tensor and pipeline parallelism on PyTorch's own engine (``torch.distributed``: gloo on the CPU, nccl on GPUs).

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
* :mod:`~llmlab.distributed.tensor_parallel`: :func:`tensor_parallel_step`, a Megatron-style column/row-parallel
  MLP and head-parallel attention block on gloo ranks (f and g as autograd functions), against one process
  and PyTorch's ``torch.distributed.tensor.parallel``.
* :mod:`~llmlab.distributed.pipeline`: :func:`pipeline_schedule`, :func:`bubble_fraction`, GPipe and 1F1B
  on paper (:func:`simulate_schedule`); :mod:`~llmlab.distributed.pipeline_run`: on gloo ranks with send/recv
  (:func:`run_pipeline`), against one process and ``torch.distributed.pipelining``.
* :mod:`~llmlab.distributed.traffic`: bytes per step of each axis (DP, TP, PP), formulas and DDP's buckets counted.
* :mod:`~llmlab.distributed.planner`: :func:`plan_parallelism`, TP × PP × DP with memory per GPU and step time.
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
from .pipeline import SCHEDULES, Timeline, bubble_fraction, peak_held_formula, pipeline_schedule, simulate_schedule
from .pipeline_run import (PipelineRun, PipelineSpec, make_pipeline_model, pipeline_data, run_pipeline, run_pipelines,
                           single_process_step)
from .planner import (MEGATRON_1T, MODEL_PRESETS, SELENE_3072, ZERO_STAGES, ClusterConfig, ModelConfig, PlanEstimate, estimate_plan,
                      plan_parallelism)
from .tensor_parallel import BLOCKS, TPRun, TPSpec, tensor_parallel_step
from .traffic import ddp_gradient_bytes, dp_bytes_per_step, pp_bytes_per_step, tp_payload_per_step

__all__ = [
    "run", "WorkerError", "BACKENDS", "MAX_WORLD_SIZE", "check_importable",
    "ddp_gradients", "ddp_rank_pass", "rank_shard", "RankPass", "batchnorm_under_ddp", "BatchNormComparison",
    "sync_batch_norm", "SyncBatchNorm", "convert_sync_batchnorm",
    "ring_allreduce_bytes", "simulate_ring_all_reduce", "RingResult", "measure_all_reduce", "AllReduceTiming",
    "step_estimate", "StepEstimate", "crossover_tokens",
    "sharded_ledger", "STAGES", "STAGE_LABELS",
    "ddp_token_losses", "token_loss_rank_pass", "DDPTokenLoss", "TokenLossPass", "TOKEN_NORMALIZATIONS",
    "tensor_parallel_step", "TPRun", "TPSpec", "BLOCKS",
    "pipeline_schedule", "bubble_fraction", "peak_held_formula", "simulate_schedule", "Timeline", "SCHEDULES",
    "run_pipeline", "run_pipelines", "PipelineRun", "PipelineSpec", "make_pipeline_model", "pipeline_data",
    "single_process_step",
    "dp_bytes_per_step", "tp_payload_per_step", "pp_bytes_per_step", "ddp_gradient_bytes",
    "plan_parallelism", "estimate_plan", "ModelConfig", "ClusterConfig", "PlanEstimate", "ZERO_STAGES",
    "MEGATRON_1T", "SELENE_3072", "MODEL_PRESETS",
]

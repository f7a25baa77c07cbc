"""Mixed precision, measured: lost updates, gradient underflow, loss scaling and the memory ledger.

Three facts this package lets a notebook (08) *measure* rather than state:

1. **Updates get lost** (:mod:`.formats`). A float with ``p`` significand bits (fp16: 11, bf16: 8)
   rounds ``w + u`` back to ``w`` when ``u`` is at most half an ulp, so for ``w = 1`` every update
   up to ``2^-p`` vanishes: :func:`update_survives`, :func:`smallest_surviving_update`,
   :func:`float_format`.
2. **Small gradients flush to zero** in fp16 (below 2^-25), unless the loss is scaled before
   backward (:mod:`.mixed`: :class:`MasterWeightsOptimizer` keeps the fp32 master copy,
   :class:`DynamicLossScaler` mirrors ``torch.amp.GradScaler``). :mod:`.toy` shows both on a
   regression, one step function per mode: :func:`train_toy`.
3. **The model states do not shrink.** Mixed-precision AdamW keeps 2 + 2 + 4 + 4 + 4 = 16 bytes
   per parameter, the same as fp32 AdamW: :func:`memory_ledger` (formula) and
   :func:`measured_ledger` (real tensors) live in :mod:`llmlab.memory` and are re-exported here,
   as is :func:`saved_activation_bytes`. Where the saving really is depends on the setup
   (:mod:`.activations`): a half model with an fp32 master copy halves the activations, while
   ``torch.autocast`` keeps fp32 weights and saves a half copy of each matmul weight, so it saves
   memory only past a number of tokens per step (:func:`saved_bytes_curve`).

:mod:`.gradients` measures how small an LLM's gradients are (most per-token gradients would
flush to zero in fp16) and how unevenly sized across parameters (why Adam's per-parameter step
sizes beat SGD's single one). :mod:`.speed` times a transformer block's training step in fp32,
tf32 and bf16 autocast.
"""

from ..memory import OPTIMIZER_STATES, measured_ledger, memory_ledger, saved_activation_bytes
from .activations import SAVED_BYTES_MODES, SavedBytesCurve, saved_bytes_curve
from .formats import FloatFormat, float_format, smallest_surviving_update, update_survives
from .gradients import (QUADRATIC_OPTIMIZERS, GradientSizes, QuadraticRun, lm_gradient_sizes,
                        train_scaled_quadratic)
from .mixed import DynamicLossScaler, MasterWeightsOptimizer, adam_vs_adamw_step, mixed_precision_setup
from .speed import STEP_MODES, block_step, block_step_seconds, block_step_timings
from .toy import TOY_MODES, ToyRun, toy_problem, train_toy

__all__ = [
    "FloatFormat",
    "float_format",
    "update_survives",
    "smallest_surviving_update",
    "OPTIMIZER_STATES",
    "memory_ledger",
    "measured_ledger",
    "MasterWeightsOptimizer",
    "mixed_precision_setup",
    "DynamicLossScaler",
    "ToyRun",
    "TOY_MODES",
    "toy_problem",
    "train_toy",
    "saved_activation_bytes",
    "SAVED_BYTES_MODES",
    "SavedBytesCurve",
    "saved_bytes_curve",
    "adam_vs_adamw_step",
    "GradientSizes",
    "lm_gradient_sizes",
    "QuadraticRun",
    "QUADRATIC_OPTIMIZERS",
    "train_scaled_quadratic",
    "STEP_MODES",
    "block_step",
    "block_step_seconds",
    "block_step_timings",
]

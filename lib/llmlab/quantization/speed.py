"""PyTorch's own int8 kernels on a decode step and a prefill, against float32, beside the roofline.

A batch-1 decode step reads every weight once (notebook 02's roofline), so with weights stored in
int8 instead of float32 it moves about 4x fewer bytes and could run up to that much faster where
memory bandwidth is the limit. A prefill over many tokens does many FLOPs per weight byte and is
limited by arithmetic instead: fewer bytes per weight buy nothing there unless the arithmetic itself
is faster.

The int8 model is built with ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear``:
weights int8 per tensor, activations quantized to int8 on the fly for each matmul (W8A8 dynamic),
int8 GEMM kernels (fbgemm / oneDNN on x86). PyTorch's documentation points new code at torchao's
``quantize_`` (``Int8DynamicActivationInt8WeightConfig``), which is not a dependency here; the
eager ``torch.ao`` path still ships in torch 2.13 and runs on any x86 or ARM CPU.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_int, check_module, check_tensor
from .._torch import model_device
from ..decoding import greedy
from ..decoding.roofline import decode_roofline
from ..timing import Timing, interleaved

__all__ = ["int8_dynamic_copy", "int8_weight_bytes", "Int8Timing", "time_int8"]


def int8_dynamic_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (on the CPU, float32) whose ``nn.Linear`` layers are PyTorch's dynamic int8 ones."""
    check_module("model", model)
    if model_device(model).type != "cpu":
        raise ValueError("model must be on the CPU: torch.ao's dynamic int8 kernels are CPU kernels")
    with warnings.catch_warnings():  # torch.ao announces its move to torchao on every call
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def int8_weight_bytes(model: nn.Module) -> tuple[int, int]:
    """``(float32 bytes, int8 bytes)`` of the weights one decode step reads (:func:`decode_roofline`'s count):
    every ``nn.Linear`` weight at 1 byte per weight (plus a 4-byte scale) instead of 4, the rest unchanged."""
    check_module("model", model)
    fp32 = decode_roofline(model, 0, bandwidth=1.0, dtype=torch.float32).weight_bytes
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    saved = sum(3 * m.weight.numel() - 4 for m in linears)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if head is not None and embed is not None and head.weight is embed.weight:
        saved -= 4 * embed.weight.shape[1]  # a tied table: its int8 copy is the head, the lookup still reads a float row
    return fp32, fp32 - saved


@dataclass(frozen=True)
class Int8Timing:
    """Decode and prefill timings of the float32 model and its dynamic-int8 copy (interleaved).

    ``decode`` / ``prefill``: {"fp32": Timing, "int8": Timing}; ``n_new``: tokens each decode run
    generated; ``prefill_len``; ``weight_bytes`` (fp32, int8) per decode step; ``same_tokens``:
    whether both greedy runs produced the same tokens; ``max_logit_diff``: largest |difference| of the
    prefill's last-position logits.
    """

    decode: dict[str, Timing]
    prefill: dict[str, Timing]
    n_new: int
    prefill_len: int
    weight_bytes: tuple[int, int]
    same_tokens: bool
    max_logit_diff: float

    @property
    def predicted_decode_speedup(self) -> float:
        """The roofline's ratio for a memory-bound step: float32 bytes / int8 bytes."""
        return self.weight_bytes[0] / self.weight_bytes[1]

    @property
    def decode_speedup(self) -> float:
        """Measured: float32 median / int8 median (> 1: int8 is faster)."""
        return self.decode["fp32"].median / self.decode["int8"].median

    @property
    def prefill_speedup(self) -> float:
        return self.prefill["fp32"].median / self.prefill["int8"].median


def time_int8(model: nn.Module, prompt: torch.Tensor, *, n_new: int = 16, prefill_len: int = 256, rounds: int = 5,
              int8_model: nn.Module | None = None) -> Int8Timing:
    """Greedy decoding of ``n_new`` tokens after ``prompt`` (1, p) and one forward over ``prefill_len``
    tokens, float32 vs :func:`int8_dynamic_copy`, timed interleaved for ``rounds`` rounds (CPU)."""
    check_module("model", model)
    check_tensor("prompt", prompt, dim=2, integer=True, min_numel=1)
    n_new = check_int("n_new", n_new, low=1, high=4096)
    prefill_len = check_int("prefill_len", prefill_len, low=1, high=1 << 16)
    rounds = check_int("rounds", rounds, low=1, high=1000)
    q_model = int8_dynamic_copy(model) if int8_model is None else check_module("int8_model", int8_model)
    models = {"fp32": model, "int8": q_model}
    long = prompt.repeat(1, -(-prefill_len // prompt.shape[1]))[:, :prefill_len]
    out = {}
    with torch.no_grad():
        decode = interleaved({k: (lambda m=m, k=k: out.__setitem__(k, greedy(m, prompt, n_new)))
                              for k, m in models.items()}, rounds=rounds)
        prefill = interleaved({k: (lambda m=m: m(input_ids=long)) for k, m in models.items()}, rounds=rounds)
        logits = {k: m(input_ids=long).logits[0, -1] for k, m in models.items()}
    return Int8Timing(decode, prefill, n_new, prefill_len, int8_weight_bytes(model),
                      bool(torch.equal(out["fp32"], out["int8"])), float((logits["fp32"] - logits["int8"]).abs().max()))

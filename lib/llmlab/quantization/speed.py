"""PyTorch's own low-bit kernels against float32: one matrix-vector product, a decode step and a prefill.

A batch-1 decode step reads every weight once (notebook 02's roofline), so with weights stored in
int8 instead of float32 it moves about 4x fewer bytes and could run up to that much faster where
memory bandwidth is the limit. A prefill over many tokens does many FLOPs per weight byte and is
limited by arithmetic instead: fewer bytes per weight buy nothing there unless the arithmetic itself
is faster.

* :func:`time_matvec`: one product ``W x`` with four kernels, interleaved: float32 and bfloat16
  ``F.linear``, PyTorch's dynamic int8 (``torch.ops.quantized.linear_dynamic``) and, where this
  torch has it, the int4 weight-only CPU kernel ``aten._weight_int4pack_mm_for_cpu`` (the one
  torchao's int4 weight-only config calls on a CPU: 4-bit codes, a bf16 scale and offset per group,
  bf16 activations). The kernel alone, on one large matrix: how close each gets to its bytes.
* :func:`time_int8`: the whole model, float32 against its dynamic-int8 copy, greedy decoding and
  one prefill, with a large memory copy in the same rounds (the bandwidth this process got meanwhile).

The int8 model is built with ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear``:
weights int8 with one scale per matrix (``per_tensor_symmetric``), activations quantized to 8-bit
codes on the fly for each matmul, one scale and zero point per input tensor from its min and max
(on x86, ``reduce_range=True``: 7 bits of them, against an overflow in fbgemm's int16 partial sums),
and int8 GEMM kernels (fbgemm / oneDNN on x86). PyTorch's documentation points new code at
torchao's ``quantize_`` (``Int8DynamicActivationInt8WeightConfig``), which is not a dependency here;
the eager ``torch.ao`` path still ships in torch 2.13 and runs on any x86 or ARM CPU.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_module, check_tensor
from .._torch import model_device
from ..decoding import greedy
from ..decoding.roofline import decode_roofline
from ..timing import Timing, interleaved
from .rtn import quantize_rtn

__all__ = ["int8_dynamic_copy", "int8_weight_bytes", "Int8Timing", "time_int8", "MatvecTiming", "time_matvec",
           "int4_kernel_available"]


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
    fp32 = decode_roofline(model, 0, bandwidth=1.0, dtype=torch.float32).weight_bytes
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    saved = sum(3 * m.weight.numel() - 4 for m in linears)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if head is not None and embed is not None and head.weight is embed.weight:
        saved -= 4 * embed.weight.shape[1]  # a tied table: its int8 copy is the head, the lookup still reads a float row
    return fp32, fp32 - saved


def _round_ratios(a: Timing, b: Timing) -> tuple[float, ...]:
    """``a / b`` round by round (interleaved runs: round r of each ran side by side)."""
    return tuple(x / y for x, y in zip(a.times, b.times))


@dataclass(frozen=True)
class Int8Timing:
    """Decode and prefill timings of the float32 model and its dynamic-int8 copy (interleaved).

    ``decode`` / ``prefill``: {"fp32": Timing, "int8": Timing}; ``n_new``: tokens each decode run
    generated (the prompt's own forward included in its time); ``prefill_len``; ``weight_bytes``
    (fp32, int8) per decode step; ``copy``: a copy of ``copy_bytes`` run in the decode rounds
    (:attr:`bandwidth`); ``same_tokens``: whether both greedy runs produced the same tokens;
    ``max_logit_diff``: largest |difference| of the prefill's last-position logits.
    """

    decode: dict[str, Timing]
    prefill: dict[str, Timing]
    n_new: int
    prefill_len: int
    weight_bytes: tuple[int, int]
    same_tokens: bool
    max_logit_diff: float
    copy: Timing
    copy_bytes: int

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

    def round_ratios(self, phase: str) -> tuple[float, ...]:
        """float32 time / int8 time of each round of ``phase`` ("decode" or "prefill"): the spread of the ratio."""
        runs = self.decode if phase == "decode" else self.prefill
        return _round_ratios(runs["fp32"], runs["int8"])

    @property
    def bandwidth(self) -> float:
        """Bytes/s of the copy in the decode rounds (read + write), median: what this process got meanwhile."""
        return 2 * self.copy_bytes / self.copy.median

    def seconds_per_token(self, kind: str) -> float:
        """Median decode time per generated token of ``kind`` ("fp32" or "int8")."""
        return self.decode[kind].median / self.n_new

    def achieved_bandwidth(self, kind: str) -> float:
        """Weight bytes per token / seconds per token: the bandwidth decoding would need if it did nothing else."""
        return self.weight_bytes[0 if kind == "fp32" else 1] / self.seconds_per_token(kind)

    @property
    def weight_read_fraction(self) -> float:
        """Share of a float32 decode step that reading its weights at :attr:`bandwidth` would take (capped at 1)."""
        return min(1.0, self.weight_bytes[0] / self.bandwidth / self.seconds_per_token("fp32"))

    @property
    def bytes_only_speedup(self) -> float:
        """Amdahl: the int8 speed-up if only the weight reading shrank (by the bytes ratio) and the rest stayed."""
        f = self.weight_read_fraction
        return 1.0 / ((1 - f) + f / self.predicted_decode_speedup)


def time_int8(model: nn.Module, prompt: torch.Tensor, *, n_new: int = 16, prefill_len: int = 256, rounds: int = 5,
              int8_model: nn.Module | None = None, copy_bytes: int = 2**27, progress=None) -> Int8Timing:
    """Greedy decoding of ``n_new`` tokens after ``prompt`` (1, p) and one forward over ``prefill_len``
    tokens, float32 vs :func:`int8_dynamic_copy`, timed interleaved for ``rounds`` rounds (CPU), a copy of
    ``copy_bytes`` in the decode rounds. ``progress``: optional wrapper of the two phases (e.g. ``tqdm``)."""
    check_module("model", model)
    check_tensor("prompt", prompt, dim=2, integer=True, min_numel=1)
    n_new = check_int("n_new", n_new, low=1, high=4096)
    prefill_len = check_int("prefill_len", prefill_len, low=1, high=1 << 16)
    copy_bytes = check_int("copy_bytes", copy_bytes, low=4, high=2**32)  # rounds: interleaved checks it
    q_model = int8_dynamic_copy(model) if int8_model is None else check_module("int8_model", int8_model)
    models = {"fp32": model, "int8": q_model}
    long = prompt.repeat(1, -(-prefill_len // prompt.shape[1]))[:, :prefill_len]
    src = torch.ones(copy_bytes // 4)
    dst = torch.empty_like(src)
    tokens, logits, runs = {}, {}, {}
    phases = ["decode", "prefill"]
    with torch.no_grad():
        for phase in (progress(phases) if progress is not None else phases):
            if phase == "decode":
                fns = {k: (lambda m=m, k=k: tokens.__setitem__(k, greedy(m, prompt, n_new))) for k, m in models.items()}
                runs[phase] = interleaved({**fns, "copy": lambda: dst.copy_(src)}, rounds=rounds)
            else:
                fns = {k: (lambda m=m, k=k: logits.__setitem__(k, m(input_ids=long).logits[0, -1])) for k, m in models.items()}
                runs[phase] = interleaved(fns, rounds=rounds)
    decode = {k: runs["decode"][k] for k in models}
    return Int8Timing(decode, runs["prefill"], n_new, prefill_len, int8_weight_bytes(model),
                      bool(torch.equal(tokens["fp32"], tokens["int8"])),
                      float((logits["fp32"] - logits["int8"]).abs().max()), runs["decode"]["copy"], src.numel() * 4)


def int4_kernel_available() -> bool:
    """Whether this torch has the int4 weight-only CPU kernel (``aten._weight_int4pack_mm_for_cpu``, torch >= 2.6)."""
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
        torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")


def _int4_pack(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed codes, bf16 scales and offsets) for ``aten._weight_int4pack_mm_for_cpu``, from llmlab's asymmetric RTN:
    the kernel decodes ``(q - 8) * scale + offset``, ours ``q * scale + minimum``, so offset = minimum + 8 * scale."""
    n, k = w.shape
    qt = quantize_rtn(w, bits=4, granularity=group_size, symmetric=False)
    codes = qt.codes.reshape(n, k).to(torch.int32)
    scale = qt.scale.reshape(n, k // group_size).float()
    offset = qt.minimum.reshape(n, k // group_size).float() + 8 * scale
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 8)  # 8 inner k-tiles: the kernel's layout
    return packed, torch.stack([scale.T, offset.T], dim=-1).to(torch.bfloat16).contiguous()


@dataclass(frozen=True)
class MatvecTiming:
    """One ``W x`` (batch 1) per kernel: ``times`` {kernel: Timing of ``repeat`` products}, ``weight_bytes``
    {kernel: bytes of W it reads, scales included}, ``rel_error`` {kernel: ||y - y_fp32|| / ||y_fp32||}, ``shape``
    of W. Kernels: "fp32", "bf16", "int8" and, if available, "int4" (group ``group_size``)."""

    times: dict[str, Timing]
    repeat: int
    weight_bytes: dict[str, int]
    rel_error: dict[str, float]
    shape: tuple[int, int]
    group_size: int

    def seconds(self, kernel: str) -> float:
        """Median seconds of one product."""
        return self.times[kernel].median / self.repeat

    def bandwidth(self, kernel: str) -> float:
        """Weight bytes / seconds of one product: the bandwidth the kernel reached reading W."""
        return self.weight_bytes[kernel] / self.seconds(kernel)

    def bits_per_weight(self, kernel: str) -> float:
        return 8 * self.weight_bytes[kernel] / (self.shape[0] * self.shape[1])

    def speedup(self, kernel: str, over: str = "fp32") -> float:
        """Median time of ``over`` / median time of ``kernel`` (> 1: ``kernel`` is faster)."""
        return self.times[over].median / self.times[kernel].median

    def round_ratios(self, kernel: str, over: str = "fp32") -> tuple[float, ...]:
        """``over``'s time / ``kernel``'s, round by round."""
        return _round_ratios(self.times[over], self.times[kernel])

    def bytes_ratio(self, kernel: str, over: str = "fp32") -> float:
        """The roofline's bound on :meth:`speedup` for a memory-bound product."""
        return self.weight_bytes[over] / self.weight_bytes[kernel]


def time_matvec(w: torch.Tensor, *, rounds: int = 5, repeat: int = 10, group_size: int = 64) -> MatvecTiming:
    """Time ``y = W x`` for one vector ``x`` with each kernel (see the module docstring), interleaved for ``rounds``
    rounds of ``repeat`` products each, on the CPU. ``w`` (out, in), in_features a multiple of ``group_size``."""
    check_tensor("w", w, dim=2, floating=True, min_numel=1)
    rounds = check_int("rounds", rounds, low=1, high=1000)  # before the kernels are built and run once
    repeat = check_int("repeat", repeat, low=1, high=10_000)
    group_size = check_int("group_size", group_size, low=32, high=256)
    if group_size & (group_size - 1):
        raise ValueError(f"group_size must be a power of 2 in [32, 256], got {group_size}")
    n, k = w.shape
    if k % group_size:
        raise ValueError(f"w must have in_features (its 2nd dim, {k}) a multiple of group_size={group_size}")
    w32 = w.detach().to(device="cpu", dtype=torch.float32).contiguous()
    w16 = w32.to(torch.bfloat16)
    linear = nn.Linear(k, n, bias=False)
    with torch.no_grad():
        linear.weight.copy_(w32)
    int8 = int8_dynamic_copy(nn.Sequential(linear))[0]
    x32 = torch.randn(1, k, generator=torch.Generator().manual_seed(0))
    x16 = x32.to(torch.bfloat16)
    kernels = {"fp32": lambda: F.linear(x32, w32), "bf16": lambda: F.linear(x16, w16), "int8": lambda: int8(x32)}
    nbytes = {"fp32": 4 * n * k, "bf16": 2 * n * k, "int8": n * k + 4}
    if int4_kernel_available():
        packed, scales = _int4_pack(w32, group_size)
        kernels["int4"] = lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x16, packed, group_size, scales)
        nbytes["int4"] = n * k // 2 + scales.numel() * 2
    with torch.no_grad():
        ys = {name: fn().float() for name, fn in kernels.items()}
        times = interleaved({name: (lambda fn=fn: [fn() for _ in range(repeat)]) for name, fn in kernels.items()},
                            rounds=rounds)
    ref = ys["fp32"]
    rel = {name: float((y - ref).norm() / ref.norm()) for name, y in ys.items()}
    return MatvecTiming(times, repeat, nbytes, rel, (n, k), group_size)

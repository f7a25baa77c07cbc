"""Bench section ``quantization`` (topic 14, notebook 13): low-bit kernels on one matrix-vector product against
float32, GGUF blocks against the ``gguf`` package, and
PyTorch's int8 kernels against float32 on a decode step and a prefill, beside the roofline's prediction."""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as ref_dequantize, quantize as ref_quantize  # the peer (the library never calls it)

from ..models import load_model, random_llama
from ..quantization import dequantize_gguf, gguf_weight, quantize_gguf, time_int8, time_matvec
from ..timing import interleaved
from .report import Row, section, timed_row

__all__ = ["bench_quantization"]


@section("quantization")
def bench_quantization(device: torch.device, size: str = "full") -> list[Row]:
    """One W x with the int8 / int4 / bf16 kernels vs float32 (llmlab.quantization.time_matvec), and
    quantize_gguf / dequantize_gguf vs gguf.quants, on the model's largest matrix (the 49152 x 576 embedding);
    the dynamic-int8 model vs float32: 32 greedy tokens and a 256-token prefill (CPU kernels; runs on the CPU)."""
    full = size == "full"
    rounds = 5 if full else 2
    if full:
        try:
            matrix, where = gguf_weight("token_embd.weight"), "the model's 49152 x 576 embedding"
        except (FileNotFoundError, ImportError, OSError):
            matrix, where = torch.randn(49152, 576) * 0.05, "a random 49152 x 576 matrix"
    else:
        matrix, where = torch.randn(256, 576) * 0.05, "a random 256 x 576 matrix"
    matrix = matrix.to(device)
    host = matrix.cpu().numpy()
    rows = []
    mv = time_matvec(matrix.cpu(), rounds=rounds, repeat=2 if full else 20)
    for kernel in [k for k in ("int8", "int4", "bf16") if k in mv.times]:
        rows.append(timed_row("quantization", f"y = W x, batch 1, {kernel} kernel vs float32 F.linear, {where}",
                              mv.times[kernel], mv.times["fp32"], peer_name="float32 F.linear (same run)",
                              note=f"CPU; bytes ratio {mv.bytes_ratio(kernel):.2f}x; {mv.bandwidth(kernel) / 1e9:.1f} GB/s "
                                   f"of weights vs fp32 {mv.bandwidth('fp32') / 1e9:.1f}; output error "
                                   f"{mv.rel_error[kernel]:.3f}"))
    for name in ("Q8_0", "Q4_1"):
        qtype = GGMLQuantizationType[name]
        raw = ref_quantize(host, qtype)
        same = np.array_equal(quantize_gguf(matrix, name), raw)
        t = interleaved({"ours": lambda: quantize_gguf(matrix, name), "gguf": lambda: ref_quantize(host, qtype)},
                        rounds=rounds, device=device)
        rows.append(timed_row("quantization", f"quantize_gguf {name}, {where}", t["ours"], t["gguf"],
                              peer_name="gguf.quants.quantize (NumPy)",
                              note=("byte-identical" if same else "BYTES DIFFER") + f"; torch on {device.type}"))
        raw_dev = torch.from_numpy(raw).to(device)
        t = interleaved({"ours": lambda: dequantize_gguf(raw_dev, name), "gguf": lambda: ref_dequantize(raw, qtype)},
                        rounds=rounds, device=device)
        rows.append(timed_row("quantization", f"dequantize_gguf {name}, {where}", t["ours"], t["gguf"],
                              peer_name="gguf.quants.dequantize (NumPy)"))

    if full:
        try:
            model, model_name = load_model(device="cpu")[0], "SmolLM2-135M-Instruct"
        except (FileNotFoundError, ImportError, OSError):
            model, model_name = random_llama("smollm2-135m"), "random SmolLM2-135M-shaped Llama"
        n_new, prefill = 32, 256
    else:
        model, model_name, n_new, prefill = random_llama("tiny"), "tiny random Llama", 4, 16
    prompt = torch.randint(3, min(10000, model.config.vocab_size), (1, 16), generator=torch.Generator().manual_seed(0))
    t = time_int8(model, prompt, n_new=n_new, prefill_len=prefill, rounds=rounds)
    agree = "same tokens" if t.same_tokens else "tokens differ"
    rows.append(timed_row("quantization", f"greedy decode {n_new} tokens, torch.ao dynamic int8 vs float32",
                          t.decode["int8"], t.decode["fp32"], peer_name="the float32 model (same run)",
                          note=f"{model_name}, CPU, batch 1; roofline predicts <= {t.predicted_decode_speedup:.2f}x "
                               f"({t.weight_bytes[0] / 1e6:.0f} -> {t.weight_bytes[1] / 1e6:.0f} MB/token); {agree}"))
    rows.append(timed_row("quantization", f"prefill {prefill} tokens, torch.ao dynamic int8 vs float32",
                          t.prefill["int8"], t.prefill["fp32"], peer_name="the float32 model (same run)",
                          note="compute-bound: fewer weight bytes predict ~1x; W8A8 int8 GEMM may still help"))
    return rows

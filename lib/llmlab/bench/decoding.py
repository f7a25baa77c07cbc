"""Bench section ``decoding`` (topic 2): HF generate vs llmlab's greedy and sampling, the KV cache, StaticDecoder."""

from __future__ import annotations

import os

import torch

from .. import decoding as D
from ..models import load_model, random_llama
from ..timing import interleaved
from .report import Row, section, timed_row

__all__ = ["bench_decoding", "decoding_model"]


def decoding_model(device: torch.device, dtype: torch.dtype, size: str = "full"):
    """``(model, name)``: the default model; where it is not installed (e.g. a bare GPU machine) a
    random Llama of the same shape (the same bytes and FLOPs per token); a tiny one at size "tiny"."""
    if size == "tiny":
        return random_llama("tiny", device=device, dtype=dtype), "tiny random Llama"
    try:
        model, _ = load_model(device=device, dtype=dtype)
        return model, "SmolLM2-135M-Instruct"
    except (FileNotFoundError, ImportError, OSError):
        return random_llama("smollm2-135m", device=device, dtype=dtype), "random SmolLM2-135M-shaped Llama"


@section("decoding")
def bench_decoding(device: torch.device, size: str = "full") -> list[Row]:
    """Greedy tok/s: HF generate, llmlab greedy (with/without KV cache), StaticDecoder; fraction of the floor;
    sampling tok/s (temperature + top-k + top-p, 64 new tokens) against generate with the same settings.

    CPU: float32, 32 new tokens, bandwidth measured with a 256 MB copy. CUDA: bfloat16, 128 new
    tokens, bandwidth from the data-sheet table (measured if the GPU is not in it), CUDA graph;
    ``LLMLAB_BENCH_COMPILE=1`` adds a row with the step compiled by torch.compile.
    """
    on_cuda = device.type == "cuda"
    dtype = torch.bfloat16 if on_cuda else torch.float32
    model, model_name = decoding_model(device, dtype, size)
    n_new, rounds = ((128, 5) if on_cuda else (32, 3)) if size == "full" else (8, 2)
    prompt = torch.randint(3, min(10000, model.config.vocab_size), (1, 16),  # random ids: no tokenizer, EOS unlikely
                           generator=torch.Generator().manual_seed(0))
    decoder = D.StaticDecoder(model, max_len=prompt.shape[1] + n_new)
    timing = D.time_decoders(model, prompt, n_new, names=("generate", "greedy", "no_cache", "static"),
                             repeat=rounds, static_decoder=decoder)
    t = timing.timings
    same = "identical tokens" if timing.identical else "TOKENS DIFFER"
    where = f"{model_name}, {str(dtype).replace('torch.', '')}, {n_new} new tokens, batch 1"
    n_out = {name: seq.shape[1] - prompt.shape[1] for name, seq in timing.sequences.items()}

    if on_cuda:
        peak = D.known_gpu_peak(torch.cuda.get_device_name(device))
        bandwidth, bw_note = (peak[0], "data-sheet peak") if peak else (D.measure_bandwidth(device), "measured copy")
    else:
        n_bytes = 2**28 if size == "full" else 2**22
        bandwidth = D.measure_bandwidth(device, n_bytes=n_bytes)
        bw_note = f"measured {n_bytes >> 20} MB copy"
    roof = D.decode_roofline(model, context_len=prompt.shape[1] + n_new // 2, bandwidth=bandwidth)
    floor = roof.floor_tokens_per_s
    floor_note = (f"floor {floor:.0f} tok/s = {roof.bytes_per_token / 1e6:.1f} MB/token / "
                  f"{bandwidth / 1e9:.0f} GB/s ({bw_note})")

    def tps(ours: str, peer: str, metric: str, peer_name: str, note: str = "") -> Row:
        return timed_row("decoding", metric, t[ours], t[peer], unit="tok/s", per_second=n_out[ours],
                         peer_name=peer_name, note=note)

    rows = [
        tps("greedy", "generate", "greedy tok/s, llmlab greedy vs generate", "HF generate(do_sample=False)",
            f"{where}; {same}"),
        tps("greedy", "no_cache", "greedy tok/s, with vs without KV cache", "llmlab greedy_without_cache",
            f"prompt 16 + {n_new} new tokens"),
        tps("static", "generate", "StaticDecoder vs generate", "HF generate(do_sample=False)",
            "CUDA graph" if decoder.use_cuda_graph else "static cache, no graph (CPU)"),
        tps("static", "greedy", "StaticDecoder vs llmlab greedy", "llmlab greedy"),
        Row("decoding", "fraction of bandwidth floor, StaticDecoder vs generate",
            timing.tokens_per_s["static"] / floor, timing.tokens_per_s["generate"] / floor, "fraction", "higher",
            "HF generate", floor_note),
    ]
    rows.append(_sampling_row(model, prompt.to(device), 64 if size == "full" else 8, rounds, device, where))
    if on_cuda and os.environ.get("LLMLAB_BENCH_COMPILE") == "1":
        compiled = D.StaticDecoder(model, max_len=prompt.shape[1] + n_new, compile=True)
        tc = D.time_decoders(model, prompt, n_new, names=("static",), repeat=rounds, static_decoder=compiled)
        ok = torch.equal(tc.sequences["static"], timing.sequences["generate"])
        rows.append(Row("decoding", "StaticDecoder(compile=True) vs generate", tc.tokens_per_s["static"],
                        timing.tokens_per_s["generate"], "tok/s", "higher", "HF generate(do_sample=False)",
                        f"{tc.tokens_per_s['static'] / floor:.1%} of floor; {'identical' if ok else 'TOKENS DIFFER'}"))
    return rows


#: The sampling settings of the sampling row: all three warpers on, as a chat model is often run.
SAMPLING = {"temperature": 0.8, "top_k": 50, "top_p": 0.9}


def _sampling_row(model, prompt: torch.Tensor, n_new: int, rounds: int, device: torch.device, where: str) -> Row:
    """llmlab ``sample`` vs HF ``generate(do_sample=True)`` with :data:`SAMPLING`, each run from
    ``torch.manual_seed(0)`` (so they draw the same tokens), interleaved: the per-token path
    (warpers, repetition controls, the step) without its old checks and host syncs."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    pad = getattr(model.generation_config, "pad_token_id", None)
    out: dict[str, torch.Tensor] = {}

    def ours():
        torch.manual_seed(0)
        out["ours"] = D.sample(model, prompt, n_new, eos_token_id=eos, **SAMPLING)

    def peer():
        torch.manual_seed(0)
        out["peer"] = model.generate(prompt, do_sample=True, max_new_tokens=n_new, eos_token_id=eos,
                                     pad_token_id=eos if pad is None else pad, **SAMPLING)

    t = interleaved({"ours": ours, "peer": peer}, rounds=rounds, warmup=1, device=device)
    same = "identical tokens" if torch.equal(out["ours"], out["peer"]) else "TOKENS DIFFER"
    return timed_row("decoding", "sampling tok/s (T 0.8, top-k 50, top-p 0.9), llmlab sample vs generate",
                     t["ours"], t["peer"], unit="tok/s", per_second=out["ours"].shape[1] - prompt.shape[1],
                     peer_name="HF generate(do_sample=True)", note=f"{where.split(',')[0]}, {n_new} new tokens; {same}")

"""``python -m llmlab.bench``: llmlab against the library a user would otherwise pick.

Every row is measured side by side in one run, on the same inputs and device, and printed with
the ratio. Targets (e.g. "slider step <= 30 ms") are read off this table, never asserted as
timings in tests. Options: ``--device cuda``, ``--only svd,decoding``, ``--out FILE.md``.

Each topic adds one function decorated with ``@section("name")`` that returns a list of
:class:`Row`; the sections below are in notebook order.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

SECTIONS: dict[str, Callable[[torch.device], list["Row"]]] = {}


@dataclass
class Row:
    """One comparison. ``ours`` and ``peer`` are in ``unit``; ``better`` says which way is good.

    ``ratio`` is always "how many times better llmlab is than the peer" (> 1: llmlab wins), so
    a time row gives peer/ours and a throughput row ours/peer. ``peer`` may be None for rows
    that have no peer (the ratio is then left blank).
    """

    topic: str
    metric: str
    ours: float
    peer: float | None
    unit: str
    better: str = "lower"  # "lower" (times, bytes) or "higher" (throughput)
    peer_name: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.peer is None or self.ours == 0 or self.peer == 0:
            return None
        return self.peer / self.ours if self.better == "lower" else self.ours / self.peer


def section(name: str):
    """Register a bench section ``fn(device) -> list[Row]`` under ``name``."""

    def register(fn):
        SECTIONS[name] = fn
        return fn

    return register


def timeit(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1, device=None) -> float:
    """Median wall time of ``fn()`` in seconds (synchronising CUDA around each call)."""
    sync = torch.cuda.synchronize if (device is not None and torch.device(device).type == "cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 1000 or abs(x) < 0.01:
        return f"{x:.3g}"
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def format_table(rows: list[Row], device: torch.device) -> str:
    """A Markdown table of ``rows`` with a header naming the machine."""
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    head = [
        f"# llmlab bench — {time.strftime('%Y-%m-%d')} — device {device} ({dev_name}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads",
        "",
        "| topic | metric | llmlab | peer | unit | ratio (x better) | peer is | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    body = [
        f"| {r.topic} | {r.metric} | {_fmt(r.ours)} | {_fmt(r.peer)} | {r.unit} | {_fmt(r.ratio)} | {r.peer_name} | {r.note} |"
        for r in rows
    ]
    return "\n".join(head + body)


# ---------------------------------------------------------------------------------------------
# Sections, one per topic. Each helper edits only its own block.
# ---------------------------------------------------------------------------------------------

# === section: svd ===
def _svd_rows(device: torch.device, size: int = 512, repeat: int = 5) -> list[Row]:
    """Topic 6 on one (size, size, 3) photo: factorize (torch vs NumPy), rank-k rebuild, slider step."""
    import numpy as np

    from llmlab import svd
    from llmlab.widgets import svd_explorer

    device = torch.device(device)
    image = svd.demo_images(size)["astronaut"]  # (size, size, 3) float32 in [0, 1]
    shape = "×".join(map(str, image.shape))
    chw = np.ascontiguousarray(np.moveaxis(image, -1, 0))  # NumPy's batch layout (C, H, W), same numbers
    where = "GPU" if device.type == "cuda" else "CPU"

    t_ours = timeit(lambda: svd.factorize(image, device=device), repeat=repeat, device=device)
    t_np = timeit(lambda: np.linalg.svd(chw, full_matrices=False), repeat=repeat)
    rows = [Row("svd", f"factorize {shape} (one batched SVD, float32)", t_ours * 1e3, t_np * 1e3, "ms",
                peer_name="numpy.linalg.svd (CPU)", note=f"llmlab on the {where}; same image, thin SVD")]

    f = svd.factorize(image, device=device)
    U, S, Vh = np.linalg.svd(chw, full_matrices=False)
    k = size // 8
    t_ours = timeit(lambda: svd.reconstruct(f, k), repeat=repeat, device=device)
    t_np = timeit(lambda: (U[..., :k] * S[..., None, :k]) @ Vh[..., :k, :], repeat=repeat)
    rows.append(Row("svd", f"reconstruct rank k={k} of {shape}", t_ours * 1e3, t_np * 1e3, "ms",
                    peer_name="NumPy (U_k Σ_k) @ V_kᵀ", note=f"llmlab on the {where}"))

    explorer = svd_explorer({"astronaut": image}, device=device)
    explorer.time_steps()  # warm-up sweep
    steps = explorer.time_steps()
    rows.append(Row("svd", f"widget slider step, median over k=1..{size} (reconstruct + redraw)",
                    statistics.median(steps) * 1e3, None, "ms",
                    note=f"target <= 30 ms; max {max(steps) * 1e3:.1f} ms over {len(steps)} steps"))
    return rows


@section("svd")
def bench_svd(device: torch.device) -> list[Row]:
    return _svd_rows(device)
# === end: svd ===

# === section: perplexity ===
def _hf_guide_perplexity(model, input_ids, *, max_length: int, stride: int) -> float:
    """The loop of the Hugging Face guide "Perplexity of fixed-length models", as published (2024+)."""
    seq_len = input_ids.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        window = input_ids[:, begin_loc:end_loc]
        target_ids = window.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            neg_log_likelihood = model(window, labels=target_ids).loss
        num_loss_tokens = (target_ids != -100).sum().item() - target_ids.size(0)
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return torch.exp(nll_sum / n_tokens).item()


@section("perplexity")
def bench_perplexity(device: torch.device) -> list[Row]:
    """Scored tokens/s of llmlab.perplexity vs the HF guide's loop: same model, text, window, stride."""
    from pydoc_data.topics import topics

    from .models import load_model
    from .perplexity import perplexity

    model, tokenizer = load_model(device=device)
    n_tokens, max_length, stride, batch = (769, 256, 128, 8) if device.type == "cpu" else (8193, 1024, 256, 16)
    text = "\n\n".join(topics[k] for k in sorted(topics))[: 8 * n_tokens]
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :n_tokens].to(device)
    window = dict(max_length=max_length, stride=stride)
    ours = perplexity(model, ids, **window)
    ours_batched = perplexity(model, ids, **window, batch_size=batch)
    guide_ppl = _hf_guide_perplexity(model, ids, **window)
    runs = {
        "ours": lambda: perplexity(model, ids, **window),
        "batched": lambda: perplexity(model, ids, **window, batch_size=batch),
        "guide": lambda: _hf_guide_perplexity(model, ids, **window),
    }
    # The three runs above were the warm-up. Interleave the repeats (ours, batched, guide, ours,
    # ...) so that a change in the machine's load hits all three alike; report each median.
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(5):
        for name, fn in runs.items():
            times[name].append(timeit(fn, repeat=1, warmup=0, device=device))
    t_ours, t_batched, t_guide = (statistics.median(times[name]) for name in runs)
    n = ours.n_tokens
    setting = f"{n} tokens, window {max_length}, stride {stride}"
    return [
        Row("perplexity", f"scored tokens/s ({setting})", n / t_ours, n / t_guide, "tokens/s", "higher",
            "HF perplexity guide loop",
            f"PPL {ours.ppl:.3f} vs guide {guide_ppl:.3f} (guide: 1 token less context, off-by-one weights)"),
        Row("perplexity", f"scored tokens/s, batch_size={batch} ({setting})", n / t_batched, n / t_guide,
            "tokens/s", "higher", "HF perplexity guide loop",
            f"PPL {ours_batched.ppl:.3f} (batch 1: {ours.ppl:.3f}) vs guide {guide_ppl:.3f}; "
            "batching pays mostly on a GPU"),
    ]
# === end: perplexity ===

# === section: decoding ===
def _decoding_model(device: torch.device, dtype: torch.dtype):
    """The default model; if it is not installed (e.g. a bare GPU box), a random Llama of the same shape."""
    try:
        from llmlab.models import load_model

        model, _ = load_model(device=device, dtype=dtype)
        return model, "SmolLM2-135M-Instruct"
    except (FileNotFoundError, ImportError, OSError):
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                             rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
                             bos_token_id=1, eos_token_id=2, pad_token_id=2)
        return LlamaForCausalLM(config).to(device=device, dtype=dtype).eval(), "random SmolLM2-135M-shaped Llama"


@section("decoding")
def _bench_decoding(device: torch.device) -> list[Row]:
    """Greedy tok/s: HF generate, llmlab greedy (with/without KV cache), StaticDecoder; fraction of the floor.

    CPU: float32, 32 new tokens, bandwidth measured with a 256 MB copy. CUDA: bfloat16, 128 new
    tokens, bandwidth from the data-sheet table (measured if the GPU is not in it), CUDA graph;
    ``LLMLAB_BENCH_COMPILE=1`` adds a row with the step compiled by torch.compile.
    """
    import os

    from llmlab import decoding as D

    on_cuda = device.type == "cuda"
    dtype = torch.bfloat16 if on_cuda else torch.float32
    model, model_name = _decoding_model(device, dtype)
    n_new, repeat = (128, 5) if on_cuda else (32, 1)
    torch.manual_seed(0)
    prompt = torch.randint(100, 10000, (1, 16))  # random ids: no tokenizer needed, EOS unlikely
    decoder = D.StaticDecoder(model, max_len=prompt.shape[1] + n_new)
    names = ("generate", "greedy", "no_cache", "static")
    timing = D.time_decoders(model, prompt, n_new, names=names, repeat=repeat, static_decoder=decoder)
    tps = timing.tokens_per_s
    same = "identical tokens" if timing.identical else "TOKENS DIFFER"
    where = f"{model_name}, {str(dtype).replace('torch.', '')}, {n_new} new tokens, batch 1"

    if on_cuda:
        peak = D.known_gpu_peak(torch.cuda.get_device_name(device))
        bandwidth, bw_note = (peak[0], "data-sheet peak") if peak else (D.measure_bandwidth(device), "measured copy")
    else:
        bandwidth, bw_note = D.measure_bandwidth(device, n_bytes=2**28), "measured 256 MB copy"
    roof = D.decode_roofline(model, context_len=prompt.shape[1] + n_new // 2, bandwidth=bandwidth)
    floor = roof.floor_tokens_per_s
    floor_note = (f"floor {floor:.0f} tok/s = {roof.bytes_per_token / 1e6:.0f} MB/token / "
                  f"{bandwidth / 1e9:.0f} GB/s ({bw_note})")

    rows = [
        Row("decoding", "greedy tok/s, llmlab greedy vs generate", tps["greedy"], tps["generate"], "tok/s", "higher",
            "HF generate(do_sample=False)", f"{where}; {same}"),
        Row("decoding", "greedy tok/s, with vs without KV cache", tps["greedy"], tps["no_cache"], "tok/s", "higher",
            "llmlab greedy_without_cache", f"prompt 16 + {n_new} new tokens"),
        Row("decoding", "StaticDecoder vs generate", tps["static"], tps["generate"], "tok/s", "higher",
            "HF generate(do_sample=False)", "CUDA graph" if decoder.use_cuda_graph else "static cache, no graph (CPU)"),
        Row("decoding", "StaticDecoder vs llmlab greedy", tps["static"], tps["greedy"], "tok/s", "higher",
            "llmlab greedy", ""),
        Row("decoding", "fraction of bandwidth floor, StaticDecoder vs generate", tps["static"] / floor,
            tps["generate"] / floor, "fraction", "higher", "HF generate", floor_note),
    ]
    if on_cuda and os.environ.get("LLMLAB_BENCH_COMPILE") == "1":
        compiled = D.StaticDecoder(model, max_len=prompt.shape[1] + n_new, compile=True)
        t = D.time_decoders(model, prompt, n_new, names=("static",), repeat=repeat, static_decoder=compiled)
        ok = torch.equal(t.sequences["static"], timing.sequences["generate"])
        rows.append(Row("decoding", "StaticDecoder(compile=True) vs generate", t.tokens_per_s["static"], tps["generate"],
                        "tok/s", "higher", "HF generate(do_sample=False)",
                        f"{t.tokens_per_s['static'] / floor:.1%} of floor; {'identical' if ok else 'TOKENS DIFFER'}"))
    return rows
# === end: decoding ===

# === section: checkpointing ===
@section("checkpointing")
def _bench_checkpointing(device: torch.device) -> list[Row]:
    """n = 64 chain, batch 64, width 256 (CPU) or 1024 (CUDA): time of sqrt and torch's
    checkpoint_sequential against store_all, and saved bytes against the formulas."""
    from llmlab.checkpointing import make_chain, measure, theory_saved_activations

    n, batch = 64, 64
    width = 1024 if device.type == "cuda" else 256
    model = make_chain(n, width).to(device)
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(0)).to(device)
    size = f"n={n}, width={width}, batch={batch}"
    t = {s: timeit(lambda s=s: measure(model, x, s), device=device) * 1e3 for s in ("store_all", "sqrt", "torch")}
    rows = [
        Row("checkpointing", f"fwd+bwd time, sqrt checkpoints ({size})", t["sqrt"], t["store_all"], "ms",
            peer_name="store_all (no checkpointing)", note="ratio < 1: the recompute overhead"),
        Row("checkpointing", f"fwd+bwd time, torch checkpoint_sequential ({size})", t["torch"], t["store_all"], "ms",
            peer_name="store_all (no checkpointing)", note="llmlab column is torch's strategy here"),
        Row("checkpointing", f"fwd+bwd time, sqrt: llmlab vs torch ({size})", t["sqrt"], t["torch"], "ms",
            peer_name="torch.utils.checkpoint (use_reentrant=False)"),
    ]
    act_mib = batch * width * 4 / 2**20
    stats = {s: measure(model, x, s) for s in ("store_all", "recompute_all", "sqrt")}
    for s, st in stats.items():
        rows.append(Row("checkpointing", f"peak saved activations, {s} ({size})", st.peak_saved_bytes / 2**20,
                        theory_saved_activations(n, s) * act_mib, "MiB", peer_name="formula",
                        note=f"{st.forward_calls} layer forwards"))
    if device.type == "cuda":
        # An activation-dominated shape (8 MiB per activation, 16 MiB of weights): the allocator's
        # peak then shows what the strategy keeps rather than the gradients all strategies make.
        big = f"n={n}, width=256, batch=8192"
        model = make_chain(n, 256).to(device)
        x = torch.randn(8192, 256, generator=torch.Generator().manual_seed(0)).to(device)
        peak = {s: measure(model, x, s).cuda_peak_bytes / 2**20 for s in ("store_all", "sqrt", "torch")}
        for s in ("sqrt", "torch"):
            rows.append(Row("checkpointing", f"allocator peak, {s} ({big})", peak[s], peak["store_all"], "MiB",
                            peer_name="store_all", note="torch.cuda.max_memory_allocated above the resting state"))
    return rows
# === end: checkpointing ===

# === section: precision ===
@section("precision")
def _bench_precision(device: torch.device) -> list[Row]:
    """Step time of a transformer block: bf16 autocast (and tf32 on CUDA) vs fp32, side by side;
    and the measured mixed-precision AdamW model states against the 16 B/param formula."""
    import copy as _copy

    from torch import nn

    from llmlab import precision as P

    rows: list[Row] = []
    cuda = device.type == "cuda"
    shape = dict(d_model=1024, n_heads=16, batch=16, seq=512) if cuda else dict(d_model=256, n_heads=4, batch=8, seq=128)
    where = "CUDA" if cuda else "CPU: bf16 speed depends on AVX512-BF16/AMX support"
    fp32 = P.block_step_seconds("fp32", device=device, repeat=10 if cuda else 5, **shape)
    modes = ("bf16", "tf32") if cuda else ("bf16",)
    for mode in modes:
        t = P.block_step_seconds(mode, device=device, repeat=10 if cuda else 5, **shape)
        label = "bf16 autocast" if mode == "bf16" else "tf32 matmuls"
        rows.append(Row("precision", f"train step, transformer block d={shape['d_model']}, {label}", t, fp32, "s",
                        peer_name="fp32 (same block, same run)",
                        note=f"{where}; batch {shape['batch']} x seq {shape['seq']}, fwd+bwd+AdamW; ratio = speed-up"))
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(512, 2048), nn.GELU(), nn.Linear(2048, 512)).to(device)
    model = _copy.deepcopy(mlp)
    opt = P.mixed_precision_setup(model, torch.bfloat16, optimizer="adamw", lr=1e-3)
    model(torch.randn(16, 512, device=device, dtype=torch.bfloat16)).float().pow(2).mean().backward()
    opt.step()
    measured, formula = P.measured_ledger(model, opt), P.memory_ledger(model, precision="mixed")
    n = sum(p.numel() for p in model.parameters())
    rows.append(Row("precision", "mixed-precision AdamW model states (bf16 MLP)", measured.total / n,
                    formula.total / n, "B/param", peer_name="formula 2+2+4+4+4",
                    note=f"measured tensors after one step; {measured.other} B of AdamW step counters"))
    return rows
# === end: precision ===

# === section: lora ===
@section("lora")
def bench_lora(device: torch.device) -> list[Row]:
    """llmlab LoRA vs PEFT LoRA on the default model: train step and memory; merged vs unmerged forward."""
    import copy

    from peft import LoraConfig, get_peft_model

    from llmlab.data import load_instructions, make_batches
    from llmlab.lora import add_lora, merge_lora
    from llmlab.memory import measured_ledger
    from llmlab.models import load_model

    targets, r, alpha, batch_size = ("q_proj", "k_proj", "v_proj", "o_proj"), 16, 32, 4
    base, tokenizer = load_model(device=device)
    batch = make_batches(load_instructions("train"), tokenizer, batch_size=batch_size, steps=1, device=device)[0]
    kwargs = batch.as_kwargs()
    shape = "x".join(str(d) for d in batch.input_ids.shape)

    def trainer(model):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        model.train()

        def step():
            model(**kwargs).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step, opt

    def measure(model):
        step, opt = trainer(model)
        step()  # allocate the optimizer states
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            step()
            peak = torch.cuda.max_memory_allocated(device)
        else:  # no allocator statistics on the CPU: count params + grads + optimizer states
            model(**kwargs).loss.backward()
            peak = measured_ledger(model, opt).total
            opt.zero_grad(set_to_none=True)
        return step, peak

    def interleaved(fns, rounds=3, repeat=2):
        # alternate the contenders round by round and keep each one's best: load drifts hit all alike
        best = [float("inf")] * len(fns)
        for _ in range(rounds):
            for i, fn in enumerate(fns):
                best[i] = min(best[i], timeit(fn, repeat=repeat, warmup=0, device=device))
        return best

    torch.manual_seed(0)
    ours = add_lora(copy.deepcopy(base), targets, r=r, alpha=alpha)
    torch.manual_seed(0)
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets)))
    step_ours, m_ours = measure(ours)
    step_peft, m_peft = measure(theirs)
    t_ours, t_peft = interleaved([step_ours, step_peft])
    del theirs
    mem_note = "max_memory_allocated" if device.type == "cuda" else "params+grads+AdamW states (CPU)"
    cfg = f"SmolLM2-135M, r={r}, q/k/v/o, batch {shape}"
    rows = [
        Row("lora", "train step (fwd+bwd+AdamW)", t_ours * 1e3, t_peft * 1e3, "ms", peer_name="PEFT LoRA", note=cfg),
        Row("lora", "peak training memory", m_ours / 2**20, m_peft / 2**20, "MiB", peer_name="PEFT LoRA", note=mem_note),
    ]

    ours.eval()
    with torch.no_grad():
        forward = lambda m: (lambda: m(input_ids=batch.input_ids, attention_mask=batch.attention_mask))
        unmerged = copy.deepcopy(ours)
        merged = merge_lora(ours)
        t_unmerged, t_merged, t_base = interleaved([forward(unmerged), forward(merged), forward(base)], repeat=3)
    rows += [
        Row("lora", "forward, merged vs unmerged", t_merged * 1e3, t_unmerged * 1e3, "ms", peer_name="unmerged LoRA",
            note=f"batch {shape}"),
        Row("lora", "forward, merged vs base model", t_merged * 1e3, t_base * 1e3, "ms", peer_name="base model",
            note="goal ~1.0x: merging removes the overhead"),
    ]
    return rows
# === end: lora ===


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmlab.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--only", default="", help=f"comma-separated sections out of: {', '.join(SECTIONS)}")
    parser.add_argument("--out", default="", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available here")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    rows: list[Row] = []
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        rows += SECTIONS[name](device)
    table = format_table(rows, device)
    print(table)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

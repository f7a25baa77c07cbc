"""Bench section ``serving`` (topic 16): continuous vs static batching, paged vs reserved KV memory,
speculative decoding (prompt lookup) vs plain greedy."""

from __future__ import annotations

import torch

from .. import serving as S
from ..decoding import greedy
from ..models import default_model_dir
from ..timing import interleaved
from .decoding import decoding_model
from .report import Row, section, timed_row

__all__ = ["bench_serving"]


def _trace(model, size: str):
    """The trace and the editing prompt, as token ids: real text with the default model's tokenizer;
    random ids for a model without one (the random stand-in, the tiny size)."""
    n, top = (16, 96) if size == "full" else (6, 12)
    try:
        from transformers import AutoTokenizer  # why: the tokenizer only, where the default model is installed

        if getattr(model.config, "vocab_size", None) != 49152:
            raise OSError("not the default model's vocabulary")
        tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir()), local_files_only=True)
        trace = S.make_trace(tokenizer, n, seed=0, max_new_tokens=top)
        messages = [{"role": "user", "content": S.SPECULATIVE_PROMPTS["editing"]}]
        editing = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)["input_ids"]
        return trace, editing, "chat trace"
    except (OSError, ImportError, FileNotFoundError):
        g = torch.Generator().manual_seed(0)
        vocab = min(1000, model.config.vocab_size)
        prompts = [torch.randint(3, vocab, (1, int(torch.randint(8, 40, (1,), generator=g))), generator=g) for _ in range(n)]
        lengths = [int(torch.randint(2, top, (1,), generator=g)) for _ in range(n)]
        trace = S.Trace(tuple(S.Request(p, k, 0.0) for p, k in zip(prompts, lengths)), 0)
        words = torch.randint(3, vocab, (1, 24), generator=g)
        editing = torch.cat([words, words[:, :12]], dim=1)  # something to look up
        return trace, editing, "random ids"


@section("serving")
def bench_serving(device: torch.device, size: str = "full") -> list[Row]:
    """Continuous vs static batching tok/s on a trace (max_batch 8); peak KV bytes, paged vs reserved;
    speculative decoding with prompt lookup vs llmlab greedy on an editing prompt."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, model_name = decoding_model(device, dtype, size)
    trace, editing, kind = _trace(model, size)
    rounds = 3 if size == "full" else 2
    runs = {}

    def run(policy):
        def go():
            runs[policy] = S.serve(model, trace.prompts, trace.max_new_tokens, max_batch=8, policy=policy)
        return go

    t = interleaved({"continuous": run("continuous"), "static": run("static")}, rounds=rounds, warmup=0, device=device)
    cont, stat = runs["continuous"], runs["static"]
    same = all(torch.equal(a, b) for a, b in zip(cont.sequences, stat.sequences))
    n_tokens = cont.new_tokens
    note = (f"{model_name}, {len(trace)} requests ({kind}, {min(trace.max_new_tokens)}-{max(trace.max_new_tokens)} "
            f"new tokens, all waiting at 0), max_batch 8; static: {stat.useful_fraction:.0%} of decode rows useful; "
            f"{'identical tokens' if same else 'TOKENS DIFFER'}")
    rows = [timed_row("serving", "tok/s, continuous vs static batching", t["continuous"], t["static"], unit="tok/s",
                      per_second=n_tokens, peer_name="static batching (same engine)", note=note)]

    # KV memory at the busiest step: the blocks paging holds vs a contiguous region per running request
    # as long as the longest request of the trace (the tightest reservation a server could choose).
    context = max(r.prompt.shape[1] + r.max_new_tokens for r in trace.requests)
    paged_peak = max(u.slots for u in cont.usage) * cont.bytes_per_token
    reserved_peak = max(cont.reserved_slots(context)) * cont.bytes_per_token
    used_peak = max(u.tokens for u in cont.usage) * cont.bytes_per_token
    rows.append(Row("serving", "peak KV bytes, paged (block 16) vs reserved", paged_peak / 1e6, reserved_peak / 1e6,
                    "MB", "lower", f"reserve {context} slots per request (the longest request)",
                    f"tokens actually stored at the peak: {used_peak / 1e6:.2f} MB; shared prefix blocks: "
                    f"{cont.reused_blocks}"))

    n_new = 40 if size == "full" else 12  # the corrected text is ~45 tokens
    outs = {}

    def spec():
        outs["spec"] = S.speculative_generate(model, editing, n_new, draft="prompt_lookup", num_draft_tokens=4,
                                              return_stats=True)

    def plain():
        outs["greedy"] = greedy(model, editing, n_new)

    ts = interleaved({"spec": spec, "greedy": plain}, rounds=rounds + 2, warmup=1, device=device)
    res = outs["spec"]
    identical = torch.equal(res.sequences, outs["greedy"])
    rows.append(timed_row("serving", "tok/s, speculative (prompt lookup, γ=4) vs greedy", ts["spec"], ts["greedy"],
                          unit="tok/s", per_second=res.new_tokens, peer_name="llmlab greedy",
                          note=f"editing prompt (spelling), {res.new_tokens} new tokens; α = {res.alpha:.2f} per tested position, "
                               f"{res.tokens_per_round:.2f} tokens per target forward; "
                               f"{'identical tokens' if identical else 'TOKENS DIFFER'}"))
    return rows


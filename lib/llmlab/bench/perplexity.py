"""Bench section ``perplexity`` (topic 1): llmlab's sliding window against the HF guide's loop."""

from __future__ import annotations

from pydoc_data.topics import topics  # Python's own documentation: English text installed everywhere

import torch

from ..models import load_model, random_llama
from ..perplexity import perplexity
from ..timing import interleaved
from .report import Row, section, timed_row

__all__ = ["bench_perplexity", "hf_guide_perplexity"]


def hf_guide_perplexity(model, input_ids, *, max_length: int, stride: int) -> float:
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
def bench_perplexity(device: torch.device, size: str = "full") -> list[Row]:
    """Scored tokens/s of llmlab.perplexity vs the HF guide's loop: same model, text, window, stride."""
    if size == "full":
        model, tokenizer = load_model(device=device)
        n_tokens, max_length, stride, batch = (769, 256, 128, 8) if device.type == "cpu" else (8193, 1024, 256, 16)
        text = "\n\n".join(topics[k] for k in sorted(topics))[: 8 * n_tokens]
        ids = tokenizer(text, return_tensors="pt").input_ids[:, :n_tokens].to(device)
        model_name, rounds = "SmolLM2-135M", 5
    else:
        model = random_llama("tiny", device=device)
        n_tokens, max_length, stride, batch = 97, 32, 16, 4
        ids = torch.randint(3, model.config.vocab_size, (1, n_tokens), generator=torch.Generator().manual_seed(0))
        ids, model_name, rounds = ids.to(device), "tiny random Llama", 2
    window = dict(max_length=max_length, stride=stride)
    ours = perplexity(model, ids, **window)
    ours_batched = perplexity(model, ids, **window, batch_size=batch)
    guide_ppl = hf_guide_perplexity(model, ids, **window)
    t = interleaved({
        "ours": lambda: perplexity(model, ids, **window),
        "batched": lambda: perplexity(model, ids, **window, batch_size=batch),
        "guide": lambda: hf_guide_perplexity(model, ids, **window),
    }, rounds=rounds, warmup=0, device=device)  # the three calls above were the warm-up
    n = ours.n_tokens
    setting = f"{model_name}, {n} tokens, window {max_length}, stride {stride}"
    return [
        timed_row("perplexity", f"scored tokens/s ({setting})", t["ours"], t["guide"], unit="tokens/s",
                  per_second=n, peer_name="HF perplexity guide loop",
                  note=f"PPL {ours.ppl:.3f} vs guide {guide_ppl:.3f} (guide: 1 token less context, off-by-one weights)"),
        timed_row("perplexity", f"scored tokens/s, batch_size={batch} ({setting})", t["batched"], t["guide"],
                  unit="tokens/s", per_second=n, peer_name="HF perplexity guide loop",
                  note=f"PPL {ours_batched.ppl:.3f} (batch 1: {ours.ppl:.3f}) vs guide {guide_ppl:.3f}; "
                       "batching pays mostly on a GPU"),
    ]

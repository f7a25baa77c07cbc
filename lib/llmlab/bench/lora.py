"""Bench section ``lora`` (topic 7): llmlab's LoRA against PEFT and against full fine-tuning, and merged
against unmerged."""

from __future__ import annotations

import copy

import torch

from .._torch import isolated_rng
from ..data import load_instructions, make_batches
from ..lora import add_lora, merge_lora
from ..memory import measured_ledger
from ..models import load_model, random_llama
from ..timing import interleaved
from .report import Row, section, timed_row

__all__ = ["bench_lora"]


def _trainer(model, kwargs):
    """One fwd + bwd + AdamW step on ``kwargs``, and the optimizer it steps."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step():
        model(**kwargs).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, opt


def _peak_memory(model, kwargs, device) -> tuple[object, int]:
    """A training step for ``model`` and its memory: the allocator's peak on CUDA; on the CPU (no
    allocator statistics) the model states after a step: params + grads + AdamW states."""
    step, opt = _trainer(model, kwargs)
    step()  # allocate the optimizer states
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        return step, torch.cuda.max_memory_allocated(device)
    model(**kwargs).loss.backward()
    peak = measured_ledger(model, opt).total
    opt.zero_grad(set_to_none=True)
    return step, peak


@section("lora")
def bench_lora(device: torch.device, size: str = "full") -> list[Row]:
    """llmlab LoRA vs PEFT LoRA: train step and memory; merged vs unmerged vs base forward."""
    # PEFT is the peer, used only here: imported when the section runs.
    from peft import LoraConfig, get_peft_model

    targets, r, alpha, batch_size = ("q_proj", "k_proj", "v_proj", "o_proj"), 16, 32, 4
    if size == "full":
        base, tokenizer = load_model(device=device)
        batch = make_batches(load_instructions("train"), tokenizer, batch_size=batch_size, steps=1, device=device)[0]
        kwargs, model_name, rounds = batch.as_kwargs(), "SmolLM2-135M", 3
    else:
        base, r, alpha = random_llama("tiny", device=device), 4, 8
        ids = torch.randint(3, base.config.vocab_size, (batch_size, 12), generator=torch.Generator().manual_seed(0))
        kwargs = {"input_ids": ids.to(device), "labels": ids.to(device)}
        model_name, rounds = "tiny random Llama", 2
    shape = "x".join(str(d) for d in kwargs["input_ids"].shape)

    with isolated_rng(0):  # the same seed draws the same A matrices in both
        ours = add_lora(copy.deepcopy(base), targets, r=r, alpha=alpha)
    with isolated_rng(0):
        theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets)))
    step_ours, m_ours = _peak_memory(ours, kwargs, device)
    step_peft, m_peft = _peak_memory(theirs, kwargs, device)
    t = interleaved({"ours": step_ours, "peft": step_peft}, rounds=rounds, device=device)
    del theirs
    mem_note = "max_memory_allocated" if device.type == "cuda" else "params+grads+AdamW states (CPU)"
    cfg = f"{model_name}, r={r}, q/k/v/o, batch {shape}"
    rows = [
        timed_row("lora", "train step (fwd+bwd+AdamW)", t["ours"], t["peft"], peer_name="PEFT LoRA", note=cfg),
        Row("lora", "peak training memory", m_ours / 2**20, m_peft / 2**20, "MiB", peer_name="PEFT LoRA", note=mem_note),
    ]

    # LoRA against full fine-tuning, the same step on the same batch (notebook 07 prints this ratio, never asserts it)
    full = copy.deepcopy(base)
    step_full, m_full = _peak_memory(full, kwargs, device)
    t = interleaved({"ours": step_ours, "full": step_full}, rounds=rounds, device=device)
    del full
    rows += [
        timed_row("lora", "train step, LoRA vs full fine-tuning", t["ours"], t["full"], peer_name="full fine-tuning",
                  note=f"{cfg}; notebook 07 splits it into forward / backward / optimizer"),
        Row("lora", "training memory, LoRA vs full fine-tuning", m_ours / 2**20, m_full / 2**20, "MiB",
            peer_name="full fine-tuning", note=mem_note),
    ]

    ours.eval()
    forward_kwargs = {k: v for k, v in kwargs.items() if k != "labels"}
    unmerged = copy.deepcopy(ours)
    merged = merge_lora(ours)
    with torch.no_grad():
        t = interleaved({name: (lambda m=m: m(**forward_kwargs)) for name, m in
                         (("unmerged", unmerged), ("merged", merged), ("base", base))}, rounds=2 * rounds, device=device)
    rows += [
        timed_row("lora", "forward, merged vs unmerged", t["merged"], t["unmerged"], peer_name="unmerged LoRA",
                  note=f"batch {shape}"),
        timed_row("lora", "forward, merged vs base model", t["merged"], t["base"], peer_name="base model",
                  note="goal ~1.0x: merging removes the overhead"),
    ]
    return rows

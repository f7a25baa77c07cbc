"""Causal vs masked language modelling with a :class:`~.tiny.TinyTransformer`: train, then use.

Two objectives, one architecture:

* **causal LM** (GPT, LLaMA): under the causal mask, predict every token from the tokens before
  it; loss = -(1/T) Σ_t log p(x_t | x_<t). The conditionals chain into a sequence probability,
  p(x) = Π_t p(x_t | x_<t), so the model can score a sentence (:func:`sentence_logprob`,
  perplexity) and generate one token at a time (:func:`sample_sentences`).
* **masked LM** (BERT): pick 15 % of the tokens, hide them (80 % become ``[MASK]``, 10 % a random
  token, 10 % stay; :func:`mask_tokens`, as Hugging Face's ``DataCollatorForLanguageModeling``)
  and predict them with the bidirectional mask; loss only on the picked tokens. Each prediction
  sees *both* sides, so it fills a blank better than a left-to-right model
  (:func:`fill_blank`), but its conditionals p(x_i | x_-i) do not chain into p(x): their product
  summed over all sequences is not 1 (:func:`pair_total`). Scoring a sentence with them gives a
  *pseudo*-perplexity (:func:`pseudo_perplexity`, Salazar et al. 2020), not a perplexity.

Id tensors are ``(batch, seq)`` as :func:`~.corpus.encode_batch` makes them: ``[BOS] words [EOS]``
right-padded with ``[PAD]``; the scored targets are the words and the ``[EOS]``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._checks import check_batch_plan, check_choice, check_float, check_int, check_module, check_tensor
from .._torch import IGNORE_INDEX, isolated_rng, model_device, read_floats
from ..modelinfo import check_token_ids
from .corpus import BOS, EOS, MASK, PAD
from .masks import attention_mask

__all__ = ["OBJECTIVES", "padded_mask", "mask_tokens", "lm_loss", "TrainLog", "train_tiny_lm", "target_logprobs",
           "sentence_logprob", "causal_perplexity", "pseudo_logprobs", "pseudo_perplexity", "sample_sentences",
           "FILL_METHODS", "fill_blank", "pair_total"]

OBJECTIVES = ("causal", "masked")
FILL_METHODS = ("masked", "left", "rescore")


def _check_ids(ids, model=None) -> torch.Tensor:
    """``ids`` (batch, seq) of integers; with ``model``, ids its vocabulary holds (one host sync)."""
    check_tensor("ids", ids, dim=2, integer=True, min_numel=1)
    return ids if model is None else check_token_ids(model, ids, name="ids")


def _check_model(model):
    """``model`` must be a module with ``vocab_size`` (a :class:`~.tiny.TinyTransformer`)."""
    check_module("model", model)
    if not isinstance(getattr(model, "vocab_size", None), int):
        raise TypeError(f"model must be a TinyTransformer (a module with vocab_size), got {type(model).__name__}")
    return model


def _n_scored(ids: torch.Tensor) -> int:
    """The scored tokens of ``ids`` (every non-padding token after the first position); at least one."""
    n_scored = int((ids[:, 1:] != PAD).sum())
    if n_scored == 0:
        raise ValueError(f"ids must hold at least one token to score after [BOS] (not [PAD]), got {ids.tolist()}")
    return n_scored


def padded_mask(kind: str, ids: torch.Tensor, *, n_prefix: int = 0, pad_id: int = PAD) -> torch.Tensor:
    """Bool (batch, n, n): :func:`attention_mask` of ``kind`` for every row of ``ids``, with the
    ``pad_id`` keys hidden (a real token never attends to padding)."""
    ids = _check_ids(ids)
    pad_id = check_int("pad_id", pad_id)
    structural = attention_mask(kind, ids.shape[1], n_prefix=n_prefix, device=ids.device)
    return structural[None] & (ids != pad_id)[:, None, :]


def mask_tokens(ids: torch.Tensor, *, mask_id: int = MASK, vocab_size: int, special_mask: torch.Tensor | None = None,
                p: float = 0.15, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: ``(inputs, labels)`` for a masked-LM step on ``ids`` (batch, seq).

    Each position not in ``special_mask`` (bool like ``ids``; default: ``[PAD]``, ``[BOS]`` and
    ``[MASK]``, so that ``[EOS]``, where a sentence ends, is learned too) is picked with
    probability ``p``; ``labels`` keeps the picked ids and is ``-100`` elsewhere. Of the picked
    positions 80 % become ``mask_id``, 10 % a random id in [0, vocab_size) and 10 % stay, so the
    model cannot learn that only ``[MASK]`` needs predicting.
    The random draws are those of Hugging Face's ``DataCollatorForLanguageModeling.torch_mask_tokens``
    in the same order, so the same ``generator`` state gives the same result.
    """
    ids = _check_ids(ids)
    vocab_size = check_int("vocab_size", vocab_size, low=1)
    mask_id = check_int("mask_id", mask_id, low=0, high=vocab_size - 1)
    p = check_float("p", p, low=0, high=1)
    if special_mask is not None:
        check_tensor("special_mask", special_mask)
        if special_mask.shape != ids.shape or special_mask.dtype != torch.bool:
            raise ValueError(f"special_mask must be a bool tensor of shape {tuple(ids.shape)}, got {special_mask.dtype}")
    return _mask_tokens(ids, mask_id, vocab_size, special_mask, p, generator)


def _mask_tokens(ids, mask_id: int, vocab_size: int, special_mask, p: float, generator):
    """:func:`mask_tokens` without the checks (a training step calls it)."""
    if special_mask is None:
        special_mask = (ids == PAD) | (ids == BOS) | (ids == MASK)
    inputs, labels = ids.clone(), ids.clone()
    where = dict(generator=generator)
    probability = torch.full(ids.shape, p).masked_fill_(special_mask.cpu(), 0.0)
    picked = torch.bernoulli(probability, **where).bool().to(ids.device)
    labels[~picked] = IGNORE_INDEX
    replaced = torch.bernoulli(torch.full(ids.shape, 0.8), **where).bool().to(ids.device) & picked
    inputs[replaced] = mask_id
    randomized = torch.bernoulli(torch.full(ids.shape, 0.5), **where).bool().to(ids.device) & picked & ~replaced
    random_ids = torch.randint(vocab_size, ids.shape, dtype=torch.long, **where).to(ids.device)
    inputs[randomized] = random_ids[randomized]
    return inputs, labels


def lm_loss(model, ids: torch.Tensor, objective: str, *, mask_prob: float = 0.15,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """The mean cross-entropy of one batch under ``objective`` ("causal" or "masked"; the masked
    objective picks each token with probability ``mask_prob``, :func:`mask_tokens`)."""
    _check_model(model)
    objective = check_choice("objective", objective, OBJECTIVES)
    ids = _check_ids(ids, model)
    mask_prob = check_float("mask_prob", mask_prob, low=0, high=1)
    return _lm_loss(model, ids, objective, mask_prob, generator)


def _lm_loss(model, ids: torch.Tensor, objective: str, mask_prob: float, generator) -> torch.Tensor:
    """:func:`lm_loss` without the checks: one training step's loss, no host sync."""
    if objective == "causal":
        inputs, targets = ids[:, :-1], ids[:, 1:].masked_fill(ids[:, 1:] == PAD, IGNORE_INDEX)
        logits = model(inputs, padded_mask("causal", inputs))
    else:
        inputs, targets = _mask_tokens(ids, MASK, model.vocab_size, None, mask_prob, generator)
        logits = model(inputs, padded_mask("bidirectional", ids))
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """Run the block with one intra-op thread on a CPU (restored afterwards); no change elsewhere."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class TrainLog:
    """``losses``: the loss of every step; ``seconds``: wall time of the whole loop."""

    losses: tuple[float, ...]
    seconds: float


def train_tiny_lm(model, ids: torch.Tensor, objective: str, *, steps: int = 300, batch_size: int = 64,
                  lr: float = 3e-3, mask_prob: float = 0.15, seed: int = 0, progress: bool = False) -> TrainLog:
    """Train ``model`` in place on the rows of ``ids`` with AdamW (weight decay 0.01), the learning
    rate warmed up linearly over the first 10 % of the steps, then decayed linearly to zero (BERT's
    schedule); batches drawn at random from a generator seeded with ``seed`` (the same run every
    time); ``mask_prob``: the masked objective's masking rate (BERT: 0.15). Returns the per-step
    losses; leaves the model in eval mode."""
    _check_model(model)
    objective = check_choice("objective", objective, OBJECTIVES)
    ids = _check_ids(ids, model)
    batch_size, steps, seed = check_batch_plan(batch_size, steps, seed)
    mask_prob = check_float("mask_prob", mask_prob, low=0, high=1, low_open=True)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: (t + 1) / warmup if t < warmup else max(steps - t, 0) / max(steps - warmup, 1))
    loop = range(steps)
    if progress:
        # tqdm is optional and only needed when a progress bar is asked for.
        from tqdm.auto import tqdm
        loop = tqdm(loop, desc=f"{objective} LM", leave=False)
    model.train()
    losses, start = [], time.perf_counter()
    # dropout draws from its own stream (the caller's is left alone); on a CPU, one thread: a tiny
    # model's ops are too small to split, and threads that wait for each other only cost time
    with isolated_rng(seed), _one_cpu_thread(ids.device):
        for _ in loop:
            rows = torch.randint(ids.shape[0], (min(batch_size, ids.shape[0]),), generator=generator)
            loss = _lm_loss(model, ids[rows.to(ids.device)], objective, mask_prob, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.detach())  # read once after the loop: no host sync per step
        losses = read_floats(losses)
    model.eval()
    return TrainLog(losses, time.perf_counter() - start)


@torch.no_grad()
def target_logprobs(model, ids: torch.Tensor) -> torch.Tensor:
    """log p(x_t | x_<t) under the causal mask, (batch, seq - 1): entry t-1 scores token t; 0 where
    token t is padding."""
    _check_model(model)
    ids = _check_ids(ids, model)
    logits = model(ids[:, :-1], padded_mask("causal", ids[:, :-1]))
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    return logp.masked_fill(ids[:, 1:] == PAD, 0.0)


def sentence_logprob(model, ids: torch.Tensor) -> torch.Tensor:
    """log p(sentence) = Σ_t log p(x_t | x_<t) over the words and ``[EOS]`` of each row, (batch,)."""
    return target_logprobs(model, ids).sum(dim=1)


def causal_perplexity(model, ids: torch.Tensor) -> float:
    """exp of the mean causal NLL per scored token (words and ``[EOS]``) over all rows."""
    total = target_logprobs(model, ids).sum().item()  # which checks model and ids
    return math.exp(-total / _n_scored(ids))


@torch.no_grad()
def pseudo_logprobs(model, ids: torch.Tensor, *, mask_id: int = MASK) -> torch.Tensor:
    """log p(x_i | x_-i), (batch, seq - 1) aligned like :func:`target_logprobs`: token i is replaced
    by ``mask_id`` (one copy of the row per scored token) and predicted from both sides; 0 on
    padding. Summing these is the pseudo-log-likelihood, which is *not* log p(x)."""
    _check_model(model)
    ids = _check_ids(ids, model)
    mask_id = check_int("mask_id", mask_id, low=0, high=model.vocab_size - 1)
    batch, n = ids.shape
    copies = ids.repeat_interleave(n - 1, dim=0)  # row b, copy i-1 hides token i
    hidden = torch.arange(1, n, device=ids.device).repeat(batch)
    rows = torch.arange(copies.shape[0], device=ids.device)
    truth = copies[rows, hidden]
    copies[rows, hidden] = mask_id
    logits = model(copies, padded_mask("bidirectional", copies))[rows, hidden]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, truth[:, None])[:, 0].view(batch, n - 1)
    return logp.masked_fill(ids[:, 1:] == PAD, 0.0)


def pseudo_perplexity(model, ids: torch.Tensor, *, mask_id: int = MASK) -> float:
    """exp of the mean -log p(x_i | x_-i) over the words and ``[EOS]`` of every row."""
    total = pseudo_logprobs(model, ids, mask_id=mask_id).sum().item()  # which checks model and ids
    return math.exp(-total / _n_scored(ids))


_MAX_SAMPLES = 100_000  # sequences sampled in one batch by sample_sentences


@torch.no_grad()
def sample_sentences(model, n: int, *, max_len: int = 16, temperature: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Generate ``n`` sequences left to right from ``[BOS]``, sampling each next token from
    softmax(logits / temperature); a row stops at ``[EOS]`` (later positions are ``[PAD]``).
    Returns (n, <= max_len) ids including the ``[BOS]``."""
    _check_model(model)
    n = check_int("n", n, low=1, high=_MAX_SAMPLES)
    max_len = check_int("max_len", max_len, low=2, high=model.max_len)
    temperature = check_float("temperature", temperature, low=0, low_open=True)
    device = model_device(model)
    ids = torch.full((n, 1), BOS, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    while ids.shape[1] < max_len and not bool(done.all()):
        logits = model(ids, padded_mask("causal", ids))[:, -1].float() / temperature
        nxt = torch.multinomial(torch.softmax(logits, dim=-1).cpu(), 1, generator=generator)[:, 0].to(device)
        nxt = nxt.masked_fill(done, PAD)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        done |= nxt == EOS
    return ids


@torch.no_grad()
def fill_blank(model, ids: torch.Tensor, position: int, *, method: str, candidates: list[int]) -> torch.Tensor:
    """The model's guess for the token at ``position`` of every row, among ``candidates`` (ids), (batch,).

    ``method``: ``"masked"`` (a masked LM: hide the token, predict it from both sides),
    ``"left"`` (a causal LM's next-token guess from the tokens left of the blank only) or
    ``"rescore"`` (a causal LM scoring the whole sentence once per candidate and keeping the most
    probable: it uses the right side too, at ``len(candidates)`` times the cost).
    """
    _check_model(model)
    ids = _check_ids(ids, model)
    method = check_choice("method", method, FILL_METHODS)
    position = check_int("position", position, low=1, high=ids.shape[1] - 1)
    if isinstance(candidates, (str, bytes)) or not hasattr(candidates, "__iter__"):
        raise TypeError(f"candidates must be a list of token ids, got {type(candidates).__name__}")
    candidates = candidates.tolist() if isinstance(candidates, torch.Tensor) else list(candidates)
    if not candidates:
        raise ValueError("candidates must be a non-empty list of token ids")
    candidates = [check_int(f"candidates[{i}]", c, low=0, high=model.vocab_size - 1) for i, c in enumerate(candidates)]
    cands = torch.as_tensor(candidates, dtype=torch.long, device=ids.device)
    if method == "masked":
        hidden = ids.clone()
        hidden[:, position] = MASK
        logits = model(hidden, padded_mask("bidirectional", hidden))[:, position]
        return cands[logits[:, cands].argmax(dim=-1)]
    if method == "left":
        left = ids[:, :position]
        logits = model(left, padded_mask("causal", left))[:, -1]
        return cands[logits[:, cands].argmax(dim=-1)]
    filled = ids.repeat_interleave(len(cands), dim=0)  # row b, copy c puts candidate c in the blank
    filled[:, position] = cands.repeat(ids.shape[0])
    scores = sentence_logprob(model, filled).view(ids.shape[0], len(cands))
    return cands[scores.argmax(dim=-1)]


_MAX_PAIR_VOCAB = 256  # pair_total's batch: 65,536 rows of the sentence at most


@torch.no_grad()
def pair_total(model, ids: torch.Tensor, position: int, *, objective: str) -> float:
    """Σ over every pair (a, b) of tokens at ``position`` and ``position + 1`` of the product of the
    model's two conditionals there, in the sentence ``ids`` (1, seq) with the rest held fixed.

    ``"causal"``: Σ_a Σ_b p(a | x_<i) p(b | x_<i, a) = 1 exactly (the chain rule: these
    conditionals define a distribution). ``"masked"``: Σ_a Σ_b p(a | x_-i with b) p(b | x_-(i+1)
    with a): nothing makes this 1, so the product of masked-LM conditionals is no probability.
    """
    _check_model(model)
    if model.vocab_size > _MAX_PAIR_VOCAB:
        raise ValueError(f"model.vocab_size must be at most {_MAX_PAIR_VOCAB} (pair_total), got {model.vocab_size}")
    ids = _check_ids(ids, model)
    if ids.shape[0] != 1:
        raise ValueError(f"ids must hold one sentence, shape (1, seq), got {tuple(ids.shape)}")
    objective = check_choice("objective", objective, OBJECTIVES)
    i = check_int("position", position, low=1, high=ids.shape[1] - 2)
    V = model.vocab_size
    a, b = torch.meshgrid(torch.arange(V), torch.arange(V), indexing="ij")
    grid = ids.repeat(V * V, 1)  # every (a, b) pair written into positions i, i + 1
    grid[:, i], grid[:, i + 1] = a.flatten().to(ids.device), b.flatten().to(ids.device)
    rows = torch.arange(V * V, device=ids.device)
    if objective == "causal":
        logp = torch.log_softmax(model(grid, padded_mask("causal", grid))[:, i - 1:i + 1].double(), dim=-1)
        total = logp[rows, 0, grid[:, i]] + logp[rows, 1, grid[:, i + 1]]
    else:
        total = torch.zeros(V * V, dtype=torch.float64, device=ids.device)
        for j in (i, i + 1):
            hidden = grid.clone()
            hidden[:, j] = MASK
            logp = torch.log_softmax(model(hidden, padded_mask("bidirectional", hidden))[:, j].double(), dim=-1)
            total += logp[rows, grid[:, j]]
    return total.exp().sum().item()

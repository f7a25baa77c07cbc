"""Text classification with a pretrained LM, two ways: a new head per task, or no head at all.

* **Linear probe** (a new head on frozen features: the feature-based variant of BERT's recipe, which
  fine-tunes the whole encoder together with the head): run the frozen model, average its
  hidden states over the tokens of the text (:func:`hidden_features`, (N, d)), and train a new
  linear layer on top (:func:`train_probe`): multinomial logistic regression with an L2 penalty,

      min_{W, b}  (1/N) Σ_n -log softmax(W z_n + b)[y_n]  +  (λ/2) ‖W‖²,   z = (h - mean) / std,

  solved to convergence with L-BFGS. Each task needs labelled data and its own head; the same
  objective as scikit-learn's ``LogisticRegression(C=1/(λN))`` (tests hold the two together).
* **Prompting** (the GPT recipe): no head, no training. Write the task into the text and read the
  next-token logits of one *label word* per class ("positive", "negative") at the end of the
  prompt (:func:`prompt_classify`; :func:`next_token_logprobs` gives the whole next-token
  distribution, to compare label words). One model serves every task, and a task costs only a prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._checks import (check_choice, check_finite_tensor, check_float, check_int, check_module,
                       check_same_length, check_tensor)
from .._torch import model_device
from ..modelinfo import cache_keyword, output_cache

__all__ = ["POOLINGS", "hidden_features", "Probe", "train_probe", "label_token_ids", "PromptResult",
           "shared_prefix_length", "next_token_logprobs", "prompt_classify"]

POOLINGS = ("mean", "last")


def _check_batched(model, batch_size) -> int:
    """What both batched passes over a model take: a ``model`` (an ``nn.Module``) and ``batch_size`` >= 1."""
    check_module("model", model)
    return check_int("batch_size", batch_size, low=1)


def _batches(texts: list[str], batch_size: int, name: str = "texts"):
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise ValueError(f"{name} must be a non-empty list of non-empty strings")
    for start in range(0, len(texts), batch_size):
        yield texts[start:start + batch_size]


def _encode(tokenizer, texts: list[str], device) -> dict[str, torch.Tensor]:
    """Right-padded ids and attention mask; the last real token of row b sits at mask[b].sum() - 1."""
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right")
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


@torch.no_grad()
def hidden_features(model, tokenizer, texts: list[str], *, layer: int = -1, pool: str = "mean",
                    batch_size: int = 16) -> torch.Tensor:
    """Frozen features (N, d): the hidden states of ``layer`` (an index into the model's
    ``hidden_states``: 0 is the embedding output, -1 the last layer), averaged over each text's
    tokens (``pool="mean"``) or taken at its last token (``"last"``, the one position of a causal
    model that has read the whole text). Float32, on the CPU."""
    batch_size = _check_batched(model, batch_size)
    layer = check_int("layer", layer)
    pool = check_choice("pool", pool, POOLINGS)
    out = []
    for chunk in _batches(texts, batch_size):
        enc = _encode(tokenizer, chunk, model_device(model))
        states = model(**enc, output_hidden_states=True).hidden_states
        if not -len(states) <= layer < len(states):
            raise ValueError(f"layer must be an int in [{-len(states)}, {len(states) - 1}], got {layer}")
        h, mask = states[layer].float(), enc["attention_mask"]
        if pool == "mean":
            out.append((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
        else:
            out.append(h[torch.arange(len(chunk)), mask.sum(1) - 1])
    return torch.cat(out).cpu()


@dataclass(frozen=True)
class Probe:
    """A trained linear head: ``logits = ((x - mean) / std) @ weight.T + bias`` over ``labels``."""

    weight: torch.Tensor  # (n_classes, d)
    bias: torch.Tensor  # (n_classes,)
    mean: torch.Tensor  # (d,)
    std: torch.Tensor  # (d,)
    labels: tuple[str, ...]

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(N, n_classes) for ``features`` (N, d)."""
        check_tensor("features", features, dim=2, floating=True)
        if features.shape[1] != self.mean.numel():
            raise ValueError(f"features must have the probe's {self.mean.numel()} columns, got {tuple(features.shape)}")
        return ((features.float() - self.mean) / self.std) @ self.weight.T + self.bias

    def predict(self, features: torch.Tensor) -> list[str]:
        """The label of the largest logit for every row of ``features``."""
        return [self.labels[i] for i in self.logits(features).argmax(dim=1).tolist()]


def train_probe(features: torch.Tensor, labels: list[str], *, l2: float = 1e-2, max_iter: int = 500) -> Probe:
    """Fit a linear head on frozen ``features`` (N, d) for string ``labels`` (N,): standardise each
    feature with the training mean and std, then minimise mean cross-entropy + (l2/2)‖W‖² (the bias
    is not penalised) with L-BFGS, in float64, to a gradient below 1e-9 or ``max_iter`` steps."""
    check_tensor("features", features, dim=2, floating=True, min_numel=1)
    check_finite_tensor("features", features)
    check_same_length(features=features, labels=labels)
    l2 = check_float("l2", l2, low=0, low_open=True)
    max_iter = check_int("max_iter", max_iter, low=1)
    classes = tuple(sorted(set(labels)))
    if len(classes) < 2:
        raise ValueError(f"labels must hold at least two classes, got {list(classes)}")
    x = features.detach().double().cpu()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    z = (x - mean) / std
    y = torch.tensor([classes.index(label) for label in labels])
    W = torch.zeros(len(classes), x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ W.T + b, y) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return Probe(W.detach().float(), b.detach().float(), mean.float(), std.float(), classes)


def label_token_ids(tokenizer, words: dict[str, str]) -> dict[str, int]:
    """label -> the id of its label word; each word (e.g. ``" positive"``, leading space included)
    must be exactly one token of ``tokenizer``, so one next-token logit scores it."""
    if not isinstance(words, dict):
        raise TypeError(f"words must be a dict label -> label word, got {type(words).__name__}")
    if len(words) < 2:
        raise ValueError(f"words must hold at least two labels (label -> label word), got {words!r}")
    ids = {}
    for label, word in words.items():
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"words: label word {word!r} for {label!r} is {len(encoded)} tokens; pick a one-token word")
        ids[label] = encoded[0]
    return ids


@dataclass(frozen=True)
class PromptResult:
    """``predictions``: the label of the largest label-word score per prompt; ``logits`` (N,
    n_classes): the next-token log-probabilities of the label words, columns in the order of
    ``labels`` (log-softmax over the whole vocabulary: their ``exp`` sums to the mass on the labels)."""

    predictions: list[str]
    logits: torch.Tensor
    labels: tuple[str, ...]


def shared_prefix_length(rows: list[list[int]]) -> int:
    """The number of leading tokens all ``rows`` share, leaving every row at least one token of its own."""
    if isinstance(rows, (str, bytes)) or not hasattr(rows, "__len__") \
            or not all(hasattr(r, "__len__") and not isinstance(r, (str, bytes)) for r in rows):
        raise TypeError(f"rows must be a list of token lists, got {rows!r:.80}")
    if not rows or not all(len(r) for r in rows):
        raise ValueError("rows must be a non-empty list of non-empty token lists")
    n = min(len(r) for r in rows) - 1
    for i in range(n):
        if any(r[i] != rows[0][i] for r in rows):
            return i
    return n


def _last_logits(model, rows: list[list[int]], prefix: int, pad_id: int) -> torch.Tensor:
    """Next-token logits (batch, vocab) at the last token of each row; the ``prefix`` tokens every row
    shares run once (batch 1) and their keys and values are repeated for the batch (a shared KV cache)."""
    device = model_device(model)
    lengths = torch.tensor([len(r) - prefix for r in rows], device=device)
    suffix = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long, device=device)
    for b, r in enumerate(rows):
        suffix[b, :len(r) - prefix] = torch.tensor(r[prefix:], device=device)
    mask = (torch.arange(suffix.shape[1], device=device)[None] < lengths[:, None]).long()  # right padding
    if prefix == 0:
        logits = model(input_ids=suffix, attention_mask=mask).logits
    else:
        out = model(input_ids=torch.tensor([rows[0][:prefix]], device=device), use_cache=True)
        cache = output_cache(out)
        cache.batch_repeat_interleave(len(rows))
        full_mask = torch.cat([torch.ones(len(rows), prefix, dtype=torch.long, device=device), mask], dim=1)
        logits = model(input_ids=suffix, attention_mask=full_mask, **{cache_keyword(model): cache}).logits
    return logits[torch.arange(len(rows), device=device), lengths - 1]


@torch.no_grad()
def next_token_logprobs(model, tokenizer, prompts: list[str], *, batch_size: int = 16,
                        share_prefix: bool = True) -> torch.Tensor:
    """log p(next token | prompt) over the whole vocabulary for every prompt: (N, vocab), float32, CPU.

    Prompts built from one template share their first tokens (system prompt, instruction). With
    ``share_prefix`` those run once per batch and their KV cache serves every prompt (prompt
    caching): the same numbers, a fraction of the compute.
    """
    batch_size = _check_batched(model, batch_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for chunk in _batches(prompts, batch_size, "prompts"):
        rows = tokenizer(chunk)["input_ids"]
        prefix = shared_prefix_length(rows) if share_prefix else 0
        out.append(torch.log_softmax(_last_logits(model, rows, prefix, pad_id).float(), dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def prompt_classify(model, tokenizer, prompts: list[str], words: dict[str, str], *, batch_size: int = 16,
                    share_prefix: bool = True) -> PromptResult:
    """Classify with no head: run each prompt (a string ending where the answer word goes) and
    compare the next-token log-probabilities of the label words ``words`` (label -> one-token word;
    after a chat template's assistant turn the answer starts a line: no leading space).

    ``logits`` holds those log-probabilities (the same order as the logits, and comparable across
    label-word choices: ``logits.exp().sum(1)`` is the probability mass on the label words).
    """
    ids = label_token_ids(tokenizer, words)  # model, prompts, batch_size: next_token_logprobs checks them
    labels, columns = tuple(ids), list(ids.values())
    scores = next_token_logprobs(model, tokenizer, prompts, batch_size=batch_size, share_prefix=share_prefix)[:, columns]
    return PromptResult([labels[i] for i in scores.argmax(dim=1).tolist()], scores, labels)

"""Perplexity of a causal language model, with a sliding window for texts longer than its context.

For a text of tokens x_0 .. x_{n-1}, the model scores every token after the first:

    NLL_i = -log p(x_i | context_i)            for i = 1 .. n-1   (in nats)
    PPL   = exp( (1 / (n-1)) * sum_i NLL_i )   the exponentiated mean NLL per token

A PPL of P means the model is, on average, as unsure as a uniform choice among P tokens.

When the text is longer than the model's context, it is read in windows of ``max_length`` tokens
that start at 0, stride, 2*stride, ... (the scheme of the Hugging Face perplexity guide). A
forward pass over the window starting at ``b`` predicts tokens b+1 .. b+max_length; each token is
scored exactly once, by the first window that predicts it, with the tokens of that window before
it as context (between ``max_length - stride + 1`` and ``max_length`` tokens once the first window
is past). A smaller stride gives each token more context (lower PPL) at the price of more forward
tokens: about ``n * max_length / stride``.

Differences from the guide's loop. Each window's last logit is used too (it predicts the token after
the window), so a window of ``max_length`` input tokens makes ``max_length`` predictions where the
guide's makes ``max_length - 1``: llmlab with ``max_length = L - 1`` scores exactly as the guide with
L, and its guaranteed context, ``max_length - stride + 1``, is one token more than the guide's. Older versions of the guide averaged the windows' mean losses;
the current one (since huggingface/transformers#34387, late 2024) weights each window's loss by its
token count, but its ``num_valid_tokens - batch_size`` counts one token too few for every window
after the first when stride < max_length, and with stride == max_length the label shift leaves
each later window's first token unscored. Here every token 1 .. n-1 is scored exactly once and the
mean is taken over the scored tokens themselves, so every token weighs the same.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch

from ._checks import check_int
from ._torch import model_device
from .modelinfo import accepts_logits_to_keep, check_token_ids, context_size

__all__ = [
    "PerplexityResult",
    "Window",
    "sliding_windows",
    "forward_tokens",
    "token_nlls",
    "perplexity",
    "bits_per_byte",
    "byte_ngram_nlls",
]


@dataclass(frozen=True)
class PerplexityResult:
    """``ppl = exp(mean_nll)``; ``mean_nll`` in nats per token over ``n_tokens`` scored tokens."""

    ppl: float
    mean_nll: float
    n_tokens: int


@dataclass(frozen=True)
class Window:
    """One forward pass: model input ``ids[begin:end]``; it scores targets ``first_target .. end``.

    The logit at input position j predicts token ``begin + j + 1``, so the window's last input
    token predicts the last target ``end`` and the scored logits are the last
    ``n_targets = end - first_target + 1`` positions of the window.
    """

    begin: int
    end: int
    first_target: int

    @property
    def length(self) -> int:
        return self.end - self.begin

    @property
    def n_targets(self) -> int:
        return self.end - self.first_target + 1


def sliding_windows(seq_len: int, *, max_length: int, stride: int) -> list[Window]:
    """The windows that score tokens 1 .. seq_len-1 of a sequence, each exactly once.

    Window k starts at ``b = k * stride``, feeds ``ids[b : min(b + max_length, seq_len - 1)]`` and
    scores the targets it predicts that no earlier window predicted. The last window is the first
    one that reaches the last token.
    """
    check_int("seq_len", seq_len, low=2)
    check_int("max_length", max_length, low=1)
    check_int("stride", stride, low=1, high=max_length)
    windows = []
    last_scored = 0  # index of the last token already scored (token 0 is never scored)
    begin = 0
    while last_scored < seq_len - 1:
        end = min(begin + max_length, seq_len - 1)  # window input ids[begin:end] predicts up to `end`
        windows.append(Window(begin=begin, end=end, first_target=last_scored + 1))
        last_scored = end
        begin += stride
    return windows


def forward_tokens(seq_len: int, *, max_length: int, stride: int) -> int:
    """Compute cost of :func:`token_nlls`: the number of tokens fed through the model in total."""
    return sum(w.length for w in sliding_windows(seq_len, max_length=max_length, stride=stride))


def _as_ids(input_ids) -> torch.Tensor:
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.dim() == 2 and input_ids.shape[0] == 1:
        input_ids = input_ids[0]
    if input_ids.dim() != 1:
        raise ValueError(f"input_ids must have shape (seq,) or (1, seq), got {tuple(input_ids.shape)}")
    if input_ids.numel() < 2:
        raise ValueError(f"input_ids must hold at least 2 tokens (the first one is never scored), got {input_ids.numel()}")
    return input_ids.long()


def _check_window(model, max_length, stride) -> tuple[int, int]:
    limit = context_size(model)
    if max_length is None:
        if limit is None:
            raise ValueError("max_length is required: the model's config does not say its context size")
        max_length = limit
    check_int("max_length", max_length, low=1, high=limit)
    return max_length, max_length if stride is None else stride  # stride: sliding_windows checks it


def token_nlls(model, input_ids: torch.Tensor, *, max_length: int, stride: int, batch_size: int = 1) -> torch.Tensor:
    """Negative log-likelihood (nats) of every scored token, in order: tokens 1 .. n-1.

    ``input_ids``: LongTensor of shape ``(seq,)`` or ``(1, seq)``. Returns a float32 tensor of
    shape ``(seq - 1,)`` on the device of ``input_ids``, ``nll[i-1] = -log p(x_i | x_{b..i-1})`` with ``b``
    the start of the first window (see :func:`sliding_windows`) that predicts ``x_i``.
    Up to ``batch_size`` windows of the same shape go through the model in one forward pass (the
    first and the last window usually run on their own), with the same result as one at a time. The model should be
    in eval mode (dropout off); gradients are not tracked.
    """
    max_length, stride = _check_window(model, max_length, stride)
    check_int("batch_size", batch_size, low=1)
    ids = check_token_ids(model, _as_ids(input_ids))
    ids = ids.to(model_device(model))
    windows = sliding_windows(ids.numel(), max_length=max_length, stride=stride)
    keep_arg = accepts_logits_to_keep(model)

    # Consecutive windows of the same shape (all but the first and the last, usually) share a
    # forward pass: no padding, so a batch gives the same numbers as one window at a time.
    groups: list[list[Window]] = []
    for w in windows:
        g = groups[-1] if groups else None
        if g and (g[0].length, g[0].n_targets) == (w.length, w.n_targets) and len(g) < batch_size:
            g.append(w)
        else:
            groups.append([w])

    nlls = []
    with torch.inference_mode():
        for group in groups:
            x = torch.stack([ids[w.begin : w.end] for w in group])  # (B, length)
            n_targets = group[0].n_targets
            # Only the last n_targets positions predict new targets: skip the LM head elsewhere.
            out = model(input_ids=x, logits_to_keep=n_targets) if keep_arg else model(input_ids=x)
            logits = (out.logits if hasattr(out, "logits") else out[0])[:, -n_targets:]  # (B, n_targets, vocab)
            targets = torch.stack([ids[w.first_target : w.end + 1] for w in group])  # (B, n_targets)
            nlls.extend(_nll(logits, targets))
    return torch.cat(nlls).to(input_ids.device)


def _nll(logits: torch.Tensor, targets: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """-log softmax(logits)[target] = logsumexp(logits) - logits[target], in float32, in chunks of
    positions so that a long window never holds a second (positions, vocab) tensor in memory.
    ``logits``: (B, T, vocab); ``targets``: (B, T). Returns (B, T)."""
    out = []
    for i in range(0, logits.shape[1], chunk):
        z = logits[:, i : i + chunk].float()
        out.append(torch.logsumexp(z, dim=-1) - z.gather(-1, targets[:, i : i + chunk, None])[..., 0])
    return torch.cat(out, dim=1)


def perplexity(model, input_ids: torch.Tensor, *, max_length: int | None = None, stride: int | None = None,
               batch_size: int = 1) -> PerplexityResult:
    """Perplexity ``exp(mean NLL)`` of ``input_ids`` (shape ``(seq,)`` or ``(1, seq)``) under ``model``.

    ``max_length`` (window length in tokens) defaults to the model's context size, ``stride`` to
    ``max_length`` (non-overlapping windows). ``batch_size`` > 1 runs several windows per forward
    pass, same result. Raises ValueError for stride < 1, stride > max_length, max_length larger
    than the model's context, or fewer than 2 tokens.
    """
    nll = token_nlls(model, input_ids, max_length=max_length, stride=stride, batch_size=batch_size)
    mean_nll = nll.double().mean().item()
    return PerplexityResult(ppl=math.exp(mean_nll), mean_nll=mean_nll, n_tokens=nll.numel())


def bits_per_byte(result: PerplexityResult, text: str | bytes | int) -> float:
    """Total information of the scored tokens per UTF-8 byte of ``text``: a tokenizer-free unit.

    bpb = n_tokens * mean_nll / (ln 2 * n_bytes). ``text`` may be a str, bytes, or a byte count.
    It must be exactly the text the *scored* tokens spell: the first token of a sequence is never
    scored, so prepend a BOS/separator token before the text (or leave the first token's bytes out).
    """
    if not isinstance(result, PerplexityResult):
        raise TypeError(f"result must be a PerplexityResult, got {type(result).__name__}")
    if isinstance(text, str):
        n_bytes = len(text.encode("utf-8"))
    elif isinstance(text, (bytes, bytearray)):
        n_bytes = len(text)
    elif isinstance(text, int) and not isinstance(text, bool):
        n_bytes = text
    else:
        raise TypeError(f"text must be a str, bytes or a byte count, got {type(text).__name__}")
    if n_bytes < 1:
        raise ValueError(f"text must hold at least 1 byte, got {n_bytes}")
    return result.n_tokens * result.mean_nll / (math.log(2) * n_bytes)


def byte_ngram_nlls(train: bytes, text: bytes, *, order: int = 5) -> torch.Tensor:
    """NLL (nats) of every byte of ``text`` under a byte-level n-gram model counted on ``train``.

    A language model whose vocabulary is the 256 byte values, for comparing against a subword LM
    (the tokenizer trap). Witten-Bell interpolation, from the empty context up to ``order - 1``
    context bytes, over a uniform 1/256 base:

        P(x | h) = (c(h x) + u(h) * P(x | h')) / (c(h) + u(h)),

    with h' = h minus its oldest byte, c the counts in ``train`` and u(h) the number of distinct
    bytes seen after h. It sums to 1 over the 256 bytes for every h. Returns shape ``(len(text),)``.
    """
    if not isinstance(train, (bytes, bytearray)) or not isinstance(text, (bytes, bytearray)):
        raise TypeError("train and text must be bytes (use str.encode('utf-8'))")
    check_int("order", order, low=1)
    if len(train) < order:
        raise ValueError(f"train must hold at least order={order} bytes, got {len(train)}")
    train, text = bytes(train), bytes(text)
    # counts[k][h + x] for contexts h of k bytes; then c(h) and u(h) per context.
    counts = [Counter(train[i - k : i + 1] for i in range(k, len(train))) for k in range(order)]
    c_h, u_h = [Counter() for _ in range(order)], [Counter() for _ in range(order)]
    for k in range(order):
        for key, c in counts[k].items():
            c_h[k][key[:-1]] += c
            u_h[k][key[:-1]] += 1
    nll = []
    for i in range(len(text)):
        p = 1.0 / 256
        for k in range(min(order - 1, i) + 1):  # context lengths 0 .. order-1, short to long
            h = text[i - k : i]
            if c_h[k][h] == 0:  # unseen context: so are all longer ones
                break
            p = (counts[k][h + text[i : i + 1]] + u_h[k][h] * p) / (c_h[k][h] + u_h[k][h])
        nll.append(-math.log(p))
    return torch.tensor(nll, dtype=torch.float64)

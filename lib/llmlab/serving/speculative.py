"""Speculative decoding: a cheap draft proposes γ tokens, the target checks them all in one forward pass.

Leviathan, Kalman & Matias (ICML 2023) and Chen et al. (2023). Decoding one token costs a full
forward of the target, and on a memory-bound machine a forward over γ + 1 tokens costs little more
than over one. So a draft (a smaller model, or n-grams looked up in the prompt) guesses
x_1..x_γ, the target computes its distributions p_1..p_{γ+1} at those positions in one pass, and:

* greedy: keep the guesses while x_i = argmax p_i, then append argmax p at the first mismatch
  (or p_{γ+1} when all match) — exactly the tokens greedy decoding gives;
* sampling: accept x_i with probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection draw
  from norm(max(0, p_i - q_i)); when all are accepted draw from p_{γ+1}. The output is then
  distributed *exactly* as the target's own samples (:mod:`llmlab.serving.exact` enumerates it).

Every round yields between 1 and γ + 1 tokens for one target forward; when each draft token is
accepted independently with probability α the expected number is (1 - α^(γ+1)) / (1 - α). That α
is per *tested* position (``SpeculativeResult.alpha``), not accepted / drafted (vLLM's "draft
acceptance rate", ``SpeculativeResult.draft_acceptance_rate``), which counts untested tokens too. Prompt lookup (Saxena 2023; Hugging Face's
``prompt_lookup_num_tokens``) drafts by finding the last n-gram earlier in the text and proposing
what followed it there: free, and good when the answer copies the prompt (extraction, editing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_eos_token_id, check_float, check_int, check_module, check_prompt_ids
from .._torch import model_device
from ..modelinfo import cache_keyword, check_fits_model, output_cache, vocab_size
from .rule import verify_round

__all__ = ["speculative_generate", "SpeculativeResult", "expected_tokens_per_forward",
           "early_exit_draft", "PROMPT_LOOKUP"]

#: The ``draft`` value that selects prompt lookup instead of a draft model.
PROMPT_LOOKUP = "prompt_lookup"


@dataclass(frozen=True)
class SpeculativeResult:
    """``sequences`` (1, prompt_len + n_new) as :func:`llmlab.decoding.greedy` returns them, and the counts
    of the verification rounds: ``rounds`` (target forwards after the prefill), ``drafted`` and
    ``accepted`` draft tokens, ``rejections`` (rounds in which the target rejected a draft token),
    ``new_tokens`` in all (the prefill's first token included), ``accepted_per_round`` (one count per round)."""

    sequences: torch.Tensor
    rounds: int
    drafted: int
    accepted: int
    new_tokens: int
    accepted_per_round: tuple[int, ...]
    rejections: int

    @property
    def draft_acceptance_rate(self) -> float:
        """accepted / drafted, vLLM's "draft acceptance rate" (NaN when nothing was drafted). For γ > 1 it is
        *not* the α of :func:`expected_tokens_per_forward`: the draft tokens after the first rejection of a
        round are never tested, yet they count in the denominator, so it is biased low."""
        return self.accepted / self.drafted if self.drafted else float("nan")

    @property
    def alpha(self) -> float:
        """The per-position acceptance probability, accepted / (accepted + rejections): each tested draft
        token is either accepted or the round's one rejection. The estimate of the α in
        (1 - α^(γ+1)) / (1 - α) (NaN when no draft token was tested)."""
        tested = self.accepted + self.rejections
        return self.accepted / tested if tested else float("nan")

    @property
    def tokens_per_round(self) -> float:
        """New tokens per target forward in the verification rounds (the prefill's token left out)."""
        return (self.new_tokens - 1) / self.rounds if self.rounds else 0.0


def expected_tokens_per_forward(alpha: float, gamma: int) -> float:
    """(1 - α^(γ+1)) / (1 - α): tokens per target forward when each draft token is accepted independently
    with probability α (Leviathan et al. 2023, eq. 1); γ + 1 at α = 1."""
    alpha = check_float("alpha", alpha, low=0.0, high=1.0)
    gamma = check_int("gamma", gamma, low=0)
    return float(gamma + 1) if alpha == 1.0 else (1 - alpha ** (gamma + 1)) / (1 - alpha)


def _lookup(tokens: list[int], num_tokens: int, max_ngram_size: int, eos_token_id: int | None) -> list[int]:
    """Up to ``num_tokens`` draft tokens: what followed the last n-gram of ``tokens`` where it occurred before.

    Hugging Face's ``PromptLookupCandidateGenerator``: for n = ``max_ngram_size`` down to 1, the
    first earlier occurrence (left to right) of the last n tokens that has a continuation wins;
    the candidates stop before an EOS. ``[]`` when nothing matches (or the continuation starts with EOS).
    """
    length = len(tokens)
    for n in range(min(max_ngram_size, length - 1), 0, -1):
        tail = tokens[-n:]
        for start in range(length - n):
            if tokens[start:start + n] == tail and start + n < length:
                chosen = tokens[start + n: min(start + n + num_tokens, length)]
                if eos_token_id is not None and eos_token_id in chosen:
                    chosen = chosen[: chosen.index(eos_token_id)]  # may leave nothing: HF then drafts nothing
                return chosen
    return []


class _Model:
    """A causal LM with its KV cache: ``logits(tokens)`` runs the tokens after what is cached and returns
    float32 logits for each of them; ``rollback(n)`` keeps the first n cached tokens."""

    def __init__(self, model):
        self.model, self.cache, self.cached = model, None, 0
        self.kw, self.device = cache_keyword(model), model_device(model)

    def logits(self, tokens: list[int]) -> torch.Tensor:
        ids = torch.tensor([tokens], device=self.device)
        out = self.model(input_ids=ids, use_cache=True, **{self.kw: self.cache})
        self.cache = output_cache(out)
        self.cached += len(tokens)
        return out.logits[0].to(torch.float32)  # (len(tokens), vocab)

    def rollback(self, n: int) -> None:
        if n < self.cached:
            self.cache.crop(n - self.cached)  # a negative count removes that many tokens (transformers 4 and 5)
            self.cached = n


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T), shifted by the maximum first so that a small T cannot overflow."""
    return F.softmax((logits - logits.amax(dim=-1, keepdim=True)) / temperature, dim=-1)


class _EarlyExit(nn.Module):
    """The target's first ``num_layers`` decoder layers, its final norm and LM head: a draft that shares every
    weight with the target (self-speculative decoding, as LayerSkip and Hugging Face's ``assistant_early_exit``)."""

    def __init__(self, model, num_layers: int):
        super().__init__()
        self.target, self.num_layers = model, num_layers
        self.config = model.config

    def get_input_embeddings(self):
        return self.target.get_input_embeddings()

    def forward(self, input_ids, cache=None, use_cache=True, **kwargs):
        # Hugging Face's decoders run layers[: config.num_hidden_layers]: shorten it for this call only,
        # as EarlyExitCandidateGenerator does.
        base = getattr(self.target, self.target.base_model_prefix)
        full = base.config.num_hidden_layers
        base.config.num_hidden_layers = self.num_layers
        try:
            return self.target(input_ids=input_ids, use_cache=use_cache, **{cache_keyword(self.target): cache}, **kwargs)
        finally:
            base.config.num_hidden_layers = full


def early_exit_draft(model, num_layers: int) -> nn.Module:
    """A draft made of ``model``'s first ``num_layers`` layers plus its final norm and LM head (no copy of any
    weight), for :func:`speculative_generate`; ``1 <= num_layers <`` the model's layers. Works for Hugging Face
    decoders that run ``layers[: config.num_hidden_layers]`` (Llama, SmolLM2, Mistral, Qwen2). A model not
    trained for early exit predicts poorly from its middle layers, so expect a low acceptance rate."""
    check_module("model", model)
    config = getattr(model, "config", None)
    total = getattr(config, "num_hidden_layers", None)
    if not isinstance(total, int) or getattr(model, "base_model_prefix", None) is None:
        raise ValueError(f"model must be a Hugging Face decoder with config.num_hidden_layers, got {type(model).__name__}")
    num_layers = check_int("num_layers", num_layers, low=1, high=total - 1)
    return _EarlyExit(model, num_layers)


class _Drafter:
    """Proposes up to γ tokens after a sequence: from a draft model (with its q), or by prompt lookup (q one-hot)."""

    def __init__(self, draft, eos_token_id):
        self.model = None if isinstance(draft, str) else _Model(draft)
        self.eos = eos_token_id
        self.fed: list[int] = []  # the tokens in the draft model's cache

    def propose(self, seq: list[int], gamma: int, sample: bool, temperature: float, generator, vocab: int):
        if self.model is None:
            tokens = _lookup(seq, gamma, 2, self.eos)  # Hugging Face's default n-gram size
            q = F.one_hot(torch.tensor(tokens, dtype=torch.long), vocab).to(torch.float32) if sample and tokens else None
            return tokens, q
        # Bring the draft's cache up to date, then draft one token at a time.
        keep = min(_common_prefix(self.fed, seq), len(seq) - 1)  # at least one token to run
        self.model.rollback(keep)
        feed, self.fed = seq[keep:], list(seq)
        tokens, qs = [], []
        for i in range(gamma):
            logits = self.model.logits(feed)[-1]
            if sample:
                q = _probs(logits, temperature)
                token = int(torch.multinomial(q, 1, generator=generator))
                qs.append(q)
            else:
                token = int(logits.argmax())  # the draft's guess: one host read per drafted token
            tokens.append(token)
            if token == self.eos:
                break
            if i + 1 < gamma:
                feed = [token]
                self.fed.append(token)
        return tokens, (torch.stack(qs) if sample and qs else None)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _check_draft(model, draft, num_draft_tokens):
    if isinstance(draft, str):
        if draft != PROMPT_LOOKUP:
            raise ValueError(f"draft must be a model or {PROMPT_LOOKUP!r}, got {draft!r}")
    else:
        check_module("draft", draft)
        v_target, v_draft = vocab_size(model), vocab_size(draft)
        if v_target is not None and v_draft is not None and v_target != v_draft:
            raise ValueError(f"draft must share the target's vocabulary: the target has {v_target} token ids, "
                             f"the draft {v_draft}")
    return check_int("num_draft_tokens", num_draft_tokens, low=1, high=256)


@torch.no_grad()
def speculative_generate(model, input_ids: torch.Tensor, max_new_tokens: int, *, draft, num_draft_tokens: int = 4,
                         do_sample: bool = False, temperature: float = 1.0, generator: torch.Generator | None = None,
                         eos_token_id: int | None = None, return_stats: bool = False):
    """Speculative decoding of ``input_ids`` (1, prompt_len) with ``draft`` — a model with the target's
    vocabulary, or ``"prompt_lookup"`` — proposing ``num_draft_tokens`` (γ) tokens per round.

    ``do_sample=False``: token-identical to :func:`llmlab.decoding.greedy` (and to HF
    ``generate(assistant_model=...)`` / ``generate(prompt_lookup_num_tokens=...)``).
    ``do_sample=True``: samples from softmax(logits / ``temperature``) of the target, exactly, with
    the accept/reject rule of :func:`llmlab.serving.verify`, drawing from ``generator`` (the
    global RNG when None). Returns (1, prompt_len + n_new) token ids, or a
    :class:`SpeculativeResult` with the round counts when ``return_stats=True``.
    """
    check_prompt_ids("input_ids", input_ids)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=0)
    eos_token_id = check_eos_token_id(eos_token_id)
    gamma = _check_draft(model, draft, num_draft_tokens)
    if not isinstance(do_sample, bool) or not isinstance(return_stats, bool):
        raise TypeError(f"do_sample and return_stats must be True or False, got {do_sample!r} and {return_stats!r}")
    temperature = check_float("temperature", temperature, low=0.0, low_open=True)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    check_fits_model(model, input_ids, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id)
    if not isinstance(draft, str):
        check_fits_model(draft, input_ids, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id)

    seq = input_ids[0].tolist()
    prompt_len, vocab = len(seq), vocab_size(model)
    target, drafter = _Model(model), _Drafter(draft, eos_token_id)
    rounds, drafted, rejections, accepted_per_round = 0, 0, 0, []

    def choose(logits: torch.Tensor) -> int:
        if do_sample:
            return int(torch.multinomial(_probs(logits, temperature), 1, generator=generator))
        return int(logits.argmax())

    if max_new_tokens > 0:
        seq.append(choose(target.logits(seq)[-1]))  # the prefill gives the first new token
    while len(seq) - prompt_len < max_new_tokens and seq[-1] != eos_token_id:
        room = max_new_tokens - (len(seq) - prompt_len)
        tokens, q = drafter.propose(seq, min(gamma, room - 1), do_sample, temperature, generator, vocab) \
            if room > 1 else ([], None)
        logits = target.logits([seq[-1]] + tokens)  # (len(tokens) + 1, vocab): p_1 .. p_{γ+1} in one forward
        # The round's outcome decides what runs next: one host read per round (the accepted count).
        if do_sample and tokens:
            n, nxt = verify_round(_probs(logits, temperature), q.to(logits.device),
                                  torch.tensor(tokens, device=logits.device), generator)
        else:
            best = logits.argmax(dim=-1).tolist() if not do_sample else None
            n = _common_prefix(tokens, best) if best is not None else 0
            nxt = best[n] if best is not None else choose(logits[0])
        new = tokens[:n] + [nxt]
        if eos_token_id is not None and eos_token_id in new:
            new = new[: new.index(eos_token_id) + 1]
        seq += new[:room]
        target.rollback(len(seq) - 1)  # keep the K/V of accepted tokens only
        rounds += 1
        drafted += len(tokens)
        rejections += n < len(tokens)  # a draft token tested and refused (the rest of the round is untested)
        accepted_per_round.append(min(n, len(new)))  # an EOS among the drafts cuts the round short
    out = torch.tensor([seq], device=input_ids.device)
    if not return_stats:
        return out
    return SpeculativeResult(out, rounds, drafted, sum(accepted_per_round), len(seq) - prompt_len,
                             tuple(accepted_per_round), rejections)

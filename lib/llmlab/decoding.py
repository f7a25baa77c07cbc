"""Decoding: how a causal LM turns next-token distributions into text.

The model factorises a continuation as P(w_1..T | context) = prod_t P(w_t | w_<t, context). A
decoder picks tokens from these distributions one step at a time until EOS or a length limit:

* :func:`greedy` takes the argmax at each step;
* :func:`beam_search` keeps the ``num_beams`` best partial sequences by summed log-probability,
  ranking finished ones by ``sum log p / n_generated ** length_penalty``;
* :func:`sample` draws from softmax(logits / temperature) after :func:`top_k_filter` and
  :func:`top_p_filter` have removed the unlikely tail.

All of them feed the model one new token per step and reuse the keys and values of earlier
tokens (the KV cache), so a step costs O(context) attention instead of re-running the prefix;
:func:`greedy_without_cache` is the slow reference that re-runs it. Each decoder is
token-identical to Hugging Face ``model.generate`` with the matching settings (tests hold them
to it). :class:`StaticDecoder` is greedy decoding written for speed: a preallocated KV cache and
a plain-PyTorch decode step for the Llama family, captured once in a CUDA graph on a GPU.

Shapes: ``input_ids`` is ``(1, prompt_len)``; every decoder returns the full sequence
``(1, prompt_len + n_new)`` as a LongTensor, with ``n_new <= max_new_tokens`` (shorter when the
sequence ends with ``eos_token_id``).
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "greedy",
    "greedy_without_cache",
    "beam_search",
    "sample",
    "top_k_filter",
    "top_p_filter",
    "warp_logits",
    "sequence_logprob",
    "next_token_logits",
    "StaticDecoder",
    "DecodeRoofline",
    "decode_roofline",
    "measure_bandwidth",
    "known_gpu_peak",
    "repeated_ngram_fraction",
    "DecoderTiming",
    "time_decoders",
]

# A "parked" score: low enough never to win, finite so that sums stay ordered (as in HF).
_PARKED = -1.0e9


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------


def _check_input_ids(input_ids) -> None:
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"input_ids must hold integer token ids (torch.long), got dtype {input_ids.dtype}")
    if input_ids.dim() != 2 or input_ids.shape[0] != 1 or input_ids.shape[1] < 1:
        raise ValueError(f"input_ids must have shape (1, prompt_len) with prompt_len >= 1, got {tuple(input_ids.shape)}")


def _check_max_new_tokens(max_new_tokens) -> None:
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")


def _check_eos(eos_token_id) -> None:
    if eos_token_id is not None and (not isinstance(eos_token_id, int) or isinstance(eos_token_id, bool) or eos_token_id < 0):
        raise ValueError(f"eos_token_id must be None or a token id (int >= 0), got {eos_token_id!r}")


def _check_temperature(temperature) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 or math.isinf(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _check_top_k(k, name: str = "top_k") -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ValueError(f"{name} must be an int >= 0 (0 keeps every token), got {k!r}")


def _check_top_p(p, name: str = "top_p") -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 < p <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {p!r}")


# ---------------------------------------------------------------------------------------------
# One forward pass with a KV cache (works with transformers 4.x `past_key_values` and 5.x `cache`)
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _forward_signature(model_class) -> tuple[str, bool]:
    params = inspect.signature(model_class.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    return cache_kw, "logits_to_keep" in params


def _forward_kwargs(model) -> tuple[str, bool]:
    return _forward_signature(type(model))


def _step(model, input_ids: torch.Tensor, cache):
    """Run ``input_ids`` (batch, n) after ``cache``; return last-position logits (batch, vocab) float32 and the cache."""
    cache_kw, keeps_logits = _forward_kwargs(model)
    kwargs = {cache_kw: cache, "use_cache": True}
    if keeps_logits:
        kwargs["logits_to_keep"] = 1  # as generate does: the LM head only for the last position
    out = model(input_ids=input_ids, **kwargs)
    new_cache = getattr(out, "cache", None)
    if new_cache is None:
        new_cache = getattr(out, "past_key_values", None)
    return out.logits[:, -1, :].to(dtype=torch.float32), new_cache


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def next_token_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits for the token after ``input_ids`` (1, prompt_len): a float32 tensor of shape (vocab,)."""
    _check_input_ids(input_ids)
    logits, _ = _step(model, input_ids.to(_model_device(model)), None)
    return logits[0]


# ---------------------------------------------------------------------------------------------
# Filters (logits warpers)
# ---------------------------------------------------------------------------------------------


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits along the last axis, set the rest to -inf (ties with the k-th kept).

    ``logits``: (..., vocab). ``k = 0`` keeps everything; ``k > vocab`` is clamped. Same as
    transformers' ``TopKLogitsWarper(k)``.
    """
    _check_top_k(k, "k")
    if k == 0:
        return logits
    k = min(k, logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float, *, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability sums to >= ``p``.

    Sort the probabilities ascending and accumulate; a token is removed when the cumulative mass up
    to and including it is <= 1 - p (the unlikely tail), the ``min_tokens_to_keep`` most likely are
    always kept. ``logits``: (..., vocab); removed entries become -inf. Same as transformers'
    ``TopPLogitsWarper(p)``; ``p = 1`` returns the logits unchanged.
    """
    _check_top_p(p, "p")
    if p == 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -min_tokens_to_keep:] = False
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def warp_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The sampling distribution's logits: ``top_p_filter(top_k_filter(logits / temperature, top_k), top_p)``.

    The order (temperature, then top-k, then top-p) is the one ``generate`` uses; softmax of the
    result is the distribution :func:`sample` draws from.
    """
    _check_temperature(temperature)
    _check_top_k(top_k)
    _check_top_p(top_p)
    scores = logits / temperature if temperature != 1.0 else logits
    return top_p_filter(top_k_filter(scores, top_k), top_p)


# ---------------------------------------------------------------------------------------------
# Decoders
# ---------------------------------------------------------------------------------------------


def _decode_loop(model, input_ids, max_new_tokens, eos_token_id, choose) -> torch.Tensor:
    """Shared loop: prefill once, then one cached forward per new token; ``choose(logits) -> (1, 1)``."""
    device = _model_device(model)
    tokens = [input_ids.to(device)]
    if max_new_tokens == 0:
        return tokens[0].clone()
    logits, cache = _step(model, tokens[0], None)
    for t in range(max_new_tokens):
        next_token = choose(logits)  # (1, 1)
        tokens.append(next_token)
        if eos_token_id is not None and int(next_token) == eos_token_id:
            break
        if t + 1 < max_new_tokens:
            logits, cache = _step(model, next_token, cache)
    return torch.cat(tokens, dim=1).to(input_ids.device)


@torch.no_grad()
def greedy(model, input_ids: torch.Tensor, max_new_tokens: int, *, eos_token_id: int | None = None) -> torch.Tensor:
    """Greedy decoding: w_t = argmax_w P(w | w_<t), with a KV cache.

    ``input_ids`` (1, prompt_len) -> (1, prompt_len + n_new). Token-identical to
    ``model.generate(input_ids, do_sample=False, max_new_tokens=..., eos_token_id=...)``.
    """
    _check_input_ids(input_ids)
    _check_max_new_tokens(max_new_tokens)
    _check_eos(eos_token_id)
    return _decode_loop(model, input_ids, max_new_tokens, eos_token_id, lambda logits: logits.argmax(dim=-1, keepdim=True))


@torch.no_grad()
def greedy_without_cache(model, input_ids: torch.Tensor, max_new_tokens: int, *, eos_token_id: int | None = None) -> torch.Tensor:
    """Greedy decoding that re-runs the whole sequence every step (no KV cache): the slow reference.

    Step t costs a forward over prompt_len + t tokens, so n new tokens cost O(n * (prompt_len + n))
    token-forwards instead of O(prompt_len + n) with a cache. Same tokens as :func:`greedy`.
    """
    _check_input_ids(input_ids)
    _check_max_new_tokens(max_new_tokens)
    _check_eos(eos_token_id)
    sequence = input_ids.to(_model_device(model))
    for _ in range(max_new_tokens):
        logits = model(input_ids=sequence, use_cache=False).logits[:, -1, :].float()
        next_token = logits.argmax(dim=-1, keepdim=True)
        sequence = torch.cat([sequence, next_token], dim=1)
        if eos_token_id is not None and int(next_token) == eos_token_id:
            break
    return sequence.to(input_ids.device)


@torch.no_grad()
def sample(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """Ancestral sampling: w_t ~ softmax(warp(logits_t)), warp = temperature, then top-k, then top-p.

    ``input_ids`` (1, prompt_len) -> (1, prompt_len + n_new). One ``torch.multinomial`` draw per step
    over the full vocabulary row, so with ``generator=None`` (the global RNG) and the same
    ``torch.manual_seed`` it is token-identical to ``model.generate(do_sample=True, temperature=...,
    top_k=..., top_p=...)``. ``top_k=0`` and ``top_p=1`` disable those filters.
    """
    _check_input_ids(input_ids)
    _check_max_new_tokens(max_new_tokens)
    _check_eos(eos_token_id)
    _check_temperature(temperature)
    _check_top_k(top_k)
    _check_top_p(top_p)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")

    def choose(logits):
        probs = F.softmax(warp_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p), dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator)

    return _decode_loop(model, input_ids, max_new_tokens, eos_token_id, choose)


@torch.no_grad()
def beam_search(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    num_beams: int,
    length_penalty: float = 1.0,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """Beam search: keep the ``num_beams`` partial sequences with the highest summed log-probability.

    Each step scores every (beam, token) continuation by s(beam) + log P(token | beam) and keeps the
    best 2 * num_beams (so enough survive when some end in EOS). A continuation ending in EOS (or
    reaching ``max_new_tokens``) that ranks in the top ``num_beams`` becomes a finished hypothesis
    with score ``sum log p / n_generated ** length_penalty``; the rest continue. The search stops
    when ``num_beams`` hypotheses are finished (early stopping) or when the best running beam can no
    longer beat the worst finished one. Returns the best hypothesis, (1, prompt_len + n_new).
    Token-identical to ``model.generate(num_beams=..., do_sample=False, length_penalty=...,
    early_stopping=True)``.
    """
    _check_input_ids(input_ids)
    _check_max_new_tokens(max_new_tokens)
    _check_eos(eos_token_id)
    if not isinstance(num_beams, int) or isinstance(num_beams, bool) or num_beams < 1:
        raise ValueError(f"num_beams must be an int >= 1, got {num_beams!r}")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) or not math.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty!r}")
    device = _model_device(model)
    prompt = input_ids.to(device)
    if max_new_tokens == 0:
        return prompt.clone().to(input_ids.device)

    B, prompt_len = num_beams, prompt.shape[1]
    n_keep = 2 * B  # candidates kept per step
    is_top_b = torch.arange(n_keep, device=device) < B

    # Running beams: sequences, summed log-probs. Only beam 0 is live at first (the others are copies).
    running = prompt.expand(B, prompt_len).clone()
    running_scores = torch.full((B,), _PARKED, device=device)
    running_scores[0] = 0.0
    # Finished hypotheses: fixed-size tensors, padded; `finished_len` = number of generated tokens.
    total_len = prompt_len + max_new_tokens
    finished = torch.zeros((B, total_len), dtype=torch.long, device=device)
    finished_scores = torch.full((B,), _PARKED, device=device)
    finished_len = torch.zeros((B,), dtype=torch.long, device=device)
    is_finished = torch.zeros((B,), dtype=torch.bool, device=device)
    can_improve = True  # can a running beam still beat the worst finished hypothesis?

    # The prompt is run once per beam, as a batch of identical rows (as generate does).
    logits, cache = _step(model, running, None)
    for t in range(max_new_tokens):
        vocab = logits.shape[-1]
        # Summed log-probabilities of every (beam, token) continuation, flattened to (B * vocab,).
        total = (F.log_softmax(logits, dim=-1) + running_scores[:, None]).reshape(-1)
        cand_scores, cand_idx = torch.topk(total, k=n_keep)
        cand_beam, cand_token = cand_idx // vocab, cand_idx % vocab
        candidates = torch.cat([running[cand_beam], cand_token[:, None]], dim=1)  # (2B, cur_len + 1)
        ends = torch.full_like(cand_token, t + 1 >= max_new_tokens, dtype=torch.bool)
        if eos_token_id is not None:
            ends |= cand_token == eos_token_id

        # Continue with the best B candidates that did not end (ended ones are parked far below).
        parked = cand_scores + ends.to(torch.float32) * _PARKED
        keep = torch.topk(parked, k=B).indices
        running, running_scores, beam_source = candidates[keep], parked[keep], cand_beam[keep]

        # Finished hypotheses: ended candidates among the top B, length-normalised, merged with the old.
        just_finished = ends & is_top_b
        hyp_scores = cand_scores / ((t + 1) ** length_penalty)
        hyp_scores += bool(is_finished.all()) * _PARKED  # early stopping: the set is already full
        hyp_scores += (not can_improve) * _PARKED
        hyp_scores += (~just_finished) * _PARKED
        padded = torch.zeros((n_keep, total_len), dtype=torch.long, device=device)
        padded[:, : candidates.shape[1]] = candidates
        merged_scores = torch.cat([finished_scores, hyp_scores])
        best = torch.topk(merged_scores, k=B).indices
        finished = torch.cat([finished, padded])[best]
        finished_scores = merged_scores[best]
        finished_len = torch.cat([finished_len, torch.full((n_keep,), t + 1, device=device)])[best]
        is_finished = torch.cat([is_finished, just_finished])[best]

        # Stop when B hypotheses are finished, when no running beam can beat the worst one, or at the limit.
        best_possible = running_scores[0] / ((t + 1) ** length_penalty)
        worst_finished = torch.where(is_finished, finished_scores.min(), torch.tensor(_PARKED, device=device))
        can_improve = can_improve and bool((best_possible > worst_finished).any())
        if not can_improve or bool(is_finished.all()) or bool(ends.all()):
            break
        cache.reorder_cache(beam_source)
        logits, cache = _step(model, running[:, -1:], cache)

    best_len = prompt_len + int(finished_len[0])
    return finished[:1, :best_len].to(input_ids.device)


@torch.no_grad()
def sequence_logprob(model, input_ids: torch.Tensor, prompt_len: int) -> float:
    """Total log-probability of the continuation: sum_{t >= prompt_len} log P(x_t | x_<t).

    ``input_ids``: (1, total_len), the prompt followed by the continuation; ``1 <= prompt_len <
    total_len``. One forward pass; the sum is taken in float64.
    """
    _check_input_ids(input_ids)
    total_len = input_ids.shape[1]
    if not isinstance(prompt_len, int) or isinstance(prompt_len, bool) or not (1 <= prompt_len < total_len):
        raise ValueError(f"prompt_len must be an int in [1, {total_len - 1}] (input_ids has {total_len} tokens), got {prompt_len!r}")
    ids = input_ids.to(_model_device(model))
    logits = model(input_ids=ids, use_cache=False).logits[0, prompt_len - 1 : -1].float()  # predicts x_prompt_len..
    log_probs = F.log_softmax(logits, dim=-1)
    targets = ids[0, prompt_len:]
    return float(log_probs.gather(1, targets[:, None]).double().sum())


# ---------------------------------------------------------------------------------------------
# Issue 8: greedy decoding near the hardware limit
# ---------------------------------------------------------------------------------------------


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in float32, as Llama does: w * x / sqrt(mean(x^2) + eps)."""
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding: x * cos + rotate_half(x) * sin (cos, sin broadcast over heads)."""
    return x * cos + _rotate_half(x) * sin


class StaticDecoder:
    """Greedy decoding for a Llama-family model with a preallocated KV cache and a static decode step.

    ``StaticDecoder(model, max_len)`` reads the model's weights directly (embedding, RMSNorm, RoPE,
    grouped-query attention, SiLU MLP, tied or untied LM head) and preallocates, per layer, keys and
    values of shape (1, n_kv_heads, max_len, head_dim). Every decode step then has the same shapes
    and the same memory addresses: it writes the new key/value at position ``pos`` (a tensor, not a
    Python int) and attends to positions <= pos through a mask. That is what lets a GPU capture one
    step as a CUDA graph and replay it with a single launch instead of ~600 small kernel launches
    from Python. On the CPU (or MPS) the same static step runs eagerly, without graphs.

    ``.greedy(input_ids, max_new_tokens, *, eos_token_id=None)`` returns the same as
    :func:`greedy`. ``compile=True`` (CUDA only) wraps the step in ``torch.compile`` before the graph
    is captured, fusing small element-wise kernels; it costs a minute of compilation.
    Other architectures raise ``ValueError`` (use :func:`greedy` for them).

    Why it is fast: batch-1 decoding reads every weight once per token and does ~2 FLOPs per
    weight, so its floor is (weight bytes + KV bytes) / memory bandwidth; HF ``generate`` is far
    above that floor because of per-kernel launch and Python overhead, which the graph removes.
    """

    SUPPORTED = ("llama",)

    def __init__(self, model, max_len: int, *, compile: bool = False, use_cuda_graph: bool | None = None):
        config = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None)
        if model_type not in self.SUPPORTED:
            raise ValueError(
                f"StaticDecoder supports the Llama family (model_type in {self.SUPPORTED}, e.g. SmolLM2), "
                f"got model_type={model_type!r}; use llmlab.decoding.greedy for other models"
            )
        rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
        if rope_type != "default":
            raise ValueError(f"StaticDecoder supports plain RoPE only, got rope_type={rope_type!r}; use greedy")
        if getattr(config, "hidden_act", "silu") != "silu":
            raise ValueError(f"StaticDecoder supports the SiLU MLP only, got hidden_act={config.hidden_act!r}")
        if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 2:
            raise ValueError(f"max_len must be an int >= 2, got {max_len!r}")

        self.model = model
        self.max_len = max_len
        inner = model.model
        self.embed = inner.embed_tokens.weight  # (vocab, d_model)
        self.lm_head = model.get_output_embeddings().weight  # (vocab, d_model), tied to embed in SmolLM2
        self.final_norm = inner.norm.weight
        self.eps = float(config.rms_norm_eps)
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        # Per layer: the two RMSNorm weights and (weight, bias) of the seven projections.
        wb = lambda linear: (linear.weight, linear.bias)  # noqa: E731
        self.layers = [
            dict(
                ln1=layer.input_layernorm.weight, ln2=layer.post_attention_layernorm.weight,
                q=wb(layer.self_attn.q_proj), k=wb(layer.self_attn.k_proj), v=wb(layer.self_attn.v_proj),
                o=wb(layer.self_attn.o_proj), gate=wb(layer.mlp.gate_proj), up=wb(layer.mlp.up_proj),
                down=wb(layer.mlp.down_proj),
            )
            for layer in inner.layers
        ]
        self.device = self.embed.device
        self.dtype = self.embed.dtype

        # RoPE tables for every position, computed as Llama does: angle = pos * inv_freq, in float32.
        rotary = inner.rotary_emb
        inv_freq = rotary.inv_freq.to(device=self.device, dtype=torch.float32)
        positions = torch.arange(max_len, device=self.device, dtype=torch.float32)
        angles = positions[:, None] * inv_freq[None, :]
        emb = torch.cat((angles, angles), dim=-1)
        scaling = float(getattr(rotary, "attention_scaling", 1.0))
        self.cos = (emb.cos() * scaling).to(self.dtype)  # (max_len, head_dim)
        self.sin = (emb.sin() * scaling).to(self.dtype)

        # Static state: the KV cache, the current input token and its position, the output tokens.
        shape = (1, self.n_kv_heads, max_len, self.head_dim)
        self.k_cache = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.v_cache = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.token = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self.pos = torch.zeros((1,), dtype=torch.long, device=self.device)
        self.out = torch.zeros((max_len,), dtype=torch.long, device=self.device)
        self.key_positions = torch.arange(max_len, device=self.device)

        on_cuda = self.device.type == "cuda"
        self.use_cuda_graph = on_cuda if use_cuda_graph is None else bool(use_cuda_graph)
        if self.use_cuda_graph and not on_cuda:
            raise ValueError("use_cuda_graph=True needs the model on a CUDA device")
        if compile and not on_cuda:
            raise ValueError("compile=True is for CUDA; on this device the eager static step is used")
        self._step_fn = self._decode_step
        if compile:
            self._step_fn = torch.compile(self._decode_step, fullgraph=True)  # default mode: fuses, no own graphs
        self._graph = None

    # -- the model, written out -----------------------------------------------------------------

    def _attention_block(self, layer, x, cos, sin, attend):
        """x (1, n, d) at positions given by cos/sin (n, head_dim); ``attend(i, q, k, v)`` does the attention."""
        n = x.shape[1]
        h = _rms_norm(x, layer["ln1"], self.eps)
        q = F.linear(h, *layer["q"]).view(1, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = F.linear(h, *layer["k"]).view(1, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = F.linear(h, *layer["v"]).view(1, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        a = attend(q, k, v)  # (1, n_heads, n, head_dim)
        x = x + F.linear(a.transpose(1, 2).reshape(1, n, self.n_heads * self.head_dim), *layer["o"])
        h = _rms_norm(x, layer["ln2"], self.eps)  # SwiGLU MLP: down(silu(gate h) * up h)
        return x + F.linear(F.silu(F.linear(h, *layer["gate"])) * F.linear(h, *layer["up"]), *layer["down"])

    def _logits(self, x_last: torch.Tensor) -> torch.Tensor:
        return F.linear(_rms_norm(x_last, self.final_norm, self.eps), self.lm_head).float()

    @torch.no_grad()
    def _prefill(self, prompt: torch.Tensor) -> None:
        """Run the prompt (1, L) with causal attention, fill cache[:, :, :L], set token/pos/out for decoding."""
        L = prompt.shape[1]
        n_rep = self.n_heads // self.n_kv_heads
        x = F.embedding(prompt, self.embed)
        cos, sin = self.cos[:L], self.sin[:L]
        for i, layer in enumerate(self.layers):

            def attend(q, k, v, i=i):
                self.k_cache[i][:, :, :L].copy_(k)
                self.v_cache[i][:, :, :L].copy_(v)
                k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

            x = self._attention_block(layer, x, cos, sin, attend)
        first = self._logits(x[:, -1]).argmax(dim=-1)  # (1,)
        self.out[:L].copy_(prompt[0])
        self.out[L : L + 1].copy_(first)
        self.token.copy_(first.view(1, 1))
        self.pos.fill_(L)

    def _decode_step(self) -> None:
        """One token, shapes fixed: read ``token`` at ``pos``, write K/V at pos, append argmax to ``out``, pos += 1."""
        n_rep = self.n_heads // self.n_kv_heads
        x = F.embedding(self.token, self.embed)  # (1, 1, d)
        cos, sin = self.cos.index_select(0, self.pos), self.sin.index_select(0, self.pos)  # (1, head_dim)
        visible = (self.key_positions <= self.pos).view(1, 1, 1, self.max_len)  # keys 0..pos
        for i, layer in enumerate(self.layers):

            def attend(q, k, v, i=i):
                self.k_cache[i].index_copy_(2, self.pos, k)
                self.v_cache[i].index_copy_(2, self.pos, v)
                # Grouped-query attention without copying K/V: the n_rep query heads of a KV head
                # become n_rep "query positions" of that head.
                q = q.reshape(1, self.n_kv_heads, n_rep, self.head_dim)
                a = F.scaled_dot_product_attention(q, self.k_cache[i], self.v_cache[i], attn_mask=visible)
                return a.reshape(1, self.n_heads, 1, self.head_dim)

            x = self._attention_block(layer, x, cos, sin, attend)
        next_token = self._logits(x[:, -1]).argmax(dim=-1)  # (1,)
        self.out.index_copy_(0, self.pos + 1, next_token)
        self.token.copy_(next_token.view(1, 1))
        self.pos.add_(1)

    # -- CUDA graph ---------------------------------------------------------------------------------

    def _capture(self) -> None:
        """Warm up on a side stream, then record one decode step into a CUDA graph (once per decoder)."""
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(3):  # warm-up runs allocate workspaces, pick kernels (and compile)
                self.pos.zero_()
                self._step_fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.pos.zero_()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            self._step_fn()
        self._graph = graph

    def _run_step(self) -> None:
        if self._graph is not None:
            self._graph.replay()
        else:
            self._step_fn()

    # -- public API -------------------------------------------------------------------------------

    @torch.no_grad()
    def greedy(self, input_ids: torch.Tensor, max_new_tokens: int, *, eos_token_id: int | None = None) -> torch.Tensor:
        """Greedy decoding, (1, prompt_len) -> (1, prompt_len + n_new); same result as :func:`greedy`.

        ``prompt_len + max_new_tokens`` must fit in ``max_len``. The cache is reused across calls:
        a call overwrites positions 0..pos before reading them and masks everything after pos.
        """
        _check_input_ids(input_ids)
        _check_max_new_tokens(max_new_tokens)
        _check_eos(eos_token_id)
        L = input_ids.shape[1]
        if L > self.max_len:
            raise ValueError(f"input_ids has {L} tokens, longer than this StaticDecoder's max_len={self.max_len}")
        if L + max_new_tokens > self.max_len:
            raise ValueError(
                f"prompt_len + max_new_tokens = {L} + {max_new_tokens} exceeds max_len={self.max_len}; "
                f"build StaticDecoder(model, max_len>={L + max_new_tokens})"
            )
        prompt = input_ids.to(self.device)
        if max_new_tokens == 0:
            return prompt.clone().to(input_ids.device)
        if self.use_cuda_graph and self._graph is None:
            self._capture()
        self._prefill(prompt)
        n_new = 1
        # The first new token came from the prefill; each replay adds one more. EOS is checked in
        # chunks so the GPU runs ahead of the host instead of synchronising after every token.
        chunk = 16 if self.device.type == "cuda" else 1
        while n_new < max_new_tokens:
            if eos_token_id is not None and bool((self.out[L : L + n_new] == eos_token_id).any()):
                break
            for _ in range(min(chunk, max_new_tokens - n_new)):
                self._run_step()
                n_new += 1
        generated = self.out[L : L + n_new]
        if eos_token_id is not None:
            hits = (generated == eos_token_id).nonzero()
            if len(hits):
                generated = generated[: int(hits[0]) + 1]
        return torch.cat([prompt[0], generated]).view(1, -1).to(input_ids.device)


# ---------------------------------------------------------------------------------------------
# Roofline arithmetic for one decoded token
# ---------------------------------------------------------------------------------------------

# Peak HBM bandwidth (bytes/s) and dense bf16 tensor-core FLOP/s from the vendors' data sheets,
# matched by substring of torch.cuda.get_device_name() (first match wins: specific names first).
GPU_PEAKS: dict[str, tuple[float, float]] = {
    "H200": (4.8e12, 989e12),
    "H100 PCIe": (2.0e12, 756e12),
    "H100 NVL": (3.9e12, 835e12),
    "H100": (3.35e12, 989e12),  # SXM
    "A100-PCIE-40GB": (1.555e12, 312e12),
    "A100": (2.0e12, 312e12),  # 80GB SXM
    "L40S": (0.864e12, 362e12),
    "L4": (0.3e12, 121e12),
    "A10": (0.6e12, 125e12),
    "T4": (0.32e12, 65e12),
    "V100": (0.9e12, 125e12),
}


def known_gpu_peak(device_name: str) -> tuple[float, float] | None:
    """(bandwidth bytes/s, bf16 FLOP/s) of a known GPU from its name, or None."""
    for key, peak in GPU_PEAKS.items():
        if key.lower() in device_name.lower():
            return peak
    return None


def measure_bandwidth(device="cpu", n_bytes: int = 2**28, repeat: int = 5) -> float:
    """Memory bandwidth in bytes/s measured with a large copy (each copy reads and writes ``n_bytes``).

    Median of ``repeat`` copies after one warm-up. On a shared machine it measures what this
    process gets, which is what decoding gets too.
    """
    from .bench import timeit  # the one timing loop (median, CUDA-synchronised)

    device = torch.device(device)
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    seconds = timeit(lambda: dst.copy_(src), repeat=repeat, warmup=1, device=device)
    return 2 * src.numel() * src.element_size() / seconds


@dataclass
class DecodeRoofline:
    """Bytes and FLOPs of one batch-1 decode step, and the time each would take at peak.

    ``t_memory = (weight_bytes + kv_bytes) / bandwidth``; ``t_compute = flops / peak_flops``. The
    step can be no faster than the larger of the two; ``intensity`` (FLOP per byte) far below
    the machine's ``peak_flops / bandwidth`` means memory-bound.
    """

    weight_bytes: int
    kv_bytes: int
    flops: float
    bandwidth: float
    peak_flops: float | None = None

    @property
    def bytes_per_token(self) -> int:
        return self.weight_bytes + self.kv_bytes

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes_per_token

    @property
    def t_memory(self) -> float:
        return self.bytes_per_token / self.bandwidth

    @property
    def t_compute(self) -> float | None:
        return None if self.peak_flops is None else self.flops / self.peak_flops

    @property
    def floor_tokens_per_s(self) -> float:
        """Tokens/s at the roofline: 1 / max(t_memory, t_compute)."""
        return 1.0 / max(self.t_memory, self.t_compute or 0.0)


def decode_roofline(model, context_len: int, *, bandwidth: float, peak_flops: float | None = None,
                    dtype: torch.dtype | None = None) -> DecodeRoofline:
    """Roofline of decoding one token at ``context_len`` with batch 1.

    Bytes: every weight once (tied embeddings counted once) plus the KV cache,
    2 * n_layers * n_kv_heads * head_dim * context_len elements. FLOPs: 2 per weight of every
    matrix multiply (the LM head included) plus 4 * n_layers * n_heads * head_dim * context_len
    for q.k and attention.v. ``dtype`` defaults to the model's.
    """
    if not isinstance(context_len, int) or context_len < 0:
        raise ValueError(f"context_len must be an int >= 0, got {context_len!r}")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0 bytes/s, got {bandwidth!r}")
    config = model.config
    n_layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    n_heads = getattr(config, "num_attention_heads", None) or config.n_head
    n_kv_heads = getattr(config, "num_key_value_heads", None) or n_heads
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    head_dim = getattr(config, "head_dim", None) or hidden // n_heads
    params = list(model.parameters())  # tied weights appear once
    elem = torch.finfo(dtype).bits // 8 if dtype is not None else params[0].element_size()
    n_params = sum(p.numel() for p in params)
    matmul_params = sum(p.numel() for p in params if p.dim() == 2)
    input_embeddings = model.get_input_embeddings().weight
    output_embeddings = model.get_output_embeddings()
    if output_embeddings is not None and output_embeddings.weight is not input_embeddings:
        matmul_params -= input_embeddings.numel()  # an untied input embedding is a lookup, not a matmul
    weight_bytes = n_params * elem
    kv_bytes = 2 * n_layers * n_kv_heads * head_dim * context_len * elem
    flops = 2.0 * matmul_params + 4.0 * n_layers * n_heads * head_dim * context_len
    return DecodeRoofline(weight_bytes, kv_bytes, flops, float(bandwidth), peak_flops)


def repeated_ngram_fraction(token_ids, n: int = 4) -> float:
    """Fraction of the n-grams in ``token_ids`` (a 1-D sequence) that already occurred earlier in it."""
    ids = [int(t) for t in (token_ids.flatten() if isinstance(token_ids, torch.Tensor) else token_ids)]
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return 0.0
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


@dataclass
class DecoderTiming:
    """Wall-clock comparison of decoders on one prompt: ``tokens_per_s[name]`` and the ``sequences`` they returned."""

    tokens_per_s: dict
    seconds: dict
    sequences: dict
    n_new: int

    @property
    def identical(self) -> bool:
        """Did every decoder return the same tokens?"""
        outs = list(self.sequences.values())
        return all(torch.equal(outs[0], o) for o in outs[1:])


def time_decoders(model, input_ids: torch.Tensor, max_new_tokens: int, *, names=("generate", "greedy", "static"),
                  repeat: int = 1, warmup: bool = True, static_decoder: "StaticDecoder | None" = None) -> DecoderTiming:
    """Time greedy decoding of ``max_new_tokens`` (stopping at the model's EOS) by HF ``generate``, :func:`greedy`,
    :func:`greedy_without_cache` ("no_cache") and :class:`StaticDecoder` ("static"); median of ``repeat``.

    ``warmup`` runs each decoder once on 2 tokens first (and captures the CUDA graph, which
    ``static_decoder`` may hold already). CUDA is synchronised around each run.
    """
    from .bench import timeit  # the one timing loop (median, CUDA-synchronised)

    device = _model_device(model)
    ids = input_ids.to(device)
    L = ids.shape[1]
    if "static" in names and static_decoder is None:
        static_decoder = StaticDecoder(model, max_len=L + max_new_tokens)
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos  # all decoders stop at the model's EOS
    pad = getattr(model.generation_config, "pad_token_id", None)
    pad = eos if pad is None else pad
    runners = {
        "generate": lambda n: model.generate(ids, max_new_tokens=n, do_sample=False, num_beams=1,
                                             eos_token_id=eos, pad_token_id=pad),
        "greedy": lambda n: greedy(model, ids, n, eos_token_id=eos),
        "no_cache": lambda n: greedy_without_cache(model, ids, n, eos_token_id=eos),
        "static": lambda n: static_decoder.greedy(ids, n, eos_token_id=eos),
    }
    tokens_per_s, seconds, sequences = {}, {}, {}
    for name in names:
        run, last = runners[name], {}
        if warmup:
            run(2)
        seconds[name] = timeit(lambda: last.update(out=run(max_new_tokens)), repeat=repeat, warmup=0, device=device)
        out = last["out"]
        sequences[name] = out.cpu()
        tokens_per_s[name] = (out.shape[1] - L) / seconds[name]
    return DecoderTiming(tokens_per_s, seconds, sequences, max_new_tokens)

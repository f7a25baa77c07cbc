"""What llmlab reads off a language model, in one place: its vocabulary, its context, the forward
keywords it accepts, and the two checks built on them (token ids it knows, a request its context holds).

Perplexity, decoding, prompting, anatomy, alignment, precision and accumulation ask here instead of
each reading ``config`` (or sniffing ``forward``'s signature) its own way. It serves Hugging Face
causal LMs of transformers 4.x and 5.x and llmlab's own small ``nn.Module`` models (an embedding
table, no config). The checks run once, at an entry point, before the first forward pass: each
costs one host sync, never one per token or per step.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from ._checks import check_tensor

__all__ = [
    "vocab_size",
    "context_size",
    "cache_keyword",
    "accepts_logits_to_keep",
    "output_cache",
    "check_token_ids",
    "check_fits_model",
]

#: Config fields that hold the number of positions a model accepts, most common first
#: (Llama/Mistral/Qwen, GPT-2, GPT-2's alias, MPT/Falcon-style, ChatGLM).
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def _check_model(model) -> None:
    if not isinstance(model, nn.Module) and not hasattr(model, "config"):
        raise TypeError(f"model must be a torch.nn.Module (a Hugging Face model), got {type(model).__name__}")


def vocab_size(model) -> int | None:
    """The number of token ids ``model``'s input embedding accepts, or None when nothing says.

    Read from ``get_input_embeddings().num_embeddings`` (what an id is looked up in, so it counts
    padded rows that ``config.vocab_size`` may leave out), else ``config.vocab_size``, else the
    model's own ``vocab_size`` int attribute, else its first ``nn.Embedding``.
    """
    _check_model(model)
    getter = getattr(model, "get_input_embeddings", None)
    embeddings = getter() if callable(getter) else None
    if isinstance(getattr(embeddings, "num_embeddings", None), int):
        return embeddings.num_embeddings
    for value in (getattr(getattr(model, "config", None), "vocab_size", None), getattr(model, "vocab_size", None)):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    if isinstance(model, nn.Module):
        return next((m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)), None)
    return None


def context_size(model) -> int | None:
    """The longest input ``model`` accepts, in tokens (``config.max_position_embeddings``,
    ``n_positions``, ...), or None when its config does not say."""
    _check_model(model)
    config = getattr(model, "config", None)
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@functools.lru_cache(maxsize=None)
def _forward_parameters(model_class) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(model_class.forward).parameters)
    except (TypeError, ValueError):  # a forward without a readable signature (a C extension)
        return frozenset()


def cache_keyword(model) -> str:
    """The name of ``model.forward``'s key/value-cache argument: ``"cache"`` in transformers 5.x,
    ``"past_key_values"`` before. Read once per model class."""
    return "cache" if "cache" in _forward_parameters(type(model)) else "past_key_values"


def accepts_logits_to_keep(model) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (run the LM head on the last k positions only)."""
    return "logits_to_keep" in _forward_parameters(type(model))


def output_cache(output):
    """The key/value cache a forward pass returned (``output.cache`` in transformers 5.x,
    ``output.past_key_values`` before), or None."""
    cache = getattr(output, "cache", None)
    return getattr(output, "past_key_values", None) if cache is None else cache


def check_token_ids(model, ids: torch.Tensor, *, name: str = "input_ids") -> torch.Tensor:
    """Every id of the integer tensor ``ids`` must lie in ``[0, vocab_size(model))``.

    An id outside the embedding table fails deep inside torch on the CPU and as an asynchronous
    device assert on a GPU; this says which argument and which range instead. One host sync (the
    smallest and largest id together); no range check when the model does not say its vocabulary.
    ``model`` must be a module (``TypeError`` otherwise, from :func:`vocab_size`), so a caller that
    checks the ids here need not check the model's type first.
    """
    check_tensor(name, ids, integer=True)
    vocab = vocab_size(model)
    if ids.numel():
        low, high = torch.stack(torch.aminmax(ids)).tolist()
        if low < 0 or (vocab is not None and high >= vocab):
            top = vocab - 1 if vocab is not None else "vocab_size - 1"
            raise ValueError(f"{name} must be token ids in [0, {top}] (the model's vocabulary), got values in "
                             f"[{low}, {high}]")
    return ids


def check_fits_model(model, input_ids: torch.Tensor, *, max_new_tokens: int = 0,
                     eos_token_id: int | None = None) -> None:
    """A decoding request ``model`` can serve: ``input_ids`` (..., prompt_len) and ``eos_token_id`` are
    ids in its vocabulary, and ``prompt_len + max_new_tokens`` fits in its context.

    A sequence longer than the position table silently decodes garbage (RoPE extrapolates) or
    raises a raw ``IndexError`` (GPT-2's learned positions); this raises one ``ValueError`` first.
    """
    check_token_ids(model, input_ids, name="input_ids")
    vocab = vocab_size(model)
    if eos_token_id is not None and vocab is not None and not 0 <= eos_token_id < vocab:
        raise ValueError(f"eos_token_id must be a token id in [0, {vocab - 1}] for this model, got {eos_token_id}")
    context = context_size(model)
    prompt_len = input_ids.shape[-1]
    if context is not None and prompt_len > context:
        raise ValueError(f"input_ids has {prompt_len} tokens, longer than the model's context of {context} positions")
    if context is not None and prompt_len + max_new_tokens > context:
        raise ValueError(f"max_new_tokens must be <= {context - prompt_len} here: prompt_len + max_new_tokens = "
                         f"{prompt_len} + {max_new_tokens} exceeds the model's context of {context} positions")

"""What a decoder may be asked for: token ids the model knows, a length its context holds, a bounded beam.

Every decoder (:mod:`llmlab.decoding.search`, :class:`~llmlab.decoding.StaticDecoder`,
:func:`~llmlab.decoding.time_decoders`) checks its request here before the first forward pass,
so a bad request fails at once with one ``ValueError`` instead of inside torch, or silently.
"""

from __future__ import annotations

import torch

from .._checks import check_int, check_tensor
from ..perplexity import context_size, vocab_size

__all__ = ["check_fits_model", "MAX_NUM_BEAMS", "check_input_ids", "check_max_new_tokens", "check_eos_token_id"]


def check_fits_model(model, input_ids: torch.Tensor, max_new_tokens: int = 0, eos_token_id: int | None = None) -> None:
    """The token ids must exist in ``model``'s vocabulary and ``prompt_len + max_new_tokens`` must fit in its context.

    An embedding lookup with an id outside ``[0, vocab)`` fails deep inside torch (or, on a GPU,
    with an asynchronous device assert); a sequence longer than the position table silently
    decodes garbage (RoPE extrapolates) or raises a raw ``IndexError`` (GPT-2's learned
    positions). The context comes from :func:`llmlab.perplexity.context_size`, as perplexity does.
    """
    vocab = vocab_size(model)
    if input_ids.numel():
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or (vocab is not None and high >= vocab):
            bad = low if low < 0 else high
            top = vocab - 1 if vocab is not None else "vocab - 1"
            raise ValueError(f"input_ids must be token ids in [0, {top}] for this model, got {bad}")
    if eos_token_id is not None and vocab is not None and eos_token_id >= vocab:
        raise ValueError(f"eos_token_id must be a token id in [0, {vocab - 1}] for this model, got {eos_token_id}")
    context = context_size(model)
    prompt_len = input_ids.shape[-1]
    if context is not None and prompt_len + max_new_tokens > context:
        if prompt_len > context:
            raise ValueError(f"input_ids has {prompt_len} tokens, longer than the model's context of {context} positions")
        raise ValueError(
            f"max_new_tokens must be <= {context - prompt_len} here: prompt_len + max_new_tokens = "
            f"{prompt_len} + {max_new_tokens} exceeds the model's context of {context} positions"
        )


#: The most beams :func:`beam_search` runs. Each beam holds its own KV cache (layers x 2 x
#: context x hidden floats) and a (vocab,) row of log-probabilities per step, so memory grows
#: linearly in ``num_beams``: 128 beams of SmolLM2-135M over 512 tokens already need ~3 GB.
#: Beam search's quality stops improving after a handful of beams (4-8 is usual).
MAX_NUM_BEAMS = 128


# Argument checks shared by every decoder (search.py, StaticDecoder and time_decoders)

def check_input_ids(input_ids) -> torch.Tensor:
    """``input_ids`` must be a ``(1, prompt_len)`` tensor of token ids (int64 or int32), prompt_len >= 1."""
    check_tensor("input_ids", input_ids, integer=True, dim=2)
    if input_ids.dtype not in (torch.int64, torch.int32):  # what an embedding lookup accepts
        raise TypeError(f"input_ids must hold token ids as torch.long (or int32), got dtype {input_ids.dtype}")
    if input_ids.shape[0] != 1 or input_ids.shape[1] < 1:
        raise ValueError(f"input_ids must have shape (1, prompt_len) with prompt_len >= 1, got {tuple(input_ids.shape)}")
    return input_ids


def check_max_new_tokens(max_new_tokens) -> int:
    """``max_new_tokens`` as an int >= 0."""
    return check_int("max_new_tokens", max_new_tokens, low=0)


def check_eos_token_id(eos_token_id) -> int | None:
    """``eos_token_id``: None (never stop early) or a token id, an int >= 0."""
    return None if eos_token_id is None else check_int("eos_token_id", eos_token_id, low=0)

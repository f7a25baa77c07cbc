"""What a decoder may be asked for: a (1, prompt_len) prompt, a length, an EOS id, a bounded beam.

Every decoder (:mod:`llmlab.decoding.search`, :class:`~llmlab.decoding.StaticDecoder`,
:func:`~llmlab.decoding.time_decoders`) checks its request here before the first forward pass,
and asks :func:`llmlab.modelinfo.check_fits_model` whether the model knows the ids and its context
holds the length, so a bad request fails at once with one ``ValueError`` instead of inside torch,
or silently.
"""

from __future__ import annotations

import torch

from .._checks import check_int, check_tensor

__all__ = ["MAX_NUM_BEAMS", "check_input_ids", "check_max_new_tokens", "check_eos_token_id"]


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

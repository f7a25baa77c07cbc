"""The argument checks that :func:`~llmlab.serving.serve`, :func:`~llmlab.serving.simulate` and
:func:`~llmlab.serving.speculative_generate` share at their door: a prompt of token ids, a number of
new tokens, an EOS id (the same rules and messages as :mod:`llmlab.decoding`'s decoders)."""

from __future__ import annotations

import torch

from .._checks import check_int, check_tensor


def check_input_ids(input_ids, name: str = "input_ids") -> torch.Tensor:
    """A ``(1, prompt_len)`` tensor of token ids (int64 or int32), prompt_len >= 1."""
    check_tensor(name, input_ids, integer=True, dim=2)
    if input_ids.dtype not in (torch.int64, torch.int32):  # what an embedding lookup accepts
        raise TypeError(f"{name} must hold token ids as torch.long (or int32), got dtype {input_ids.dtype}")
    if input_ids.shape[0] != 1 or input_ids.shape[1] < 1:
        raise ValueError(f"{name} must have shape (1, prompt_len) with prompt_len >= 1, got {tuple(input_ids.shape)}")
    return input_ids


def check_max_new_tokens(max_new_tokens) -> int:
    """``max_new_tokens`` as an int >= 0."""
    return check_int("max_new_tokens", max_new_tokens, low=0)


def check_eos_token_id(eos_token_id) -> int | None:
    """``eos_token_id``: None (never stop early) or a token id, an int >= 0."""
    return None if eos_token_id is None else check_int("eos_token_id", eos_token_id, low=0)

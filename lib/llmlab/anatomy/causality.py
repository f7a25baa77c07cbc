"""Experiments on a real causal LM (Hugging Face, e.g. SmolLM2): what its mask means in practice.

* :func:`logit_changes`: change the token at position j and measure how much the logits at each
  position move. Under the causal mask positions < j cannot see position j, so their logits stay
  exactly where they were; positions >= j change.
* :func:`masked_nll`: run the model under any (n, n) mask of :mod:`.masks` (passed as the 4-D
  additive ``attention_mask`` transformers accepts as a custom mask) and score tokens with it,
  e.g. under a prefix-LM mask (bidirectional over the first tokens), which a causal model was
  never trained with.
"""

from __future__ import annotations

import torch

from .._checks import check_int, check_module, check_tensor
from .._torch import model_device
from ..modelinfo import vocab_size
from .masks import _additive_mask
from .tiny import _check_bool_mask

__all__ = ["logit_changes", "masked_nll"]


def _check_ids(ids) -> torch.Tensor:
    return check_tensor("input_ids", ids, dim=2, integer=True, min_numel=1)


@torch.no_grad()
def logit_changes(model, input_ids: torch.Tensor, position: int, new_token: int) -> torch.Tensor:
    """max |Δ logit| at every position (seq,) when the token at ``position`` of ``input_ids``
    (1, seq) is replaced by ``new_token``; float32 on the CPU."""
    ids = _check_ids(input_ids)
    if ids.shape[0] != 1:
        raise ValueError(f"input_ids must be one sequence (1, seq), got shape {tuple(ids.shape)}")
    position = check_int("position", position, low=0, high=ids.shape[1] - 1)
    vocab = vocab_size(model)
    new_token = check_int("new_token", new_token, low=0, high=vocab - 1 if vocab is not None else None)
    if new_token == int(ids[0, position]):
        raise ValueError(f"new_token must differ from the token at position {position} ({new_token})")
    ids = ids.to(model_device(model))
    changed = ids.clone()
    changed[0, position] = new_token
    before, after = model(ids).logits[0].float(), model(changed).logits[0].float()
    return (after - before).abs().amax(dim=-1).cpu()


@torch.no_grad()
def masked_nll(model, input_ids: torch.Tensor, mask: torch.Tensor, *, first_target: int = 1) -> float:
    """Mean negative log-likelihood (nats per token) of tokens ``first_target`` .. end of every row
    of ``input_ids`` (batch, seq), each predicted from the position before it, with the model run
    under the bool ``mask`` (seq, seq) (True = may attend) instead of its own causal mask."""
    check_module("model", model)
    ids = _check_ids(input_ids).to(model_device(model))
    n = ids.shape[1]
    _check_bool_mask(mask, dim=2)
    if mask.shape != (n, n):
        raise ValueError(f"mask must have shape ({n}, {n}) for input_ids of {n} positions, got {tuple(mask.shape)}")
    first_target = check_int("first_target", first_target, low=1, high=n - 1)
    dtype = next(model.parameters()).dtype
    custom = _additive_mask(mask.to(ids.device), dtype=dtype)[None, None].expand(ids.shape[0], 1, n, n)
    logits = model(input_ids=ids, attention_mask=custom).logits[:, first_target - 1:-1].float()
    targets = ids[:, first_target:]
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()

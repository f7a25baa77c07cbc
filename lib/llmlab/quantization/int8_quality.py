"""Where the quality of PyTorch's dynamic int8 model goes: its weights, its activations, the first token.

:func:`llmlab.quantization.int8_dynamic_copy` changes three things at once: every linear's weights
become int8 with one scale per matrix, every linear's input is quantized on the fly with one scale
per tensor, and the product runs in int8. These take them apart on the same loaded models, without
copying either:

* :func:`int8_weights_in_float`: the int8 model's weights, decoded, in the float32 model's linears
  (weight-only int8; the activations stay float32);
* :func:`float_linears`: the int8 model with some of its linears (e.g. every ``down_proj``) put
  back to the float32 model's own;
* :func:`first_token_apart_nlls`: per-token NLLs scored with token 0 in a forward pass of its own and
  the rest in a second one that reads token 0 through the KV cache. In float32 it gives the one-pass
  numbers (up to rounding); under per-tensor activation scales it shows what token 0's activations,
  often far larger than every other token's ("massive activations", Sun et al. 2024), cost the others
  when they share a tensor with it, as they do in a prefill and in a one-pass perplexity.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .._checks import check_module, check_sequence, check_tensor
from .._torch import eval_mode, model_device
from ..modelinfo import cache_keyword, check_fits_model, output_cache

__all__ = ["int8_weights_in_float", "float_linears", "first_token_apart_nlls"]

_DYNAMIC = torch.ao.nn.quantized.dynamic.Linear


def _dynamic_linears(int8_model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in int8_model.named_modules() if isinstance(m, _DYNAMIC)}


def _check_pair(int8_model, model) -> dict[str, nn.Module]:
    check_module("int8_model", int8_model)
    check_module("model", model)
    layers = _dynamic_linears(int8_model)
    if not layers:
        raise ValueError("int8_model must hold dynamic int8 linears (from int8_dynamic_copy(model)), it has none")
    names = dict(model.named_modules())
    missing = [n for n in layers if n not in names]
    if missing:
        raise ValueError(f"model must have the layers of int8_model, it lacks {missing[:3]}: pass the model "
                         "int8_model was copied from")
    return layers


@contextmanager
def _swapped(root: nn.Module, replacements: dict[str, nn.Module]) -> Iterator[None]:
    """Set each named submodule of ``root`` to its replacement; put the originals back at the end."""
    originals = {}
    try:
        for name, new in replacements.items():
            parent_name, _, child = name.rpartition(".")
            parent = root.get_submodule(parent_name) if parent_name else root
            originals[name] = (parent, child, getattr(parent, child))
            setattr(parent, child, new)
        yield
    finally:
        for parent, child, old in originals.values():
            setattr(parent, child, old)


@contextmanager
def int8_weights_in_float(model: nn.Module, int8_model: nn.Module) -> Iterator[nn.Module]:
    """``with int8_weights_in_float(model, int8_model) as m:`` ``m`` (= ``model``) computes in float32 with the int8
    model's weights: each layer that ``int8_model`` holds as a dynamic int8 linear becomes an ``nn.Linear``
    with those int8 weights decoded (one scale per matrix). Activations stay float32: weight-only int8.
    The original layers come back at the end (a tied output head is tied again)."""
    layers = _check_pair(int8_model, model)
    replacements = {}
    for name, q in layers.items():
        bias = q.bias()
        linear = nn.utils.skip_init(nn.Linear, q.in_features, q.out_features, bias=bias is not None)  # no random init
        with torch.no_grad():
            linear.weight.copy_(q.weight().dequantize())
            if bias is not None:
                linear.bias.copy_(bias)
        replacements[name] = linear.to(model_device(model))
    with _swapped(model, replacements):
        yield model


@contextmanager
def float_linears(int8_model: nn.Module, model: nn.Module, roles) -> Iterator[nn.Module]:
    """``with float_linears(int8_model, model, ["down_proj"]) as m:`` ``m`` (= ``int8_model``) runs with its int8
    linears whose name ends in one of ``roles`` replaced by ``model``'s float32 layers of the same name
    (shared, not copied); the int8 layers come back at the end."""
    layers = _check_pair(int8_model, model)
    roles = check_sequence("roles", roles, what="layer names such as 'down_proj'")
    if not all(isinstance(r, str) for r in roles):
        raise TypeError(f"roles must be strings such as 'down_proj', got {roles!r}")
    chosen = [n for n in layers if n.rpartition(".")[2] in roles]
    if not chosen:
        known = sorted({n.rpartition(".")[2] for n in layers})
        raise ValueError(f"roles must name int8 linears of int8_model (one of {known}), got {roles!r}")
    with _swapped(int8_model, {n: model.get_submodule(n) for n in chosen}):
        yield int8_model


def first_token_apart_nlls(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """NLL (nats) of tokens 1 .. n-1 of ``input_ids`` ((n,) or (1, n), n >= 3), like
    :func:`llmlab.perplexity.token_nlls` over one window, but token 0 goes through the model alone and
    tokens 1 .. n-2 in a second forward that attends to it through the KV cache. Float32 on the CPU."""
    check_tensor("input_ids", input_ids, dim=(1, 2), integer=True, min_numel=3)
    ids = input_ids.reshape(-1)
    check_fits_model(model, ids[None])
    ids = ids.to(model_device(model))
    with torch.inference_mode(), eval_mode(model):
        first = model(input_ids=ids[None, :1], use_cache=True)
        rest = model(input_ids=ids[None, 1:-1], use_cache=True, **{cache_keyword(model): output_cache(first)})
        logits = torch.cat([first.logits, rest.logits], dim=1)[0].float()
    nll = torch.logsumexp(logits, dim=-1) - logits.gather(-1, ids[1:, None])[:, 0]
    return nll.cpu()

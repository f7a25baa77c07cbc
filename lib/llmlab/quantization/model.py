"""Quantization schemes applied to a model's linear weights, and what they cost in perplexity.

:data:`SCHEMES` names each scheme of notebook 13 (GGUF block formats and round-to-nearest variants);
:func:`requantized` swaps a model's linear weights for their quantized-then-decoded values in place
and restores the originals when the block ends, so one loaded model serves every scheme;
:func:`scheme_nlls` scores a text under each scheme (per-token NLLs, :func:`llmlab.perplexity.token_nlls`)
and :func:`paired_bootstrap` puts an interval on the difference of two schemes' mean NLL on the same
tokens. Only the ``nn.Linear`` layers inside the transformer blocks are quantized; the tied input
embedding / LM head (``Q8_0`` in the default model's file) and the norms stay as loaded.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from .._checks import check_choice, check_int, check_module, check_sequence, check_tensor
from .._torch import isolated_rng
from ..perplexity import token_nlls
from .blocks import GGUF_TYPES, dequantize_gguf, quantize_gguf
from .rtn import fake_quantize, rtn_bits_per_weight

__all__ = ["Scheme", "SCHEMES", "block_linears", "apply_scheme", "scheme_bits_per_weight", "requantized",
           "SchemeNLL", "scheme_nlls", "paired_bootstrap"]


@dataclass(frozen=True)
class Scheme:
    """A weight format: a GGUF block type (``gguf`` set) or round-to-nearest (``bits``, ``granularity``,
    ``symmetric``)."""

    name: str
    gguf: str | None = None
    bits: int = 0
    granularity: str | int = "channel"
    symmetric: bool = True

    def bits_per_weight(self, shape) -> float:
        """Bits of storage per weight for a matrix of ``shape``, scales included."""
        if self.gguf is not None:
            return GGUF_TYPES[self.gguf].bits_per_weight
        return rtn_bits_per_weight(self.bits, self.granularity, shape, symmetric=self.symmetric)

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        """The weights after quantizing and decoding ``w`` with this scheme (same shape, dtype, device)."""
        if self.gguf is not None:
            return dequantize_gguf(quantize_gguf(w, self.gguf), self.gguf).to(device=w.device, dtype=w.dtype)
        return fake_quantize(w, bits=self.bits, granularity=self.granularity, symmetric=self.symmetric)


def _schemes(*items: Scheme) -> dict[str, Scheme]:
    return {s.name: s for s in items}


#: Notebook 13's schemes, from most to fewest bits. RTN 8- and 4-bit are symmetric; 3- and 2-bit
#: groups are asymmetric (scale + minimum: with 4 or 8 levels, spending one on an exact zero hurts).
SCHEMES: dict[str, Scheme] = _schemes(
    Scheme("Q8_0", gguf="Q8_0"),
    Scheme("int8 per channel", bits=8, granularity="channel"),
    Scheme("Q5_0", gguf="Q5_0"),
    Scheme("Q4_1", gguf="Q4_1"),
    Scheme("Q4_0", gguf="Q4_0"),
    Scheme("int4 per channel", bits=4, granularity="channel"),
    Scheme("int4 per tensor", bits=4, granularity="tensor"),
    *(Scheme(f"int{b} g{g}", bits=b, granularity=g, symmetric=False) for b in (3, 2) for g in (32, 64, 128)),
)


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` layers of ``model`` except its output head: name -> layer (for a Llama: q, k, v,
    o, gate, up and down of every block; the weights GGUF files store in the 4-bit formats)."""
    check_module("model", model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head}


def _scheme(scheme) -> Scheme:
    if isinstance(scheme, Scheme):
        return scheme
    if not isinstance(scheme, str):
        raise TypeError(f"scheme must be a name from SCHEMES or a Scheme, got {type(scheme).__name__}")
    return SCHEMES[check_choice("scheme", scheme, SCHEMES)]


def apply_scheme(w: torch.Tensor, scheme) -> torch.Tensor:
    """``w`` quantized with ``scheme`` (a name from :data:`SCHEMES` or a :class:`Scheme`) and decoded."""
    check_tensor("w", w, floating=True, min_numel=1)
    scheme = _scheme(scheme)
    if scheme.gguf is not None and w.shape[-1] % 32:
        raise ValueError(f"w must have rows of a multiple of 32 weights for {scheme.name}, got shape {tuple(w.shape)}")
    return scheme.apply(w)


def scheme_bits_per_weight(model: nn.Module, scheme) -> float:
    """Bits per weight of ``scheme`` over :func:`block_linears`, averaged by weight count."""
    scheme = _scheme(scheme)
    layers = block_linears(model)
    if not layers:
        raise ValueError("model has no nn.Linear layers besides its output head: nothing to quantize")
    total = sum(m.weight.numel() for m in layers.values())
    return sum(scheme.bits_per_weight(m.weight.shape) * m.weight.numel() for m in layers.values()) / total


@contextmanager
def requantized(model: nn.Module, scheme) -> Iterator[float]:
    """``with requantized(model, "Q4_0") as bpw:`` the model computes with its block linears quantized.

    Each weight's storage is replaced (``weight.data``) by the decoded quantized values, and the
    original tensors are put back when the block ends, also on an exception: no copy of the
    model is made. Yields the scheme's bits per weight (:func:`scheme_bits_per_weight`).
    """
    bpw = scheme_bits_per_weight(model, scheme)
    scheme = _scheme(scheme)
    originals: dict[str, torch.Tensor] = {}
    layers = block_linears(model)
    try:
        with torch.no_grad():
            for name, layer in layers.items():
                originals[name] = layer.weight.data
                layer.weight.data = scheme.apply(layer.weight.data)
        yield bpw
    finally:
        for name, weight in originals.items():
            layers[name].weight.data = weight


@dataclass(frozen=True)
class SchemeNLL:
    """One scheme's score on a text: ``nll`` (per scored token, nats), ``bits_per_weight`` and the ppl."""

    name: str
    bits_per_weight: float
    nll: torch.Tensor

    @property
    def mean_nll(self) -> float:
        return float(self.nll.double().mean())

    @property
    def ppl(self) -> float:
        return math.exp(self.mean_nll)


def scheme_nlls(model: nn.Module, input_ids: torch.Tensor, schemes, *, max_length: int | None = None,
                progress=None) -> list[SchemeNLL]:
    """Score ``input_ids`` with the model as loaded (name ``"as loaded"``) and under each of ``schemes``.

    ``max_length``: window of :func:`llmlab.perplexity.token_nlls` (default: the whole text in one
    window, if the model's context allows). ``progress``: optional wrapper for the scheme loop
    (e.g. ``tqdm``). Every scheme scores the same tokens with the same windows, so differences are
    paired (:func:`paired_bootstrap`).
    """
    schemes = [_scheme(s) for s in check_sequence("schemes", schemes, what="scheme names")]
    if max_length is None:  # one window over the whole text
        max_length = max(1, input_ids.shape[-1] - 1) if isinstance(input_ids, torch.Tensor) and input_ids.dim() else 1
    window = {"max_length": max_length, "stride": max_length, "batch_size": 4}
    results = [SchemeNLL("as loaded", float("nan"), token_nlls(model, input_ids, **window))]
    for scheme in (progress(schemes) if progress is not None else schemes):
        with requantized(model, scheme) as bpw:
            results.append(SchemeNLL(scheme.name, bpw, token_nlls(model, input_ids, **window)))
    return results


def paired_bootstrap(nll_a: torch.Tensor, nll_b: torch.Tensor, *, n_resamples: int = 2000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``mean(nll_a - nll_b)`` with a percentile bootstrap interval over tokens.

    The two NLL vectors score the same tokens (paired): resampling tokens keeps each pair together.
    Tokens of a text are not independent, so the interval is a lower bound on the real uncertainty.
    """
    check_tensor("nll_a", nll_a, dim=1, floating=True, min_numel=2)
    check_tensor("nll_b", nll_b, dim=1, floating=True, min_numel=2)
    if nll_a.shape != nll_b.shape:
        raise ValueError(f"nll_a and nll_b must score the same tokens, got {tuple(nll_a.shape)} and {tuple(nll_b.shape)}")
    n_resamples = check_int("n_resamples", n_resamples, low=10, high=10**6)
    if not isinstance(level, float) or not 0.5 <= level < 1:
        raise ValueError(f"level must be a float in [0.5, 1), got {level!r}")
    diff = (nll_a.double() - nll_b.double()).cpu()
    with isolated_rng(seed):
        idx = torch.randint(0, diff.numel(), (n_resamples, diff.numel()))
    means = diff[idx].mean(-1)
    alpha = (1 - level) / 2
    return float(diff.mean()), float(means.quantile(alpha)), float(means.quantile(1 - alpha))

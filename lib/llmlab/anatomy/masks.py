"""Attention masks: what separates a causal decoder, a prefix decoder and an encoder.

The three transformer families of the LLM survey differ less in their layers than in *which
positions each position may look at*. A mask is a boolean matrix M of shape (n, n): M[i, j] is
True when query position i may attend to key position j.

* ``"causal"`` (GPT family, LLaMA): M[i, j] = j <= i, the lower triangle. Each position sees
  itself and the past, so the model can be trained to predict the next token at every position
  at once, and it can generate left to right.
* ``"prefix"`` (GLM, U-PaLM): the first ``n_prefix`` positions see each other in both directions,
  the rest is causal: M[i, j] = j < n_prefix or j <= i. The prefix (an instruction, a document)
  is read bidirectionally, the continuation is still generated left to right.
* ``"bidirectional"`` (BERT, the encoder of T5/BART): every position sees every position.

An encoder-decoder (T5, BART) uses two stacks and three masks: a bidirectional encoder over the
source, a causal decoder over the target, and full cross-attention from every target position
to every source position (:func:`encoder_decoder_masks`).

``_additive_mask`` turns a boolean mask into the float form (0 where allowed, a very
negative number where not) that is added to attention scores, the form Hugging Face models
accept as a custom 4-D ``attention_mask``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_choice, check_int
from .._torch import resolve_device, resolve_dtype

__all__ = ["MASK_KINDS", "attention_mask", "EncoderDecoderMasks", "encoder_decoder_masks"]

#: The mask kinds :func:`attention_mask` builds, in the order the notebook draws them.
MASK_KINDS = ("causal", "prefix", "bidirectional")

# An (n, n) bool mask takes n² bytes: 2**15 positions is 1 GiB (SmolLM2's context is 8,192).
_MAX_POSITIONS = 2**15


def attention_mask(kind: str, n: int, *, n_prefix: int = 0, device=None) -> torch.Tensor:
    """Bool tensor (n, n), True where query i may attend to key j.

    ``kind``: ``"causal"`` (j <= i), ``"prefix"`` (j < n_prefix or j <= i: bidirectional over the
    first ``n_prefix`` positions, causal after) or ``"bidirectional"`` (all True). ``n_prefix``
    must lie in [0, n]; it only changes the ``"prefix"`` mask (with n_prefix = 0 or 1 that mask is
    the causal one, with n_prefix = n the bidirectional one). ``device``: where the tensor is
    built (default: the CPU, a mask is tiny).
    """
    kind = check_choice("kind", kind, MASK_KINDS)
    n = check_int("n", n, low=1, high=_MAX_POSITIONS)
    n_prefix = check_int("n_prefix", n_prefix, low=0, high=n)
    device = torch.device("cpu") if device is None else resolve_device(device)
    i = torch.arange(n, device=device)[:, None]  # query positions, a column
    j = torch.arange(n, device=device)[None, :]  # key positions, a row
    if kind == "causal":
        return j <= i
    if kind == "prefix":
        return (j < n_prefix) | (j <= i)
    return torch.ones(n, n, dtype=torch.bool, device=device)


@dataclass(frozen=True)
class EncoderDecoderMasks:
    """The three masks of an encoder-decoder transformer (T5, BART).

    ``encoder`` (n_source, n_source): bidirectional self-attention over the source;
    ``decoder`` (n_target, n_target): causal self-attention over the target;
    ``cross`` (n_target, n_source): every target position attends to every source position.
    """

    encoder: torch.Tensor
    decoder: torch.Tensor
    cross: torch.Tensor


def encoder_decoder_masks(n_source: int, n_target: int, *, device=None) -> EncoderDecoderMasks:
    """The encoder, decoder and cross-attention masks for a source of ``n_source`` tokens and a
    target of ``n_target`` tokens (see :class:`EncoderDecoderMasks`)."""
    n_source = check_int("n_source", n_source, low=1, high=_MAX_POSITIONS)
    n_target = check_int("n_target", n_target, low=1, high=_MAX_POSITIONS)
    device = torch.device("cpu") if device is None else resolve_device(device)
    return EncoderDecoderMasks(
        encoder=attention_mask("bidirectional", n_source, device=device),
        decoder=attention_mask("causal", n_target, device=device),
        cross=torch.ones(n_target, n_source, dtype=torch.bool, device=device),
    )


def _additive_mask(mask: torch.Tensor, *, dtype=torch.float32) -> torch.Tensor:
    """A boolean mask (any shape) as the float mask added to attention scores: 0.0 where True,
    the most negative finite number of ``dtype`` where False (finite, so a fully masked row gives
    no NaN in models that add it before their softmax). A step of :func:`llmlab.anatomy.masked_nll`,
    which checks ``mask``."""
    dtype = resolve_dtype(dtype, default=torch.float32)
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill_(~mask, torch.finfo(dtype).min)

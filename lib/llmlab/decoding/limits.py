"""What a decoder may be asked for: a (1, prompt_len) prompt, a length, an EOS id, a bounded beam.

Every decoder (:mod:`llmlab.decoding.search`, :class:`~llmlab.decoding.StaticDecoder`,
:func:`~llmlab.decoding.time_decoders`) checks its request here before the first forward pass,
in one call, and asks :func:`llmlab.modelinfo.check_fits_model` whether the model knows the ids and its context
holds the length, so a bad request fails at once with one ``ValueError`` instead of inside torch,
or silently.
"""

from __future__ import annotations

from .._checks import check_eos_token_id, check_int, check_prompt_ids
from ..modelinfo import check_fits_model

__all__ = ["MAX_NUM_BEAMS"]


#: The most beams :func:`beam_search` runs. Each beam holds its own KV cache (layers x 2 x
#: context x hidden floats) and a (vocab,) row of log-probabilities per step, so memory grows
#: linearly in ``num_beams``: 128 beams of SmolLM2-135M over 512 tokens already need ~3 GB.
#: Beam search's quality stops improving after a handful of beams (4-8 is usual).
MAX_NUM_BEAMS = 128


def _check_request(model, input_ids, max_new_tokens=0, eos_token_id=None, *, min_new_tokens: int = 0,
                   fits: bool = True) -> tuple[int, int | None]:
    """Every decoder's door: ``model`` a module (``check_fits_model`` checks it; without ``fits``, the
    :class:`~llmlab.decoding.StaticDecoder` that asks checked it when built), ``input_ids`` a
    ``(1, prompt_len)`` tensor of token ids (int64 or int32, prompt_len >= 1), ``max_new_tokens`` an int >= ``min_new_tokens``, ``eos_token_id``
    None or an id >= 0, and (with ``fits``) all of it within the model's vocabulary and context.
    Returns ``(max_new_tokens, eos_token_id)`` as ints."""
    check_prompt_ids("input_ids", input_ids)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=min_new_tokens)
    eos_token_id = check_eos_token_id(eos_token_id)
    if fits:
        check_fits_model(model, input_ids, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id)
    return max_new_tokens, eos_token_id

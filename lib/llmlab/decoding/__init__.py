"""Decoding: how a causal LM turns next-token distributions into text.

The model factorises a continuation as P(w_1..T | context) = prod_t P(w_t | w_<t, context). A
decoder picks tokens from these distributions one step at a time until EOS or a length limit:

* :func:`greedy` takes the argmax at each step;
* :func:`beam_search` keeps the ``num_beams`` best partial sequences by summed log-probability,
  ranking finished ones by ``sum log p / n_generated ** length_penalty``;
* :func:`sample` draws from softmax(logits / temperature) after top-k and
  :func:`top_p_filter` (both in :func:`warp_logits`) have removed the unlikely tail.

All of them feed the model one new token per step and reuse the keys and values of earlier
tokens (the KV cache), so a step costs O(context) attention instead of re-running the prefix;
:func:`greedy_without_cache` is the slow reference that re-runs it. Each decoder is
token-identical to Hugging Face ``model.generate`` with the matching settings (tests hold them
to it). :class:`StaticDecoder` is greedy decoding written for speed: a preallocated KV cache and
a plain-PyTorch decode step for the Llama family, captured once in a CUDA graph on a GPU.

Shapes: ``input_ids`` is ``(1, prompt_len)``; every decoder returns the full sequence
``(1, prompt_len + n_new)`` as a LongTensor on ``input_ids``' device, with
``n_new <= max_new_tokens`` (shorter when the sequence ends with ``eos_token_id``).

The modules:

* ``search``: the filters, :func:`greedy`, :func:`sample`, :func:`beam_search`,
  :func:`sequence_logprob`, :func:`next_token_logits`;
* ``static``: :class:`StaticDecoder`;
* ``llama``: :class:`~llmlab.decoding.llama.LlamaWeights`, the Llama layer written out from a model's weights
  (shared by :class:`StaticDecoder` and :mod:`llmlab.serving`);
* ``roofline``: :func:`decode_roofline` (bytes and FLOPs of one decoded token),
  :func:`measure_bandwidth`, :func:`known_gpu_peak`, :func:`kv_cache_bytes` (from a config's
  :func:`attention_geometry`), :func:`count_step_ops` (operators per decode step, about a GPU's launches);
* ``speed``: :func:`time_decoders` (the decoders timed side by side);
* ``repetition``: :func:`repeated_ngram_fraction`, and the two repetition controls every decoder
  takes (``repetition_penalty=``, ``no_repeat_ngram_size=``): :func:`repetition_penalty_filter`
  and the n-gram ban (:func:`banned_ngram_tokens` lists what it bans).
"""

from .repetition import (
    banned_ngram_tokens,
    repeated_ngram_fraction,
    repetition_penalty_filter,
)
from .roofline import (GPU_PEAKS, AttentionGeometry, DecodeRoofline, attention_geometry, count_step_ops, decode_roofline,
                       known_gpu_peak, kv_cache_bytes, measure_bandwidth)
from .search import (
    beam_search,
    greedy,
    greedy_without_cache,
    next_token_logits,
    sample,
    sequence_logprob,
    top_p_filter,
    warp_logits,
)
from .speed import DECODERS, DecoderTiming, time_decoders
from .static import StaticDecoder

__all__ = [
    "greedy",
    "greedy_without_cache",
    "beam_search",
    "sample",
    "top_p_filter",
    "warp_logits",
    "sequence_logprob",
    "next_token_logits",
    "StaticDecoder",
    "DecodeRoofline",
    "decode_roofline",
    "AttentionGeometry",
    "attention_geometry",
    "kv_cache_bytes",
    "count_step_ops",
    "measure_bandwidth",
    "known_gpu_peak",
    "GPU_PEAKS",
    "repeated_ngram_fraction",
    "repetition_penalty_filter",
    "banned_ngram_tokens",
    "DecoderTiming",
    "DECODERS",
    "time_decoders",
]

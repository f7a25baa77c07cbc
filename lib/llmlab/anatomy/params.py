"""Parameter counts by formula, from a Hugging Face config: scale measured, not recited.

A transformer's size follows from a handful of hyper-parameters: the vocabulary V, the width d,
the number of layers L, the attention heads H (and key/value heads H_kv, head size d_h), the MLP
width d_ff, and whether the output layer re-uses the input embedding (tied). Per layer, roughly

    attention  d·(H + 2·H_kv)·d_h + H·d_h·d      (q, k, v, o projections)
    MLP        2·d·d_ff (GPT-2, BERT, T5 v1.0)  or  3·d·d_ff (gated: LLaMA, T5 v1.1)

so a model holds about 12·L·d² parameters in its blocks (GPT-2's d_ff = 4d) plus V·d in its
embedding. :func:`param_count` adds up every weight, bias and norm exactly, for the four families
of the course (LLaMA, GPT-2, BERT, T5); tests hold it equal to the model transformers builds from
the same config on the ``meta`` device (:func:`built_param_count`: shapes only, no memory).

:data:`PAPER_CONFIGS` holds the hyper-parameters of well-known models as their papers give them,
and :data:`LLM_THRESHOLD` the line the LLM survey (Zhao et al., 2023) draws: it calls
language models of 10B parameters or more *large* language models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_choice

__all__ = ["FAMILIES", "LLM_THRESHOLD", "ParamBreakdown", "param_breakdown", "param_count", "built_param_count",
           "PAPER_CONFIGS", "paper_config", "PRETRAINING_DATA"]

#: model_type -> the transformers class whose parameters :func:`param_count` counts.
FAMILIES = {"llama": "AutoModelForCausalLM", "gpt2": "AutoModelForCausalLM", "bert": "AutoModel",
            "t5": "AutoModelForSeq2SeqLM"}
#: The survey's boundary: "LLMs ... containing tens or hundreds of billions of parameters";
#: its statistics table lists models of 10B parameters and more. A convention of that survey, not a
#: law: LLaMA-7B (6.7B) falls below it yet was trained and is used like its larger siblings.
LLM_THRESHOLD = 10e9

#: The pre-training corpus of some models as their papers report it: (amount, unit, what).
PRETRAINING_DATA = {
    "BERT-base": (3.3e9, "words", "BooksCorpus (800M words) + English Wikipedia (2,500M words); Devlin et al., 2019"),
    "GPT-2 XL": (40e9, "bytes", "WebText, 40 GB of text from 8M web pages; Radford et al., 2019"),
    "GPT-3 175B": (300e9, "tokens", "CommonCrawl (filtered), WebText2, Books1/2, Wikipedia; Brown et al., 2020"),
    "LLaMA-7B": (1.0e12, "tokens", "public data only; Touvron et al., 2023, Table 2"),
    "LLaMA-65B": (1.4e12, "tokens", "public data only; Touvron et al., 2023, Table 2"),
}


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameters by part: ``embeddings`` (token, position, token type), ``blocks`` (all transformer
    layers), ``head`` (an untied output layer, BERT's pooler; 0 when tied), ``other`` (final norms,
    T5's relative position biases); ``total`` is their sum."""

    embeddings: int
    blocks: int
    head: int
    other: int

    @property
    def total(self) -> int:
        return self.embeddings + self.blocks + self.head + self.other


def _model_type(config) -> str:
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise TypeError(f"config must be a transformers PretrainedConfig, got {type(config).__name__}")
    return check_choice("config.model_type", model_type, FAMILIES)


def _llama(c) -> ParamBreakdown:
    d, V, L, ff = c.hidden_size, c.vocab_size, c.num_hidden_layers, c.intermediate_size
    H, H_kv = c.num_attention_heads, c.num_key_value_heads or c.num_attention_heads
    d_h = getattr(c, "head_dim", None) or d // H
    attn = d * (H + 2 * H_kv) * d_h + H * d_h * d
    if c.attention_bias:
        attn += (H + 2 * H_kv) * d_h + d
    mlp = 3 * d * ff + (2 * ff + d if c.mlp_bias else 0)  # gate, up, down (SwiGLU)
    block = attn + mlp + 2 * d  # two RMSNorm weights
    return ParamBreakdown(embeddings=V * d, blocks=L * block, head=0 if c.tie_word_embeddings else V * d, other=d)


def _gpt2(c) -> ParamBreakdown:
    if getattr(c, "add_cross_attention", False):
        raise ValueError("config.add_cross_attention=True (GPT-2 as a decoder of an encoder-decoder) is not covered")
    d, V, L, P = c.n_embd, c.vocab_size, c.n_layer, c.n_positions
    ff = c.n_inner or 4 * d
    attn = d * 3 * d + 3 * d + d * d + d  # c_attn (q, k, v fused, with bias), c_proj
    mlp = d * ff + ff + ff * d + d  # c_fc, c_proj
    block = attn + mlp + 2 * 2 * d  # two LayerNorms (weight and bias)
    head = 0 if c.tie_word_embeddings else V * d
    return ParamBreakdown(embeddings=V * d + P * d, blocks=L * block, head=head, other=2 * d)


def _bert(c) -> ParamBreakdown:
    d, V, L, ff = c.hidden_size, c.vocab_size, c.num_hidden_layers, c.intermediate_size
    embeddings = (V + c.max_position_embeddings + c.type_vocab_size) * d + 2 * d  # + LayerNorm
    block = 4 * (d * d + d) + 2 * d + (d * ff + ff) + (ff * d + d) + 2 * d
    return ParamBreakdown(embeddings=embeddings, blocks=L * block, head=d * d + d, other=0)  # head: the pooler


def _t5(c) -> ParamBreakdown:
    d, V, H, d_kv, ff = c.d_model, c.vocab_size, c.num_heads, c.d_kv, c.d_ff
    n_enc, n_dec = c.num_layers, c.num_decoder_layers if c.num_decoder_layers is not None else c.num_layers
    attn = 3 * d * H * d_kv + H * d_kv * d  # no biases anywhere in T5
    mlp = (3 if c.is_gated_act else 2) * d * ff  # wi (or wi_0, wi_1 gated), wo
    encoder_block = attn + d + mlp + d  # T5 LayerNorm: a scale, no bias
    decoder_block = attn + d + attn + d + mlp + d  # self-attention, cross-attention, MLP
    relative_bias = 2 * c.relative_attention_num_buckets * H  # first layer of each stack
    return ParamBreakdown(embeddings=V * d, blocks=n_enc * encoder_block + n_dec * decoder_block,
                          head=0 if c.tie_word_embeddings else V * d, other=2 * d + relative_bias)


_FORMULAS = {"llama": _llama, "gpt2": _gpt2, "bert": _bert, "t5": _t5}


def param_breakdown(config) -> ParamBreakdown:
    """The parameters of the model ``config`` describes, by part (see :class:`ParamBreakdown`).

    ``config``: a transformers ``LlamaConfig``, ``GPT2Config``, ``BertConfig`` or ``T5Config``;
    counted is the model of :data:`FAMILIES` (causal LM with its output layer; BERT's encoder with
    its pooler; T5's encoder-decoder with its LM head).
    """
    return _FORMULAS[_model_type(config)](config)


def param_count(config) -> int:
    """The exact number of parameters of the model ``config`` describes, from its hyper-parameters
    alone (a tied output layer counted once): ``param_breakdown(config).total``."""
    return param_breakdown(config).total


def built_param_count(config) -> int:
    """The reference count: build the model of :data:`FAMILIES` from ``config`` on the ``meta``
    device (shapes without storage: instant, no memory, even for 65B) and count its distinct
    parameters, as ``sum(p.numel() for p in model.parameters())`` does."""
    # transformers takes seconds to import: only the functions that build a model import it.
    import transformers

    auto = getattr(transformers, FAMILIES[_model_type(config)])
    with torch.device("meta"):
        model = auto.from_config(config)
    return sum(p.numel() for p in model.parameters())


# Hyper-parameters as the papers give them: GPT-2 (Radford et al., 2019, Table 2, vocabulary
# 50,257, context 1024), GPT-3 (Brown et al., 2020, Table 2.1: the GPT-2 architecture scaled up,
# context 2048), BERT (Devlin et al., 2019: WordPiece vocabulary 30,522, 512 positions), T5 (Raffel
# et al., 2020, §3.7: vocabulary 32,128, d_kv 64 up to "large", 128 for 3B and 11B), LLaMA
# (Touvron et al., 2023, Table 2; vocabulary 32,000, SwiGLU width 2/3·4d rounded to 256),
# SmolLM2-135M (the default model's config).
PAPER_CONFIGS = {
    "BERT-base": ("bert", 2018, dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                     intermediate_size=3072)),
    "BERT-large": ("bert", 2018, dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                      intermediate_size=4096)),
    "GPT-2 small": ("gpt2", 2019, dict(n_embd=768, n_layer=12, n_head=12)),
    "GPT-2 medium": ("gpt2", 2019, dict(n_embd=1024, n_layer=24, n_head=16)),
    "GPT-2 large": ("gpt2", 2019, dict(n_embd=1280, n_layer=36, n_head=20)),
    "GPT-2 XL": ("gpt2", 2019, dict(n_embd=1600, n_layer=48, n_head=25)),
    "T5-small": ("t5", 2019, dict(d_model=512, d_ff=2048, d_kv=64, num_heads=8, num_layers=6)),
    "T5-base": ("t5", 2019, dict(d_model=768, d_ff=3072, d_kv=64, num_heads=12, num_layers=12)),
    "T5-large": ("t5", 2019, dict(d_model=1024, d_ff=4096, d_kv=64, num_heads=16, num_layers=24)),
    "T5-3B": ("t5", 2019, dict(d_model=1024, d_ff=16384, d_kv=128, num_heads=32, num_layers=24)),
    "T5-11B": ("t5", 2019, dict(d_model=1024, d_ff=65536, d_kv=128, num_heads=128, num_layers=24)),
    "GPT-3 175B": ("gpt2", 2020, dict(n_embd=12288, n_layer=96, n_head=96, n_positions=2048)),
    "LLaMA-7B": ("llama", 2023, dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                     num_attention_heads=32)),
    "LLaMA-13B": ("llama", 2023, dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                                      num_attention_heads=40)),
    "LLaMA-33B": ("llama", 2023, dict(hidden_size=6656, intermediate_size=17920, num_hidden_layers=60,
                                      num_attention_heads=52)),
    "LLaMA-65B": ("llama", 2023, dict(hidden_size=8192, intermediate_size=22016, num_hidden_layers=80,
                                      num_attention_heads=64)),
    "SmolLM2-135M": ("llama", 2024, dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                         tie_word_embeddings=True)),
}
_FAMILY_DEFAULTS = {
    "bert": dict(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2),
    "gpt2": dict(vocab_size=50257, n_positions=1024),
    "t5": dict(vocab_size=32128, feed_forward_proj="relu", tie_word_embeddings=True),
    "llama": dict(vocab_size=32000, tie_word_embeddings=False),
}


def paper_config(name: str):
    """The transformers config of :data:`PAPER_CONFIGS` entry ``name`` (e.g. ``"LLaMA-7B"``)."""
    # transformers takes seconds to import: only the functions that build a config import it.
    from transformers import BertConfig, GPT2Config, LlamaConfig, T5Config

    family, _, kwargs = PAPER_CONFIGS[check_choice("name", name, PAPER_CONFIGS)]
    cls = {"bert": BertConfig, "gpt2": GPT2Config, "t5": T5Config, "llama": LlamaConfig}[family]
    return cls(**{**_FAMILY_DEFAULTS[family], **kwargs})

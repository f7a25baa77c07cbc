"""What an LLM is made of: attention masks, objectives, scale, and how a pretrained LM is used.

Notebook 09 follows the LLM survey (Zhao et al., 2023): the same transformer becomes a causal
decoder (GPT, LLaMA), a prefix decoder (GLM, U-PaLM) or an encoder (BERT; with a decoder: T5,
BART) through its attention mask, and a causal or a masked LM through its objective; a PLM turns
into an LLM with scale. The modules:

* ``masks``: :func:`attention_mask` (causal / prefix / bidirectional), :func:`encoder_decoder_masks`;
* ``tiny``: :class:`TinyTransformer`, a small LM that takes any mask, and :func:`attention`
  written out (equal to PyTorch's ``scaled_dot_product_attention``);
* ``corpus`` and ``datasets``: the grammar corpus it learns, the labelled tasks and articles in
  ``data/anatomy/``;
* ``objectives``: causal vs masked LM training (:func:`train_tiny_lm`, BERT's :func:`mask_tokens`)
  and what each model can do (:func:`sentence_logprob`, :func:`sample_sentences`,
  :func:`fill_blank`, :func:`pseudo_perplexity`, :func:`pair_total`);
* ``causality``: the same questions on a real model (:func:`logit_changes`, :func:`masked_nll`);
* ``params``: :func:`param_count` by formula for LLaMA, GPT-2, BERT and T5 configs, and
  :data:`PAPER_CONFIGS`;
* ``classify``: a linear probe on frozen hidden states vs prompting with label words;
* ``summarize``: a chat model's summary and ROUGE-1 by hand.
"""

from .causality import logit_changes, masked_nll
from .classify import (POOLINGS, Probe, PromptResult, hidden_features, label_token_ids, next_token_logprobs,
                       prompt_classify, shared_prefix_length, train_probe)
from .corpus import (ADJECTIVES, ADVERBS, ANIMAL_SOUNDS, BOS, DETERMINERS, EOS, MASK, PAD, PLACES, SPECIALS, WordVocab,
                     encode_batch, is_grammatical, make_animal_corpus)
from .datasets import (CLASSIFICATION_TASKS, LabelledText, load_animal_corpus, load_classification_task, load_documents,
                       write_corpus)
from .masks import MASK_KINDS, EncoderDecoderMasks, attention_mask, encoder_decoder_masks
from .objectives import (FILL_METHODS, OBJECTIVES, TrainLog, causal_perplexity, fill_blank, lm_loss, mask_tokens,
                         padded_mask, pair_total, pseudo_logprobs, pseudo_perplexity, sample_sentences, sentence_logprob,
                         target_logprobs, train_tiny_lm)
from .params import (FAMILIES, LLM_THRESHOLD, PAPER_CONFIGS, PRETRAINING_DATA, ParamBreakdown, built_param_count,
                     paper_config, param_breakdown, param_count)
from .summarize import (SUMMARY_INSTRUCTION, RougeScore, lead_sentences, rouge1, rouge_n, rouge_tokens, summarize,
                        summary_prompt)
from .tiny import TinyTransformer, attention

__all__ = [
    "MASK_KINDS", "attention_mask", "EncoderDecoderMasks", "encoder_decoder_masks",
    "attention", "TinyTransformer",
    "ANIMAL_SOUNDS", "DETERMINERS", "ADJECTIVES", "ADVERBS", "PLACES", "SPECIALS", "PAD", "BOS", "EOS", "MASK",
    "make_animal_corpus", "is_grammatical", "WordVocab", "encode_batch",
    "CLASSIFICATION_TASKS", "write_corpus", "load_animal_corpus", "LabelledText",
    "load_classification_task", "load_documents",
    "OBJECTIVES", "FILL_METHODS", "padded_mask", "mask_tokens", "lm_loss", "TrainLog", "train_tiny_lm",
    "target_logprobs", "sentence_logprob", "causal_perplexity", "pseudo_logprobs", "pseudo_perplexity", "sample_sentences",
    "fill_blank", "pair_total",
    "logit_changes", "masked_nll",
    "FAMILIES", "LLM_THRESHOLD", "ParamBreakdown", "param_breakdown", "param_count", "built_param_count",
    "PAPER_CONFIGS", "paper_config", "PRETRAINING_DATA",
    "POOLINGS", "hidden_features", "Probe", "train_probe", "label_token_ids", "PromptResult",
    "shared_prefix_length", "next_token_logprobs", "prompt_classify",
    "rouge_tokens", "RougeScore", "rouge_n", "rouge1", "lead_sentences", "SUMMARY_INSTRUCTION", "summary_prompt",
    "summarize",
]

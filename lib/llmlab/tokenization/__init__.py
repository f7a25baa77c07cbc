"""Tokenization (notebook 10): how text becomes the integers a language model reads.

* :mod:`.bpe`: byte-level BPE from scratch — :func:`train_bpe` learns the same merges, in the same
  order, as Hugging Face ``tokenizers``; :class:`BPETokenizer` encodes and decodes any string.
* :mod:`.library`: WordPiece, Unigram and a LLaMA-style BPE (digits split, byte fallback) trained with
  ``tokenizers``, and from-scratch versions of how WordPiece (greedy longest match) and Unigram
  (Viterbi) cut a word.
* :mod:`.texts`: the texts we ship in ``data/tokenization`` and what they cost in tokens.
"""

from .bpe import (ALPHABET, BYTE_TO_CHAR, CHAR_TO_BYTE, GPT2_PATTERN, BPETokenizer, check_texts, pretokenize,
                  split_pieces, train_bpe)
from .library import (BYTE_TOKENS, encode_ids, model_json, reference_bpe, segmentations, token_strings,
                      train_llama_style, train_unigram, train_wordpiece, unigram_scores, unigram_viterbi,
                      wordpiece_greedy)
from .texts import TokenCount, load_corpus, load_parallel, load_samples, token_counts

__all__ = [
    "ALPHABET", "BYTE_TO_CHAR", "CHAR_TO_BYTE", "GPT2_PATTERN", "BPETokenizer", "check_texts", "pretokenize",
    "split_pieces", "train_bpe",
    "BYTE_TOKENS", "encode_ids", "model_json", "reference_bpe", "segmentations", "token_strings", "train_llama_style",
    "train_unigram", "train_wordpiece", "unigram_scores", "unigram_viterbi", "wordpiece_greedy",
    "TokenCount", "load_corpus", "load_parallel", "load_samples", "token_counts",
]

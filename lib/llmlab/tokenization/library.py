"""Tokenizers trained with Hugging Face ``tokenizers``, and from-scratch checks of how each one cuts a word.

* :func:`reference_bpe`: ``tokenizers``' BPE trainer with the settings :func:`~llmlab.tokenization.train_bpe`
  reproduces (byte-level, no special tokens) — the library the from-scratch trainer is tested against.
* :func:`train_wordpiece`: WordPiece as in BERT: words split on whitespace and punctuation, a piece
  inside a word carries ``##``. Encoding is greedy longest match from the left
  (:func:`wordpiece_greedy`). Note: ``tokenizers``' ``WordPieceTrainer`` learns its vocabulary with
  the BPE trainer (most frequent pair, ``##`` on inner pieces); the original WordPiece picked the
  merge that most raises the likelihood of the corpus.
* :func:`train_unigram`: the Unigram language model (Kudo 2018, SentencePiece's default): every piece
  has a probability, a word is cut into the pieces of highest total log-probability (Viterbi,
  :func:`unigram_viterbi`); training starts from a large seed vocabulary and repeatedly prunes the
  pieces whose removal costs the corpus likelihood least.
* :func:`train_llama_style`: BPE on characters as in SentencePiece (spaces become ``"▁"``), with
  LLaMA's two rules (Touvron et al. 2023, section 2.1): every digit is its own piece, and a
  character missing from the vocabulary falls back to its UTF-8 bytes, ``<0x00>`` .. ``<0xFF>``.

Every function imports ``tokenizers`` when called: the from-scratch code does not need it.
"""

from __future__ import annotations

import json
import math

from .._checks import check_float, check_int, check_str
from .bpe import ALPHABET, BPETokenizer, check_texts

__all__ = ["BYTE_TOKENS", "reference_bpe", "train_wordpiece", "train_unigram", "train_llama_style", "model_json",
           "encode_ids", "token_strings", "wordpiece_greedy", "unigram_scores", "unigram_viterbi", "segmentations"]

#: The 256 byte tokens of byte fallback, in SentencePiece's spelling (``"<0x41>"`` is byte 65, "A").
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))


def _train(tok, trainer, texts):
    tok.train_from_iterator(texts, trainer)
    return tok


def _check_corpus(texts, vocab_size, *, low: int) -> tuple[list[str], int]:
    """What every trainer here takes: ``texts`` (see :func:`~llmlab.tokenization.check_texts`) and a
    ``vocab_size`` of at least ``low`` (the trainer's own alphabet or special tokens)."""
    texts = check_texts(texts)
    return texts, check_int("vocab_size", vocab_size, low=low)


def reference_bpe(texts, vocab_size: int, *, min_frequency: int = 0):
    """``tokenizers``' byte-level BPE trained on ``texts``: ``BpeTrainer(vocab_size, min_frequency,
    initial_alphabet=ByteLevel.alphabet())`` with the ByteLevel pre-tokenizer and decoder."""
    # tokenizers is only needed by these library-side functions (see the module docstring).
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts, vocab_size = _check_corpus(texts, vocab_size, low=len(ALPHABET))
    min_frequency = check_int("min_frequency", min_frequency, low=0)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    return _train(tok, trainer, texts)


def train_wordpiece(texts, vocab_size: int):
    """A BERT-style WordPiece tokenizer (cased, ``[UNK]`` for a word it cannot spell) trained on ``texts``."""
    # tokenizers is only needed by these library-side functions (see the module docstring).
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts, vocab_size = _check_corpus(texts, vocab_size, low=2)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["[UNK]"], show_progress=False)
    return _train(tok, trainer, texts)


def train_unigram(texts, vocab_size: int):
    """A SentencePiece-style Unigram tokenizer (``"▁"`` marks a space, ``<unk>`` for unknown characters)."""
    # tokenizers is only needed by these library-side functions (see the module docstring).
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts, vocab_size = _check_corpus(texts, vocab_size, low=2)
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<unk>"], unk_token="<unk>",
                                      show_progress=False)
    return _train(tok, trainer, texts)


def train_llama_style(texts, vocab_size: int):
    """BPE over characters, SentencePiece style, with LLaMA's digit split and byte fallback.

    ``vocab_size`` counts the 256 byte tokens (ids 0..255), the characters seen in ``texts`` and the
    merges. A space becomes ``"▁"`` and every text gets one in front, which decoding removes, so
    ``decode(encode(s)) == s`` for every ``s`` without a literal ``"▁"``.
    """
    # tokenizers is only needed by these library-side functions (see the module docstring).
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    texts, vocab_size = _check_corpus(texts, vocab_size, low=len(BYTE_TOKENS) + 1)

    def pipeline(tok):
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never"),  # split before each "▁"
            pre_tokenizers.Digits(individual_digits=True),  # rule 1: one piece per digit
        ])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        return tok

    # The byte tokens enter training as special tokens (ids 0..255); the final tokenizer holds them as
    # ordinary vocabulary entries, so a literal "<0x41>" in a text is not read as a token.
    trained = _train(pipeline(Tokenizer(models.BPE())),
                     trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BYTE_TOKENS), show_progress=False),
                     texts)
    model = model_json(trained)
    bpe = models.BPE(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]],
                     byte_fallback=True)  # rule 2: unknown characters -> their UTF-8 bytes
    return pipeline(Tokenizer(bpe))


def model_json(tokenizer) -> dict:
    """The model part of a ``tokenizers.Tokenizer`` as a dict (``vocab``, ``merges`` or scored pieces)."""
    if not hasattr(tokenizer, "to_str"):
        raise TypeError(f"tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
    return json.loads(tokenizer.to_str())["model"]


def encode_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens, for a :class:`BPETokenizer`, a ``tokenizers.Tokenizer``
    or a ``transformers`` tokenizer."""
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer.encode(text)
    if hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "get_vocab_size"):  # tokenizers.Tokenizer
        return tokenizer.encode(text, add_special_tokens=False).ids
    if callable(tokenizer) and hasattr(tokenizer, "convert_ids_to_tokens"):  # a transformers tokenizer
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    raise TypeError(f"tokenizer must be a BPETokenizer, a tokenizers or a transformers tokenizer, got {tokenizer!r:.40}")


def token_strings(tokenizer, text: str) -> list[str]:
    """The tokens of ``text`` as the tokenizer spells them (``"Ġthe"``, ``"##ing"``, ``"▁the"``, ``"<0xF0>"``)."""
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer.tokens(check_str("text", text, allow_empty=True))
    if hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "get_vocab_size"):
        return tokenizer.encode(check_str("text", text, allow_empty=True), add_special_tokens=False).tokens
    return list(tokenizer.convert_ids_to_tokens(encode_ids(tokenizer, text)))


def wordpiece_greedy(word: str, vocab, *, prefix: str = "##", unk: str = "[UNK]") -> list[str]:
    """WordPiece encoding of one word, from scratch: take the longest vocabulary entry that starts the
    rest of the word (``prefix`` + entry after the first piece), repeat; ``[unk]`` if some rest has none.

    This is ``tokenizers.models.WordPiece.tokenize`` (greedy longest match first). ``vocab``: the
    vocabulary's tokens (a dict token -> id or any container of str).
    """
    check_str("word", word)
    if isinstance(vocab, (str, bytes)) or not hasattr(vocab, "__contains__"):
        raise TypeError(f"vocab must be a dict token -> id or a container of str, got {type(vocab).__name__}")
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:  # no piece fits: the whole word is unknown
            return [unk]
    return pieces


def unigram_scores(tokenizer) -> dict[str, float]:
    """Piece -> score (its log-probability) of a trained ``tokenizers`` Unigram model, the unknown token left out.

    The trainer's EM step estimates log p with a digamma correction (as SentencePiece does), so the
    probabilities of the final pieces need not sum to 1; only their order and differences matter.
    """
    model = model_json(tokenizer)
    if model.get("type") != "Unigram":
        raise ValueError(f"tokenizer must hold a Unigram model, got {model.get('type')}")
    unk = model.get("unk_id")
    return {piece: score for i, (piece, score) in enumerate(model["vocab"]) if i != unk}


def unigram_viterbi(word: str, log_probs: dict[str, float]) -> tuple[list[str], float]:
    """The most likely cut of ``word`` into pieces under a Unigram model, from scratch, and its log-probability.

    best[j] = max over pieces word[i:j] in the vocabulary of best[i] + log p(word[i:j]) (dynamic
    programming over the end positions, O(len(word) * longest piece)). ``log_probs``: piece -> log p
    (:func:`unigram_scores`). Returns ``(pieces, sum of log p)``; ``ValueError`` if no cut exists (a
    character outside the vocabulary, which the library maps to its unknown token).
    """
    check_str("word", word)
    if not isinstance(log_probs, dict):
        raise TypeError(f"log_probs must be a dict piece -> log p (see unigram_scores), got {type(log_probs).__name__}")
    for piece, value in log_probs.items():
        check_float(f"log_probs[{piece!r}]", value)
    n, longest = len(word), max(map(len, log_probs), default=0)
    best = [0.0] + [-math.inf] * n
    back = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - longest), j):
            score = log_probs.get(word[i:j])
            if score is not None and best[i] + score > best[j]:
                best[j], back[j] = best[i] + score, i
    if best[n] == -math.inf:
        raise ValueError(f"word {word!r} cannot be cut into pieces of the vocabulary")
    pieces, j = [], n
    while j > 0:
        pieces.append(word[back[j]:j])
        j = back[j]
    return pieces[::-1], best[n]


def segmentations(word: str, pieces, *, limit: int = 100_000) -> list[list[str]]:
    """Every way to cut ``word`` into a sequence of ``pieces`` (a container of str), in no particular order.

    Exhaustive, for showing (and testing) what Viterbi chooses from: their number grows exponentially
    with the word's length, so ``ValueError`` beyond ``limit`` cuts.
    """
    check_str("word", word)
    if len(word) > 1000:  # every cut is a list: even one cut per start is O(len(word)**2) memory
        raise ValueError(f"word must be at most 1000 characters for an exhaustive listing, got {len(word)}")
    limit = check_int("limit", limit, low=1)
    longest = max(map(len, pieces), default=0)
    tails: dict[int, list[list[str]]] = {len(word): [[]]}  # start position -> every cut of word[start:]
    for start in range(len(word) - 1, -1, -1):
        cuts = []
        for end in range(start + 1, min(len(word), start + longest) + 1):
            if word[start:end] in pieces:
                cuts += [[word[start:end], *rest] for rest in tails[end]]
                if len(cuts) > limit:
                    raise ValueError(f"word {word!r} has more than limit={limit} cuts")
        tails[start] = cuts
    return tails[0]

"""Byte-level BPE from scratch: the trainer and the tokenizer of GPT-2 style models.

**Pre-tokenization.** A text is first cut into pieces by GPT-2's regular expression (words with
their leading space, runs of digits, runs of punctuation, whitespace), and each piece is written
in UTF-8 bytes, every byte shown as one printable character (GPT-2's table: byte 0x20, the space,
is ``"Ġ"``). Merges never cross a piece boundary. This is ``tokenizers``'
``pre_tokenizers.ByteLevel(add_prefix_space=False)``.

**Training** (Sennrich et al. 2016, on bytes as in GPT-2). Start from the 256 byte characters;
count every adjacent pair of symbols in every distinct piece, weighted by how often the piece
occurs; merge the most frequent pair into a new symbol everywhere; repeat until the vocabulary
has ``vocab_size`` entries. Counting everything again after each merge would cost a pass over the
corpus per merge. Like ``tokenizers``, :func:`train_bpe` keeps the pair counts and, for every
pair, the set of pieces it occurs in; a merge touches only those pieces and adjusts the counts of
the pairs around each merged spot. A max-heap orders the pairs; an entry whose count has gone
stale is put back with its current count when it reaches the top.

The result is *the same merges in the same order* as ``tokenizers.trainers.BpeTrainer`` (with
``initial_alphabet=ByteLevel.alphabet()``, no special tokens, the same ``min_frequency``), because the
details follow its source (``tokenizers/src/models/bpe/trainer.rs`` and ``word.rs``):

* the 256 byte characters get ids 0..255 in the order of their Unicode code points (not of the byte
  values: ``"!"`` (byte 0x21) is id 0, ``"Ā"`` (byte 0x00, code point 256) is id 188); a merged
  token gets the next free id;
* of two pairs with the same count, the one with the smaller ``(left id, right id)`` wins;
* a merge inside a piece goes left to right and does not overlap (``a a a`` -> ``aa a``).

**Encoding** applies the learned merges to each piece, lowest rank first (leftmost first among
equal ranks) until none applies, like ``tokenizers.models.BPE``; decoding joins the tokens' bytes
and reads them as UTF-8, so ``decode(encode(s)) == s`` for every string.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from types import MappingProxyType

import regex

from .._checks import check_int, check_str

__all__ = ["BYTE_TO_CHAR", "CHAR_TO_BYTE", "ALPHABET", "GPT2_PATTERN", "split_pieces", "pretokenize",
           "BPETokenizer", "train_bpe", "check_texts"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: bytes that are printable Latin-1 characters keep their character, the other 68
    (control bytes, the space, 0x7F-0xA0, 0xAD) become the characters 256, 257, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))


#: byte value -> the printable character that stands for it (``BYTE_TO_CHAR[0x20] == "Ġ"``).
BYTE_TO_CHAR: dict[int, str] = _bytes_to_unicode()
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_CHAR.items()}
#: The initial vocabulary: the 256 byte characters sorted by code point; the id of a character is its index.
ALPHABET: tuple[str, ...] = tuple(sorted(BYTE_TO_CHAR.values()))

#: GPT-2's pre-tokenization pattern (``\p{L}`` letters, ``\p{N}`` numbers), as in ``tokenizers``.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Unicode tables: the `regex` module's. tokenizers' Oniguruma may be a Unicode version behind, so the
# two can split differently around a character that only the newer version assigns (tests/ check
# that they agree on every character Python's own unicodedata knows).
_PATTERN = regex.compile(GPT2_PATTERN)
_BYTE_CHARS = tuple(BYTE_TO_CHAR[b] for b in range(256))


def split_pieces(text: str) -> list[str]:
    """The pieces GPT-2's pattern cuts ``text`` into (plain text; ``"".join(pieces) == text``)."""
    return _PATTERN.findall(check_str("text", text, allow_empty=True))


def _to_byte_chars(piece: str) -> str:
    try:
        data = piece.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"text must be valid Unicode: it holds a lone surrogate {piece[err.start]!r}") from None
    return "".join(_BYTE_CHARS[b] for b in data)


def pretokenize(text: str) -> list[str]:
    """``text`` as byte-level pieces: ``pretokenize("Hi there") == ["Hi", "Ġthere"]``.

    Equal to ``[p for p, _ in ByteLevel(add_prefix_space=False).pre_tokenize_str(text)]``.
    """
    return [_to_byte_chars(p) for p in split_pieces(text)]


def _u64(count: int) -> int:
    """The trainer keeps counts as i32 and queues them as u64: a negative count wraps around."""
    return count % (1 << 64)


def _merge_in_word(symbols: list[int], a: int, b: int, new: int) -> list[tuple[tuple[int, int], int]]:
    """Merge every ``a b`` in ``symbols`` (in place, left to right, no overlap); return the pair-count
    changes ``((left, right), +1 / -1)`` for the neighbours, as ``Word::merge`` in tokenizers does
    (the merged pair's own count is left as it was, as there)."""
    changes, i = [], 0
    while i < len(symbols):
        if symbols[i] == a and i + 1 < len(symbols) and symbols[i + 1] == b:
            if i > 0:
                changes += [((symbols[i - 1], a), -1), ((symbols[i - 1], new), 1)]
            symbols[i:i + 2] = [new]
            if i < len(symbols) - 1:
                changes += [((b, symbols[i + 1]), -1), ((new, symbols[i + 1]), 1)]
        i += 1
    return changes


def check_texts(texts) -> list[str]:
    """``texts`` (an iterable of str, not one str) as a list; ``ValueError`` if no text holds a character."""
    if isinstance(texts, str) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be an iterable of str (wrap a single text as [text]), got {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts must hold only str, got {type(t).__name__} at index {i}")
    if not any(texts):
        raise ValueError(f"texts must hold at least one non-empty str, got {len(texts)} empty text(s)")
    return texts


def train_bpe(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 0) -> BPETokenizer:
    """Learn a byte-level BPE tokenizer with ``vocab_size`` tokens (256 bytes + merges) from ``texts``.

    ``texts``: an iterable of documents (str). Stops early, with fewer tokens, when every piece of the
    corpus has become a single token or the best pair occurs fewer than ``min_frequency`` times.
    Same merges, order and ids as ``tokenizers``' ``BpeTrainer`` with the same ``vocab_size`` and
    ``min_frequency`` (see the module docstring for the rules that make them equal).
    """
    texts = check_texts(texts)
    vocab_size = check_int("vocab_size", vocab_size, low=len(ALPHABET))
    min_frequency = check_int("min_frequency", min_frequency, low=0)
    piece_counts = Counter(p for t in texts for p in pretokenize(t))
    id_of = {c: i for i, c in enumerate(ALPHABET)}
    tokens = list(ALPHABET)  # id -> token string
    words = [[id_of[c] for c in piece] for piece in piece_counts]
    counts = list(piece_counts.values())

    # Pair counts (weighted by piece frequency) and, for each pair, the pieces that hold it.
    pair_count: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, (symbols, n) in enumerate(zip(words, counts)):
        for pair in zip(symbols, symbols[1:]):
            pair_count[pair] += n
            where[pair].add(w)
    # Max-heap on (count, then the smaller pair): entries (-count, pair, tie, pieces). `tie` keeps
    # entries of one pair and count apart (tokenizers leaves their order unspecified).
    tie = itertools.count()
    heap = [(-c, pair, next(tie), where[pair]) for pair, c in pair_count.items() if c > 0]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    while len(id_of) < vocab_size and heap:
        neg_count, pair, _, pieces = heapq.heappop(heap)
        count = _u64(pair_count[pair])
        if -neg_count != count:  # stale: requeue with the current count
            heapq.heappush(heap, (-count, pair, next(tie), pieces))
            continue
        if count < 1 or count < min_frequency:
            break
        a, b = pair
        new_token = tokens[a] + tokens[b]
        if new_token not in id_of:  # the same string can be reached by two different pairs
            id_of[new_token] = len(tokens)
            tokens.append(new_token)
        new = id_of[new_token]
        merges.append(pair)
        # Merge in the pieces that hold the pair; update the counts of the pairs around it.
        created: dict[tuple[int, int], set[int]] = defaultdict(set)
        for w in pieces:
            for changed, delta in _merge_in_word(words[w], a, b, new):
                pair_count[changed] += delta * counts[w]
                if delta > 0:
                    created[changed].add(w)
        for changed, ws in created.items():
            if pair_count[changed] > 0:
                heapq.heappush(heap, (-pair_count[changed], changed, next(tie), ws))

    # tokenizers keeps a merge map: a pair merged twice keeps its last rank.
    last_rank = {pair: r for r, pair in enumerate(merges)}
    ranked = [pair for r, pair in enumerate(merges) if last_rank[pair] == r]
    return BPETokenizer([(tokens[a], tokens[b]) for a, b in ranked], dict(id_of))


class BPETokenizer:
    """A byte-level BPE tokenizer: ``merges`` (pairs of token strings, in rank order) and ``vocab``.

    ``vocab`` maps token string -> id. Without it, the 256 byte characters get ids 0..255 (see
    :data:`ALPHABET`) and merged tokens the next ids in merge order. :meth:`encode` / :meth:`decode`
    match a ``tokenizers`` BPE model with the same vocab and merges, ByteLevel pre-tokenizer and
    decoder — also for a vocabulary that lacks some byte characters (SmolLM2's lacks 21, bytes that
    valid UTF-8 never or rarely uses): like ``tokenizers`` without an unknown token, encoding drops
    such a byte (:attr:`missing_bytes`), so only a full byte alphabet guarantees ``decode(encode(s)) == s``.

    Immutable: ``merges`` is a fresh list on every read and ``vocab`` a read-only view, so the ranks
    and the encoding cache built here always describe the tokenizer's merges.
    """

    def __init__(self, merges: list[tuple[str, str]], vocab: dict[str, int] | None = None):
        merges = [tuple(m) for m in merges]
        for r, m in enumerate(merges):
            if len(m) != 2 or not all(isinstance(s, str) for s in m):
                raise TypeError(f"merges must hold pairs of str, got {m!r} at rank {r}")
        if vocab is None:
            vocab = {c: i for i, c in enumerate(ALPHABET)}
            for a, b in merges:
                vocab.setdefault(a + b, len(vocab))
        vocab = dict(vocab)
        if not all(isinstance(t, str) and isinstance(i, int) for t, i in vocab.items()):
            raise TypeError("vocab must map token strings to int ids")
        foreign = next((t for t in vocab if not set(t) <= CHAR_TO_BYTE.keys()), None)
        if foreign is not None:
            raise ValueError(f"vocab must be byte-level (its characters among the 256 byte characters), got {foreign!r}")
        ranks = {}
        for r, (a, b) in enumerate(merges):
            for s in (a, b, a + b):
                if s not in vocab:
                    raise ValueError(f"merges[{r}] = {(a, b)!r}: {s!r} is not in vocab")
            ranks[(vocab[a], vocab[b])] = (r, vocab[a + b])
        tokens = {i: t for t, i in vocab.items()}
        if len(tokens) != len(vocab):
            raise ValueError("vocab must give every token its own id")
        self._merges: tuple[tuple[str, str], ...] = tuple(merges)
        self._vocab = vocab
        self._ranks: dict[tuple[int, int], tuple[int, int]] = ranks
        self._tokens: dict[int, str] = tokens
        self._cache: dict[str, tuple[int, ...]] = {}  # piece -> ids: a memo, not state

    @property
    def merges(self) -> list[tuple[str, str]]:
        """The merges in rank order, as pairs of token strings (a copy: the tokenizer cannot change)."""
        return list(self._merges)

    @property
    def vocab(self) -> MappingProxyType:
        """Token string -> id, a read-only view."""
        return MappingProxyType(self._vocab)

    def __len__(self) -> int:
        return len(self._vocab)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab size {len(self.vocab)}, {len(self._merges)} merges)"

    @property
    def n_merges(self) -> int:
        return len(self._merges)

    @property
    def missing_bytes(self) -> tuple[int, ...]:
        """Byte values whose character is not in the vocabulary: encoding drops them."""
        return tuple(b for b, c in BYTE_TO_CHAR.items() if c not in self._vocab)

    def _apply_merges(self, symbols: list[int], steps: list | None = None) -> list[int]:
        """BPE on one piece's ids: merge the lowest-ranked adjacent pair (leftmost on a tie) until none
        is left; with ``steps``, append ``(rank, ids after the merge)`` for each merge made."""
        while len(symbols) > 1:
            best = None
            for i in range(len(symbols) - 1):
                found = self._ranks.get((symbols[i], symbols[i + 1]))
                if found is not None and (best is None or found[0] < best[0]):
                    best = (found[0], i, found[1])
            if best is None:
                break
            rank, i, new = best
            symbols[i:i + 2] = [new]
            if steps is not None:
                steps.append((rank, list(symbols)))
        return symbols

    def _byte_ids(self, piece: str) -> list[int]:
        return [self._vocab[c] for c in piece if c in self._vocab]  # a byte outside the vocabulary is dropped

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        cached = self._cache.get(piece)
        if cached is None:
            cached = self._cache[piece] = tuple(self._apply_merges(self._byte_ids(piece)))
        return cached

    def merge_steps(self, word: str) -> list[tuple[int, list[str]]]:
        """How BPE cuts one piece of text (a word with its leading space): ``(rank, tokens)`` after each
        merge that applies, starting from ``(-1, bytes)``. ``ValueError`` if ``word`` is several pieces."""
        pieces = pretokenize(check_str("word", word))
        if len(pieces) != 1:
            raise ValueError(f"word must be one pre-tokenized piece, got {len(pieces)}: {split_pieces(word)}")
        symbols = self._byte_ids(pieces[0])
        steps = [(-1, list(symbols))]
        self._apply_merges(symbols, steps)
        return [(rank, [self._tokens[i] for i in ids]) for rank, ids in steps]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, shape ``(n_tokens,)`` as a list."""
        pieces = pretokenize(check_str("text", text, allow_empty=True))
        return [i for piece in pieces for i in self._encode_piece(piece)]

    def tokens(self, text: str) -> list[str]:
        """The token strings of ``text`` in the byte-character alphabet (``"Ġthe"``), as ``tokenizers`` shows them."""
        return [self._tokens[i] for i in self.encode(text)]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token ``token_id`` stands for."""
        token_id = check_int("token_id", token_id, low=0)
        if token_id not in self._tokens:
            raise ValueError(f"token_id {token_id} is not in the vocabulary ({len(self.vocab)} tokens)")
        return bytes(CHAR_TO_BYTE[c] for c in self._tokens[token_id])

    def pieces(self, text: str) -> list[str]:
        """The text of each token of ``text`` (a token that ends inside a multi-byte character shows
        "\ufffd"; ``"".join(pieces) == text`` whenever every token holds whole characters)."""
        return [self.token_bytes(i).decode("utf-8", errors="replace") for i in self.encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ``ids``: their bytes joined and read as UTF-8 (invalid bytes -> "\ufffd")."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(f"ids must be an iterable of int token ids, got {type(ids).__name__}")
        ids = list(ids)
        for i, token_id in enumerate(ids):
            token_id = check_int(f"ids[{i}]", token_id, low=0)
            if token_id not in self._tokens:
                raise ValueError(f"ids[{i}] = {token_id} is not in the vocabulary ({len(self.vocab)} tokens)")
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def truncated(self, n_merges: int) -> BPETokenizer:
        """The tokenizer after the first ``n_merges`` merges: what training would have stopped at."""
        n_merges = check_int("n_merges", n_merges, low=0, high=len(self._merges))
        keep = set(ALPHABET) | {a + b for a, b in self._merges[:n_merges]}
        return BPETokenizer(list(self._merges[:n_merges]), {t: i for t, i in self.vocab.items() if t in keep})

    def to_tokenizers(self):
        """The same tokenizer as a ``tokenizers.Tokenizer`` (BPE model, ByteLevel pre-tokenizer and decoder)."""
        # tokenizers is only needed to compare with the library, not to train or encode.
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        tok = Tokenizer(models.BPE(vocab=dict(self.vocab), merges=list(self.merges)))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return tok

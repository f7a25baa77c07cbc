"""The texts notebook 10 tokenizes and what they cost in tokens. The texts are ours, shipped with the package
in ``llmlab/datafiles/tokenization/`` (:mod:`llmlab.paths`).

* ``corpus.txt``: about 27 kB of English prose in short essays, the training corpus; :func:`load_corpus`
  returns its paragraphs.
* ``samples/``: English prose, Python code and a table of numbers (:func:`load_samples`).
* ``parallel/``: one short library notice in ten languages and seven scripts (:func:`load_parallel`).

:func:`token_counts` measures tokens per byte and per character, the numbers that decide what a
text costs (price per token, context length) and that turn a per-token perplexity into bits per
byte: ``bits per byte = tokens per byte × log2(perplexity per token)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._checks import check_str
from ..paths import data_path
from .library import encode_ids

__all__ = ["load_corpus", "load_samples", "load_parallel", "TokenCount", "token_counts"]

#: Display order of the parallel texts (file stem in datafiles/tokenization/parallel/).
LANGUAGES = ("English", "French", "German", "Russian", "Greek", "Arabic", "Hindi", "Chinese", "Japanese", "Korean")
SAMPLES = {"English prose": "english.txt", "Python code": "code.txt", "numbers": "numbers.txt"}


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8").rstrip("\n")


def load_corpus() -> list[str]:
    """The training corpus as a list of paragraphs (titles included, as one-line paragraphs)."""
    text = _read(data_path("tokenization", "corpus.txt"))
    return [p.strip("\n") for p in text.split("\n\n") if p.strip()]


def load_samples() -> dict[str, str]:
    """``{"English prose": ..., "Python code": ..., "numbers": ...}``: texts not in the corpus."""
    folder = data_path("tokenization", "samples")
    return {name: _read(folder / file) for name, file in SAMPLES.items()}


def load_parallel() -> dict[str, str]:
    """``{language: text}``: the same notice (library opening hours) in ten languages, English first."""
    folder = data_path("tokenization", "parallel")
    return {lang: _read(folder / f"{lang}.txt") for lang in LANGUAGES}


@dataclass(frozen=True)
class TokenCount:
    """What one text costs under one tokenizer: ``n_tokens`` for ``n_bytes`` UTF-8 bytes / ``n_chars`` characters."""

    name: str
    n_tokens: int
    n_bytes: int
    n_chars: int

    @property
    def tokens_per_byte(self) -> float:
        return self.n_tokens / self.n_bytes

    @property
    def tokens_per_char(self) -> float:
        return self.n_tokens / self.n_chars

    @property
    def bytes_per_token(self) -> float:
        return self.n_bytes / self.n_tokens


def token_counts(tokenizer, texts: dict[str, str]) -> list[TokenCount]:
    """One :class:`TokenCount` per ``{name: text}`` (no special tokens counted), in the dict's order.

    ``tokenizer``: a :class:`~llmlab.tokenization.BPETokenizer`, a ``tokenizers.Tokenizer`` or a
    ``transformers`` tokenizer.
    """
    if not isinstance(texts, dict):
        raise TypeError(f"texts must be a dict {{name: text}}, got {type(texts).__name__}")
    if not texts:
        raise ValueError("texts must hold at least one text")
    return [TokenCount(name, len(encode_ids(tokenizer, check_str(f"texts[{name!r}]", text))),
                       len(text.encode("utf-8")), len(text))
            for name, text in texts.items()]

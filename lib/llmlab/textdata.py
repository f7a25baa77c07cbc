"""Real English text as language-model batches: Python's own documentation, cut into token rows.

``pydoc_data`` (installed with every Python) holds the reference manual's chapters: English prose
that needs no download. :func:`make_text_token_batch` cuts passages of it into right-padded rows of
varying length, the shape of a pre-training batch, for measuring what per-token losses do when
sequences differ in length (notebook 04's token-level accumulation trap).
"""

from __future__ import annotations

from pydoc_data.topics import topics  # Python's own documentation: English text installed everywhere

import torch
from torch import Tensor

from ._checks import check_length_range
from ._torch import IGNORE_INDEX, pad_id

__all__ = ["make_text_token_batch"]


def make_text_token_batch(tokenizer, batch_size: int = 32, max_len: int = 32, seed: int = 0, *,
                          min_len: int = 2) -> tuple[Tensor, Tensor]:
    """Like :func:`llmlab.accumulation.make_token_batch`, but real English: ``(inputs, targets)`` both (B, max_len − 1).

    Each row is a passage of Python's own documentation (``pydoc_data``, installed with Python):
    a chapter drawn at random, cut into ``tokenizer``'s tokens at a random paragraph start, to a
    length uniform in [min_len, max_len]. Rows are right-padded with the tokenizer's pad id (for
    a causal LM, right padding changes no real token's logits); targets are the inputs shifted
    by one, ``-100`` at padding. A row's first token has no context, so short rows have a higher
    mean loss per token than long ones, as in real pre-training data. To group by length, sort
    the rows: ``order = (targets != -100).sum(1).argsort()``.
    """
    batch_size, min_len, max_len, seed = check_length_range(batch_size, min_len, max_len, seed, high=4096)
    if not callable(tokenizer) or not hasattr(tokenizer, "eos_token_id"):
        raise TypeError(f"tokenizer must be a Hugging Face tokenizer (callable, with eos_token_id), got {type(tokenizer).__name__}")
    pad = pad_id(tokenizer, default=0)
    g = torch.Generator().manual_seed(seed)
    chapters = sorted(k for k, v in topics.items() if len(v) > 20 * max_len)
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=g).tolist()
    rows = []
    for length in lengths:
        text = topics[chapters[int(torch.randint(len(chapters), (1,), generator=g))]]
        starts = [0] + [i + 2 for i in range(len(text) - 2) if text[i:i + 2] == "\n\n" and text[i + 2:i + 3].strip()]
        start = starts[int(torch.randint(len(starts), (1,), generator=g))]
        ids = tokenizer(text[start:start + 20 * max_len], add_special_tokens=False).input_ids
        rows.append((ids * (max_len // max(len(ids), 1) + 1))[:length])  # a very short paragraph repeats
    tokens = torch.tensor([row + [pad] * (max_len - len(row)) for row in rows])
    real = torch.arange(max_len)[None, :] < torch.tensor(lengths)[:, None]
    return tokens[:, :-1], tokens[:, 1:].masked_fill(~real[:, 1:], IGNORE_INDEX)

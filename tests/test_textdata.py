"""llmlab.textdata: real English text (Python's documentation) as right-padded language-model batches."""

import pytest
import torch

from llmlab.models import default_model_dir
from llmlab.textdata import make_text_token_batch


def test_text_token_batch_is_real_right_padded_text(tiny_llama):
    """make_text_token_batch: seeded passages of Python's documentation, lengths in [min_len, max_len],
    right-padded, targets = inputs shifted by one with -100 at padding; and for a causal model the
    padding changes no real token's logits (so one padded forward scores every row exactly)."""
    from transformers import AutoTokenizer  # slow to import: only this test needs it

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir(), local_files_only=True)
    inputs, targets = make_text_token_batch(tokenizer, 16, max_len=12, seed=3)
    again, _ = make_text_token_batch(tokenizer, 16, max_len=12, seed=3)
    assert inputs.shape == targets.shape == (16, 11) and torch.equal(inputs, again)
    assert not torch.equal(inputs, make_text_token_batch(tokenizer, 16, max_len=12, seed=4)[0])
    lengths = (targets != -100).sum(1) + 1                            # tokens per row, padding excluded
    assert lengths.min() >= 2 and lengths.max() <= 12 and len(set(lengths.tolist())) > 3
    for row, tgt, n in zip(inputs, targets, lengths.tolist()):
        assert torch.equal(tgt[: n - 1], row[1:n]) and (tgt[n - 1:] == -100).all()  # shifted by one, then ignored
        assert (row[n:] == tokenizer.pad_token_id).all()                             # right padding
    text = tokenizer.decode(inputs[lengths.argmax(), : lengths.max()])
    assert sum(c.isalpha() for c in text) > len(text) / 2              # English words, not ids of noise
    # right padding: a causal model gives each real position the same logits as without the padding
    small = inputs % 97                                                # ids the tiny model knows
    with torch.no_grad():
        padded = tiny_llama(small).logits
        for i in range(3):
            alone = tiny_llama(small[i : i + 1, : int(lengths[i])]).logits
            torch.testing.assert_close(padded[i, : int(lengths[i])], alone[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [({"batch_size": 0}, "batch_size"), ({"max_len": 1}, "max_len"),
                                           ({"min_len": 40}, "min_len"), ({"seed": -1}, "seed")])
def test_text_token_batch_bad_arguments(kwargs, match):

    with pytest.raises(ValueError, match=match):
        make_text_token_batch(None, **kwargs)


def test_text_token_batch_wants_a_tokenizer():
    with pytest.raises(TypeError, match="tokenizer"):
        make_text_token_batch("gpt2", 4)

"""llmlab.data: the date-formatting instruction set, its masked tokenisation, batching and scoring."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmlab.data import (IGNORE_INDEX, collate, exact_match, format_prompt, greedy_answers, left_pad, load_instructions,
                         make_batches, make_date_instructions, response_scores, tokenize_example, write_instructions)

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- data


def test_instruction_data_is_deterministic_and_well_formed():
    train, heldout = make_date_instructions(40, 10, seed=3)
    assert (train, heldout) == make_date_instructions(40, 10, seed=3)
    assert train != make_date_instructions(40, 10, seed=4)[0]
    for ex in train + heldout:
        assert set(ex) == {"instruction", "input", "output", "text"}
        assert ex["text"] == format_prompt(ex["instruction"], ex["input"]) + ex["output"]
        assert "### Response:\n" in ex["text"]
        y, m, d = ex["output"].split("-")
        assert len(y) == 4 and len(m) == 2 and len(d) == 2
        assert str(int(y)) in ex["input"] and str(int(d)) in ex["input"]
    assert not {ex["output"] for ex in train} & {ex["output"] for ex in heldout}


def test_committed_files_are_what_the_script_writes(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "data" / "make_instructions.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for split in ("train", "heldout"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (ROOT / "lib" / "llmlab" / "datafiles" / "instructions" / f"{split}.jsonl").read_bytes()
    train = load_instructions("train")
    assert len(train) == 512 and len(load_instructions("heldout")) == 64
    assert (train, load_instructions("heldout")) == make_date_instructions()  # also the fallback without files
    row = json.loads((ROOT / "lib" / "llmlab" / "datafiles" / "instructions" / "train.jsonl").read_text().splitlines()[0])
    assert row == train[0]
    with pytest.raises(ValueError, match="split"):
        load_instructions("test")


def test_write_and_load_roundtrip(tmp_path):
    write_instructions(tmp_path, 5, 2, seed=1)
    assert load_instructions("heldout", folder=tmp_path) == make_date_instructions(5, 2, seed=1)[1]


class CharTokenizer:
    """A stand-in tokenizer: one id per character, EOS = 2, pad = 0."""

    eos_token_id, pad_token_id = 2, 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + ord(c) % 90 for c in text]}


def test_tokenize_example_masks_the_prompt():
    ex = {"instruction": "Do it.", "input": "May 1, 2000", "output": "2000-05-01"}
    tok = CharTokenizer()
    f = tokenize_example(ex, tok)
    n_prompt = len(format_prompt(ex["instruction"], ex["input"]))
    assert len(f["input_ids"]) == len(f["labels"]) == n_prompt + len(ex["output"]) + 1
    assert f["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert f["labels"][n_prompt:] == f["input_ids"][n_prompt:]
    assert f["input_ids"][-1] == tok.eos_token_id
    cut = n_prompt + 3  # truncation from the right keeps the prompt and the first response tokens
    assert tokenize_example(ex, tok, max_length=cut)["input_ids"] == f["input_ids"][:cut]
    with pytest.raises(TypeError, match="instruction/input/output"):
        tokenize_example({"instruction": "a", "input": "b"}, tok)


@pytest.mark.parametrize("max_length", [1, 10, None])
def test_tokenize_example_refuses_a_max_length_that_leaves_no_response(max_length):
    """Every label -100 gives a NaN loss: refused, whether the prompt just fits or is longer."""
    ex = {"instruction": "Do it.", "input": "May 1, 2000", "output": "2000-05-01"}
    tok = CharTokenizer()
    n_prompt = len(format_prompt(ex["instruction"], ex["input"]))
    max_length = n_prompt if max_length is None else max_length
    with pytest.raises(ValueError, match="leaves no response token"):
        tokenize_example(ex, tok, max_length=max_length)


@pytest.mark.parametrize("bad, exc", [(None, TypeError), (5, TypeError), (["a"], TypeError), ("", ValueError)])
def test_format_prompt_refuses_what_is_not_text(bad, exc):
    """format_prompt(None) used to insert the text "None" into the prompt."""
    with pytest.raises(exc, match="instruction"):
        format_prompt(bad)
    with pytest.raises(TypeError, match="input"):
        format_prompt("Do it.", 5)


@pytest.mark.slow
def test_tokenize_example_with_the_real_tokenizer(default_lm):
    _, tokenizer = default_lm
    ex = load_instructions("heldout")[0]
    f = tokenize_example(ex, tokenizer)
    response = [i for i, lab in zip(f["input_ids"], f["labels"]) if lab != IGNORE_INDEX]
    assert tokenizer.decode(response) == ex["output"] + tokenizer.eos_token
    prompt = [i for i, lab in zip(f["input_ids"], f["labels"]) if lab == IGNORE_INDEX]
    assert tokenizer.decode(prompt) == format_prompt(ex["instruction"], ex["input"])


def test_collate_pads_right_and_ignores_padding():
    feats = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    b = collate(feats, pad_token_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b.labels.tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_masked_loss_is_the_mean_over_response_tokens_only(tiny_llama):
    feats = [{"input_ids": [5, 6, 7, 9, 2], "labels": [-100, -100, 7, 9, 2]}, {"input_ids": [8, 4, 2], "labels": [-100, 4, 2]}]
    b = collate(feats, pad_token_id=0)
    with torch.no_grad():
        out = tiny_llama(**b.as_kwargs())
        logp = out.logits.log_softmax(-1)
    nll = [-logp[0, 1, 7], -logp[0, 2, 9], -logp[0, 3, 2], -logp[1, 0, 4], -logp[1, 1, 2]]
    torch.testing.assert_close(out.loss, torch.stack(nll).mean())


def test_make_batches_is_seeded_and_covers_the_data():
    tok = CharTokenizer()
    examples = make_date_instructions(10, 1)[0]
    a = make_batches(examples, tok, batch_size=4, steps=5, seed=0)
    b = make_batches(examples, tok, batch_size=4, steps=5, seed=0)
    assert all(torch.equal(x.input_ids, y.input_ids) for x, y in zip(a, b))
    assert len(a) == 5 and a[0].input_ids.shape[0] == 4
    with pytest.raises(ValueError, match="batch_size"):
        make_batches(examples, tok, batch_size=0, steps=1)


def test_left_pad_ends_every_row_at_the_right_edge():
    input_ids, mask = left_pad([[5, 6, 7], [8], []], pad=0)
    assert input_ids.dtype == mask.dtype == torch.long
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_greedy_answers_in_one_padded_batch_equal_one_prompt_at_a_time(tiny_llama, char_tokenizer):
    """The left padding is invisible: each answer is what ``generate`` gives that prompt alone
    (float64, so that no near-tie can flip an argmax). The model's train mode is given back."""
    model = copy.deepcopy(tiny_llama).double().train()
    tok = char_tokenizer
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ("The cat", "A much longer prompt here", "x")]
    batched = greedy_answers(model, tok, prompts, max_new_tokens=6)
    assert model.training
    model.eval()
    alone = []
    for p in prompts:
        out = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), do_sample=False,
                             max_new_tokens=6, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        alone.append(tok.decode(out[0, len(p):], skip_special_tokens=True).strip())
    assert batched == alone and any(batched)


@pytest.mark.slow
def test_exact_match_scores_the_true_answers(default_lm):
    model, tokenizer = default_lm
    heldout = load_instructions("heldout")[:4]
    result = exact_match(model, tokenizer, heldout, max_new_tokens=12)
    with pytest.raises(ValueError, match="max_new_tokens"):
        exact_match(model, tokenizer, heldout, max_new_tokens=0)
    assert len(result.predictions) == 4 and result.targets == [ex["output"] for ex in heldout]
    assert len(result.stopped) == 4
    assert result.accuracy == sum(p == t and s for p, t, s in zip(result.predictions, result.targets, result.stopped)) / 4


def test_response_scores_per_example_nll_and_exact(tiny_llama):
    feats = [{"input_ids": [5, 6, 7, 9, 2], "labels": [-100, -100, 7, 9, 2]}, {"input_ids": [8, 4, 2], "labels": [-100, 4, 2]}]
    b = collate(feats, pad_token_id=0)
    with torch.no_grad():
        logp = tiny_llama(input_ids=b.input_ids, attention_mask=b.attention_mask).logits.log_softmax(-1)
    scores = response_scores(tiny_llama, [b])
    want = torch.stack([-(logp[0, 1, 7] + logp[0, 2, 9] + logp[0, 3, 2]) / 3, -(logp[1, 0, 4] + logp[1, 1, 2]) / 2])
    torch.testing.assert_close(scores.nll, want)
    top = logp.argmax(-1)
    assert scores.exact.tolist() == [bool(top[0, 1] == 7 and top[0, 2] == 9 and top[0, 3] == 2),
                                     bool(top[1, 0] == 4 and top[1, 1] == 2)]
    # the token-weighted mean of the per-example losses is the masked loss
    weights = torch.tensor([3.0, 2.0])
    torch.testing.assert_close((scores.nll * weights).sum() / weights.sum(), tiny_llama(**b.as_kwargs()).loss.detach())


def _memorise(model, batch, steps=60):
    """Teach ``model`` one batch by heart: AdamW at 1e-2 for ``steps`` updates, then eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        model(**batch.as_kwargs()).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def test_response_scores_exact_is_greedy_exact_match(tiny_llama, char_tokenizer):
    """Teach the tiny model one answer by heart: the teacher-forced check and generating agree, example by
    example (the memorised one right, the other wrong)."""
    tok = char_tokenizer
    examples = make_date_instructions(2, 1, seed=3)[0]
    model = copy.deepcopy(tiny_llama)
    batch = make_batches(examples[:1], tok, batch_size=1, steps=1)[0]
    _memorise(model, batch)
    scores = response_scores(model, make_batches(examples, tok, batch_size=2, steps=1))
    generated = exact_match(model, tok, examples)
    assert scores.exact.tolist() == [p == t and s for p, t, s in zip(generated.predictions, generated.targets,
                                                                         generated.stopped)] == [True, False]
    assert generated.accuracy == 0.5
    assert scores.nll[0] < 0.05 < scores.nll[1]


def test_response_scores_refuses_bad_batches(tiny_llama):
    empty = collate([{"input_ids": [5, 6], "labels": [-100, -100]}], pad_token_id=0)
    with pytest.raises(ValueError, match="batches"):
        response_scores(tiny_llama, [empty])
    with pytest.raises(TypeError, match="batches"):
        response_scores(tiny_llama, [{"input_ids": torch.ones(1, 2, dtype=torch.long)}])


def test_exact_match_needs_the_model_to_stop(tiny_llama, char_tokenizer):
    """The right answer followed by more text is wrong, even when the token budget cuts the rest off and
    stripping would hide it: taught an answer without its end-of-text, the tiny model writes it and goes on."""
    tok = char_tokenizer
    example = make_date_instructions(1, 1, seed=4)[0][0]
    features = tokenize_example(example, tok)
    features = {k: v[:-1] + [tok(" ", add_special_tokens=False)["input_ids"][0]] * 3 for k, v in features.items()}
    batch = collate([features], pad_token_id=0)   # the answer, then three spaces instead of the end-of-text
    model = copy.deepcopy(tiny_llama)
    _memorise(model, batch)
    n = len(tok(example["output"], add_special_tokens=False)["input_ids"])
    cut = exact_match(model, tok, [example], max_new_tokens=n + 3)   # the answer and the spaces, nothing more
    assert cut.predictions == [example["output"]] and cut.stopped == [False] and cut.accuracy == 0.0
    assert not bool(response_scores(model, make_batches([example], tok, batch_size=1, steps=1)).exact[0])
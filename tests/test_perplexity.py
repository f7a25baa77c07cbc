"""llmlab.perplexity against a brute-force per-token reference and against Hugging Face's own loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import requires_cuda
from llmlab.modelinfo import context_size
from llmlab.perplexity import (
    PerplexityResult,
    bits_per_byte,
    forward_tokens,
    perplexity,
    sliding_windows,
    token_nlls,
)


def reference_nlls(model, ids, *, max_length, stride):
    """One forward pass per token: -log p(x_t | x_b .. x_{t-1}) with b the start of the first window
    (0, stride, 2*stride, ...) whose max_length input tokens reach x_{t-1}, i.e. b + max_length >= t."""
    ids = ids.reshape(-1)
    out = []
    with torch.no_grad():
        for t in range(1, ids.numel()):
            b = stride * math.ceil(max(0, t - max_length) / stride)
            logits = model(input_ids=ids[None, b:t]).logits[0, -1]
            out.append(-torch.log_softmax(logits.double(), -1)[ids[t]])
    return torch.stack(out).float()


def hf_guide_windows(model, ids, *, max_length, stride):
    """The Hugging Face perplexity guide's loop: for each window, the model's mean loss and the window's labels
    (-100 on tokens an earlier window already scored)."""
    ids = ids.reshape(1, -1)
    seq_len, prev_end = ids.shape[1], 0
    with torch.no_grad():
        for begin in range(0, seq_len, stride):
            end = min(begin + max_length, seq_len)
            trg_len = end - prev_end
            x = ids[:, begin:end]
            labels = x.clone()
            labels[:, :-trg_len] = -100
            yield model(input_ids=x, labels=labels).loss.item(), labels
            prev_end = end
            if end == seq_len:
                break


def hf_guide_sum(model, ids, *, max_length, stride):
    """The guide's loop, but summing each window's mean loss times the number of tokens that loss averages."""
    total, count = 0.0, 0
    for loss, labels in hf_guide_windows(model, ids, max_length=max_length, stride=stride):
        n_loss = int((labels[:, 1:] != -100).sum())  # the loss shifts labels by one
        total += loss * n_loss
        count += n_loss
    return total, count


def hf_guide_current(model, ids, *, max_length, stride):
    """The current guide's loop as it stands since huggingface/transformers#34387 (late 2024): its
    nll_sum and n_tokens (``num_valid_tokens - batch_size`` per window), and the number of windows."""
    nll_sum, n_tokens, n_windows = 0.0, 0, 0
    for loss, target in hf_guide_windows(model, ids, max_length=max_length, stride=stride):
        num_loss_tokens = int((target != -100).sum()) - target.size(0)
        nll_sum += loss * num_loss_tokens
        n_tokens += num_loss_tokens
        n_windows += 1
    return nll_sum, n_tokens, n_windows


def random_ids(n, vocab=97, seed=1):
    return torch.randint(3, vocab, (n,), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- windows
@pytest.mark.parametrize("n,max_length,stride", [(10, 4, 4), (10, 4, 1), (10, 4, 3), (5, 10, 3), (2, 1, 1), (37, 8, 5)])
def test_windows_score_every_token_once(n, max_length, stride):
    windows = sliding_windows(n, max_length=max_length, stride=stride)
    targets = [t for w in windows for t in range(w.first_target, w.end + 1)]
    assert targets == list(range(1, n))
    for k, w in enumerate(windows):
        assert w.begin == k * stride
        assert 1 <= w.length <= max_length
        assert w.begin < w.first_target  # at least one token of context
    assert forward_tokens(n, max_length=max_length, stride=stride) == sum(w.length for w in windows)


def test_smaller_stride_costs_more():
    costs = [forward_tokens(1000, max_length=64, stride=s) for s in (64, 32, 16, 8, 1)]
    assert costs == sorted(costs) and costs[0] == 999 and costs[-1] > 60 * 900


# ---------------------------------------------------------------------------- tiny models
@pytest.fixture(params=["tiny_gpt2", "tiny_llama"])
def tiny(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("max_length,stride", [(12, 12), (12, 1), (7, 3), (40, 40)])
def test_token_nlls_match_brute_force(tiny, max_length, stride):
    ids = random_ids(41)
    ours = token_nlls(tiny, ids, max_length=max_length, stride=stride)
    ref = reference_nlls(tiny, ids, max_length=max_length, stride=stride)
    assert ours.shape == (40,) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("max_length,stride", [(16, 5), (6, 1), (9, 8)])
def test_matches_hf_loss_of_the_guide_loop(tiny, max_length, stride):
    """With stride < window, the guide's windows of L tokens give every token the same context as
    ours with max_length = L - 1 (ours uses the window's last logit too); its loss agrees exactly."""
    ids = random_ids(35, seed=3)
    total, count = hf_guide_sum(tiny, ids, max_length=max_length, stride=stride)
    nll = token_nlls(tiny, ids, max_length=max_length - 1, stride=stride)
    assert count == nll.numel() == 34
    assert nll.double().sum().item() == pytest.approx(total, rel=1e-5)


def test_the_current_guide_loop_is_off_by_one_token_per_window(tiny):
    """What perplexity.py's docstring says of the guide: with stride < max_length it scores every
    token once but counts each window after the first one token short; with stride == max_length
    its count is right, but each later window's first token is never scored."""
    ids = random_ids(35, seed=3)
    _, count = hf_guide_sum(tiny, ids, max_length=16, stride=5)
    _, n_tokens, n_windows = hf_guide_current(tiny, ids, max_length=16, stride=5)
    assert count == 34 and n_windows == 5 and n_tokens == count - (n_windows - 1)
    total, count = hf_guide_sum(tiny, ids, max_length=10, stride=10)
    nll_sum, n_tokens, n_windows = hf_guide_current(tiny, ids, max_length=10, stride=10)
    assert n_windows == 4 and n_tokens == count == 34 - (n_windows - 1)  # tokens 10, 20, 30 unscored
    assert nll_sum == pytest.approx(total, rel=1e-6)
    assert token_nlls(tiny, ids, max_length=10, stride=10).numel() == 34  # llmlab scores all of them

def test_exp_mean_nll_is_perplexity(tiny):
    ids = random_ids(45)
    nll = token_nlls(tiny, ids, max_length=12, stride=5)
    result = perplexity(tiny, ids, max_length=12, stride=5)
    assert isinstance(result, PerplexityResult)
    assert result.n_tokens == 44
    assert result.mean_nll == pytest.approx(nll.double().mean().item(), rel=1e-9)
    assert result.ppl == pytest.approx(math.exp(nll.double().mean().item()), rel=1e-9)


@pytest.mark.parametrize("max_length,stride,batch_size", [(16, 4, 3), (10, 10, 2), (12, 1, 64)])
def test_batched_equals_unbatched(tiny, batch_size, max_length, stride):
    ids = random_ids(58, seed=2)  # windows do not tile 58 evenly: the last one is shorter
    one = token_nlls(tiny, ids, max_length=max_length, stride=stride)
    many = token_nlls(tiny, ids, max_length=max_length, stride=stride, batch_size=batch_size)
    torch.testing.assert_close(many, one, atol=1e-5, rtol=1e-5)
    r1 = perplexity(tiny, ids, max_length=max_length, stride=stride)
    rb = perplexity(tiny, ids, max_length=max_length, stride=stride, batch_size=batch_size)
    assert rb.n_tokens == r1.n_tokens and rb.ppl == pytest.approx(r1.ppl, rel=1e-5)


def test_defaults_are_the_context_size(tiny_gpt2):
    ids = random_ids(150)  # tiny_gpt2 has n_positions = 64
    assert context_size(tiny_gpt2) == 64
    r_default = perplexity(tiny_gpt2, ids)
    r_explicit = perplexity(tiny_gpt2, ids, max_length=64, stride=64)
    assert r_default == r_explicit and r_default.n_tokens == 149
    assert perplexity(tiny_gpt2, ids, max_length=32) == perplexity(tiny_gpt2, ids, max_length=32, stride=32)


def test_shapes_seq_and_one_by_seq_agree(tiny_llama):
    ids = random_ids(30)
    a = token_nlls(tiny_llama, ids, max_length=8, stride=3)
    b = token_nlls(tiny_llama, ids[None], max_length=8, stride=3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert perplexity(tiny_llama, ids.int(), max_length=8) == perplexity(tiny_llama, ids[None], max_length=8)


class UniformLM(torch.nn.Module):
    """A 'model' whose next-token distribution is uniform over the vocabulary, whatever the input."""

    def __init__(self, vocab, n_positions=32):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab = vocab
        self.config = type("Config", (), {"n_positions": n_positions})()

    def forward(self, input_ids):  # no logits_to_keep: exercises the full-logits path
        b, t = input_ids.shape
        return type("Out", (), {"logits": self.w.expand(b, t, self.vocab) * 0})()


def test_uniform_model_has_perplexity_equal_to_vocab():
    ids = random_ids(100, vocab=50)
    for stride in (1, 7, 32):
        result = perplexity(UniformLM(50), ids, max_length=32, stride=stride, batch_size=4)
        assert result.ppl == pytest.approx(50.0, rel=1e-6)
        assert result.mean_nll == pytest.approx(math.log(50), rel=1e-6)


class NoKeepWrapper(torch.nn.Module):
    """A causal LM whose forward takes only input_ids (no logits_to_keep)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids):
        return self.model(input_ids=input_ids)


def test_models_without_logits_to_keep(tiny_llama):
    ids = random_ids(40)
    torch.testing.assert_close(
        token_nlls(NoKeepWrapper(tiny_llama), ids, max_length=10, stride=4, batch_size=3),
        token_nlls(tiny_llama, ids, max_length=10, stride=4), atol=1e-5, rtol=1e-5)


def test_chunked_nll_equals_cross_entropy():
    from llmlab.perplexity import _nll

    logits = torch.randn(2, 11, 50, generator=torch.Generator().manual_seed(0)) * 5
    targets = torch.randint(0, 50, (2, 11), generator=torch.Generator().manual_seed(1))
    expected = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    torch.testing.assert_close(_nll(logits, targets, chunk=3), expected)
    torch.testing.assert_close(_nll(logits.bfloat16(), targets), F.cross_entropy(
        logits.bfloat16().float().transpose(1, 2), targets, reduction="none"))


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"max_length": 16, "stride": 0}, r"stride must be an int in \[1, 16\], got 0"),
        ({"max_length": 16, "stride": 17}, r"stride must be an int in \[1, 16\], got 17"),
        ({"max_length": 65, "stride": 8}, r"max_length must be an int in \[1, 64\], got 65"),
        ({"max_length": 0, "stride": 1}, r"max_length must be an int in \[1, 64\], got 0"),
        ({"max_length": 16, "stride": 4, "batch_size": 0}, "batch_size must be an int >= 1, got 0"),
    ],
)
def test_bad_window_arguments(tiny_gpt2, kwargs, match):
    ids = random_ids(20)
    with pytest.raises(ValueError, match=match):
        perplexity(tiny_gpt2, ids, **kwargs)
    with pytest.raises(ValueError, match=match):
        token_nlls(tiny_gpt2, ids, **{"batch_size": 1, **kwargs})


def test_bad_inputs(tiny_gpt2):
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(tiny_gpt2, torch.tensor([5]))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        token_nlls(tiny_gpt2, torch.zeros(1, 0, dtype=torch.long), max_length=8, stride=8)
    with pytest.raises(ValueError, match=r"shape \(seq,\) or \(1, seq\)"):
        perplexity(tiny_gpt2, random_ids(20).reshape(2, 10))
    with pytest.raises(TypeError, match="integer token ids"):
        perplexity(tiny_gpt2, torch.rand(10))
    with pytest.raises(TypeError, match="torch.Tensor"):
        perplexity(tiny_gpt2, [1, 2, 3])
    with pytest.raises(TypeError, match="stride must be an int"):
        perplexity(tiny_gpt2, random_ids(20), max_length=8, stride=2.0)
    with pytest.raises(ValueError, match="max_length is required"):
        no_config = UniformLM(50)
        no_config.config = None
        perplexity(no_config, random_ids(5))


def test_bits_per_byte():
    result = PerplexityResult(ppl=math.e, mean_nll=1.0, n_tokens=10)
    assert bits_per_byte(result, "x" * 10) == pytest.approx(1 / math.log(2))
    assert bits_per_byte(result, 20) == pytest.approx(0.5 / math.log(2))
    assert bits_per_byte(result, "é" * 5) == pytest.approx(1 / math.log(2))  # 2 UTF-8 bytes each
    assert bits_per_byte(result, b"abcde") == pytest.approx(2 / math.log(2))
    with pytest.raises(ValueError, match="at least 1 byte"):
        bits_per_byte(result, "")
    with pytest.raises(TypeError, match="PerplexityResult"):
        bits_per_byte(2.0, "abc")
    with pytest.raises(TypeError, match="str, bytes or a byte count"):
        bits_per_byte(result, 3.5)


@requires_cuda
def test_cuda_matches_cpu(tiny_llama):
    import copy

    ids = random_ids(50)
    cpu = perplexity(tiny_llama, ids, max_length=16, stride=4)
    gpu_model = copy.deepcopy(tiny_llama).cuda()
    gpu = perplexity(gpu_model, ids.cuda(), max_length=16, stride=4, batch_size=8)
    assert gpu.n_tokens == cpu.n_tokens and gpu.ppl == pytest.approx(cpu.ppl, rel=1e-4)
    # The result comes back on the device of the input ids, wherever the model runs.
    assert token_nlls(gpu_model, ids, max_length=16, stride=4).device.type == "cpu"
    assert token_nlls(gpu_model, ids.cuda(), max_length=16, stride=4).device.type == "cuda"


# ---------------------------------------------------------------------------- default model
TEXT = ("The quick brown fox jumps over the lazy dog. Perplexity is the exponentiated average "
        "negative log-likelihood of a sequence, and a lower value means a better model.")


@pytest.mark.slow
@pytest.mark.parametrize("max_length,stride", [(8, 8), (8, 1), (7, 3)])
def test_default_model_matches_brute_force(default_lm, max_length, stride):
    model, tokenizer = default_lm
    ids = tokenizer(TEXT, return_tensors="pt").input_ids[0, :20]  # brute force costs one pass per token
    ours = token_nlls(model, ids, max_length=max_length, stride=stride)
    ref = reference_nlls(model, ids, max_length=max_length, stride=stride)
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)
    batched = perplexity(model, ids, max_length=max_length, stride=stride, batch_size=4)
    assert batched.ppl == pytest.approx(math.exp(ours.double().mean().item()), rel=1e-5)
    assert batched.n_tokens == 19


@pytest.mark.slow
def test_default_model_natural_text_beats_shuffled(default_lm):
    model, tokenizer = default_lm
    ids = tokenizer(TEXT, return_tensors="pt").input_ids[0]
    shuffled = ids[torch.randperm(ids.numel(), generator=torch.Generator().manual_seed(0))]
    total, count = hf_guide_sum(model, ids, max_length=ids.numel(), stride=ids.numel())
    natural = perplexity(model, ids)  # the whole text fits one window of the default 8192
    assert natural.n_tokens == count and natural.mean_nll == pytest.approx(total / count, rel=1e-5)
    assert natural.ppl < 200 and perplexity(model, shuffled).ppl > 20 * natural.ppl


def test_token_ids_outside_the_vocabulary_are_a_value_error(tiny_llama):
    vocab = tiny_llama.config.vocab_size
    for bad in (vocab, vocab + 5, -1):
        ids = torch.tensor([1, 2, bad, 3])
        with pytest.raises(ValueError, match="input_ids must be token ids in"):
            token_nlls(tiny_llama, ids, max_length=16, stride=4)

"""llmlab.precision.activations: saved-for-backward bytes in fp32, under torch.autocast and in bf16."""

import pytest
import torch
from torch import nn

from llmlab import precision as P
from llmlab.memory import saved_activation_bytes
from llmlab.models import random_llama


@pytest.fixture(scope="module")
def curve():
    model = random_llama("tiny")
    return model, P.saved_bytes_curve(model, [64, 128, 256, 512])


def test_autocast_saves_one_bf16_copy_of_every_matmul_weight(curve):
    model, c = curve
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    intercept, slope = c.line("autocast")
    assert intercept == pytest.approx(2 * linear, abs=1)          # 2 bytes per matmul parameter, once per forward
    assert c.line("fp32")[0] == pytest.approx(0, abs=1) and c.line("bf16")[0] == pytest.approx(0, abs=1)


def test_lines_are_exact_and_ordered(curve):
    _, c = curve
    for mode in P.SAVED_BYTES_MODES:
        b0, b1 = c.line(mode)
        assert all(abs(b0 + b1 * t - s) < 1 for t, s in zip(c.tokens, c.saved[mode]))   # affine in tokens
    f, a, h = (c.line(m)[1] for m in ("fp32", "autocast", "bf16"))
    assert 0.45 < h / f < 0.7 and h < a < f   # bf16 about half; autocast keeps some fp32 (norms, upcasts)


def test_crossover_is_where_the_lines_meet(curve):
    _, c = curve
    t = c.crossover()
    (a0, a1), (f0, f1) = c.line("autocast"), c.line("fp32")
    assert a0 + a1 * t == pytest.approx(f0 + f1 * t)
    assert c.saved["autocast"][0] > c.saved["fp32"][0] or c.tokens[0] > t
    assert c.crossover("bf16") == 0.0                                 # bf16 saves from the first token


def test_matches_a_direct_measurement_under_autocast():
    model = random_llama("tiny")
    ids = torch.randint(0, model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        direct = saved_activation_bytes(model, {"input_ids": ids})
    c = P.saved_bytes_curve(model, [80, 160], modes=["autocast"], seed=3)
    assert c.saved["autocast"][0] == direct and set(c.saved) == {"autocast"}


def test_bad_inputs():
    model = random_llama("tiny")
    with pytest.raises(ValueError, match="tokens"):
        P.saved_bytes_curve(model, [64, 64]).line("fp32")
    with pytest.raises(ValueError, match="tokens"):
        P.saved_bytes_curve(model, [63, 128])
    with pytest.raises(ValueError, match="modes"):
        P.saved_bytes_curve(model, [64, 128], modes=["fp16"])
    with pytest.raises(ValueError, match="model"):
        P.saved_bytes_curve(random_llama("tiny", dtype=torch.bfloat16), [64, 128])
    with pytest.raises(TypeError, match="model"):
        P.saved_bytes_curve(nn.Linear(2, 2), [64, 128])

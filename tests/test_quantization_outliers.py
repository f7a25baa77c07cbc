"""llmlab.quantization.outliers: LLM.int8()'s matmul and outlier criterion, SmoothQuant's scales.

Peer for the vector-wise int8 product: PyTorch's own quantized tensors (``torch.quantize_per_channel`` /
``torch.int_repr``) give the same int8 codes for one absmax scale per row; the integer product is checked against
an int64 matmul of those codes. Cases after bitsandbytes tests/test_functional.py (test_int8_linear_matmul /
vectorwise quantization: row-wise absmax, threshold decomposition).
"""

from __future__ import annotations

import pytest
import torch

from llmlab.models import random_llama
from llmlab.quantization import int8_matmul, linear_inputs, outlier_features, smooth_scales


def _data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 48, generator=gen)
    x[:, 7] *= 30   # an outlier feature
    w = torch.randn(20, 48, generator=gen) * 0.1
    return x, w


def test_vectorwise_codes_match_torch_quantized_tensors():
    x, w = _data()
    sx = x.abs().amax(1) / 127
    sw = w.abs().amax(1) / 127
    qx = torch.int_repr(torch.quantize_per_channel(x, sx.double(), torch.zeros(64, dtype=torch.long), 0, torch.qint8))
    qw = torch.int_repr(torch.quantize_per_channel(w, sw.double(), torch.zeros(20, dtype=torch.long), 0, torch.qint8))
    ref = (qx.long() @ qw.long().T).double() * (sx.double()[:, None] * sw.double()[None, :])
    torch.testing.assert_close(int8_matmul(x, w), ref.float(), rtol=1e-6, atol=1e-6)


def test_decomposition_extremes():
    x, w = _data()
    exact = x @ w.T
    torch.testing.assert_close(int8_matmul(x, w, threshold=1e-9), exact, rtol=1e-5, atol=1e-5)  # all in float
    assert torch.equal(int8_matmul(x, w, threshold=1e9), int8_matmul(x, w))                   # none in float


def test_errors_rank_as_in_the_paper():
    x, w = _data()
    exact = (x.double() @ w.double().T)
    err = lambda y: ((y.double() - exact).norm() / exact.norm()).item()
    per_tensor, vectorwise, mixed = (err(int8_matmul(x, w, vectorwise=False)), err(int8_matmul(x, w)),
                                     err(int8_matmul(x, w, threshold=6.0)))
    assert mixed < 0.5 * vectorwise and vectorwise < per_tensor


def test_smooth_scales_keep_the_product_and_shrink_the_outlier():
    x, w = _data()
    s = smooth_scales(x.abs().amax(0), w, alpha=0.5)
    torch.testing.assert_close((x / s) @ (w * s).T, x @ w.T, rtol=1e-4, atol=1e-4)
    ratio = lambda a: (a.abs().amax(0).max() / a.abs().amax(0).median()).item()
    assert ratio(x / s) < ratio(x) / 3
    assert torch.equal(smooth_scales(torch.zeros(48), w), torch.ones(48))
    torch.testing.assert_close(smooth_scales(x.abs().amax(0), w, alpha=0.0), 1 / w.abs().amax(0))


def test_outlier_criterion():
    gen = torch.Generator().manual_seed(1)
    inputs = {}
    for layer in range(8):
        x = torch.randn(100, 16, generator=gen)
        if layer < 3:
            x[:10, 4] = 8.0            # dim 4: >= 6 at 10 % of tokens in 3 of 8 layers (37.5 %)
        if layer == 0:
            x[:3, 9] = 50.0            # dim 9: only 3 % of tokens
        if layer == 5:
            x[:20, 2] = -7.0           # dim 2: 20 % of tokens but one layer of 8 (12.5 %)
        inputs[f"model.layers.{layer}.self_attn.q_proj"] = x
    report = outlier_features(inputs)
    assert report.per_layer["model.layers.0.self_attn.q_proj"] == (4,)
    assert report.per_layer["model.layers.5.self_attn.q_proj"] == (2,)
    assert report.layers_per_dim == {("q_proj", 4): 3, ("q_proj", 2): 1}
    assert report.systematic == (("q_proj", 4),) and report.n_layers == {"q_proj": 8}


def test_linear_inputs_capture_what_each_linear_sees():
    model = random_llama("tiny")
    ids = torch.randint(3, 97, (1, 12), generator=torch.Generator().manual_seed(0))
    acts = linear_inputs(model, ids)
    assert len(acts) == 14 and all(a.shape[0] == 12 for a in acts.values())
    layer = model.model.layers[1].mlp.down_proj
    with torch.no_grad():
        hidden = model.model.layers[1].mlp.act_fn(model.model.layers[1].mlp.gate_proj(
            acts["model.layers.1.mlp.gate_proj"])) * model.model.layers[1].mlp.up_proj(acts["model.layers.1.mlp.up_proj"])
    torch.testing.assert_close(acts["model.layers.1.mlp.down_proj"], hidden)
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed
    with pytest.raises(ValueError, match="names"):
        linear_inputs(model, ids, names=["nope"])
    del layer

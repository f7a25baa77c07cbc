import numpy as np
import pytest
import torch

import llmlab


def test_default_device_is_best_available(monkeypatch):
    monkeypatch.delenv("LLMLAB_DEVICE", raising=False)
    dev = llmlab.default_device()
    if torch.cuda.is_available():
        assert dev.type == "cuda"
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        assert dev.type == "mps"
    else:
        assert dev.type == "cpu"


def test_default_device_override(monkeypatch):
    monkeypatch.setenv("LLMLAB_DEVICE", "cpu")
    assert llmlab.default_device() == torch.device("cpu")


def test_default_device_falls_back_to_cpu(monkeypatch):
    monkeypatch.delenv("LLMLAB_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert llmlab.default_device() == torch.device("cpu")


def test_seed_everything_repeats():
    llmlab.seed_everything(3)
    a = (torch.rand(3), np.random.rand(3))
    llmlab.seed_everything(3)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(TypeError, match="seed"):
        llmlab.seed_everything(1.5)

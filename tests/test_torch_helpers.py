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


# ---- llmlab._torch: the shared device / dtype / RNG helpers ---------------------------------

from torch import nn  # noqa: E402

from llmlab._torch import (IGNORE_INDEX, eval_mode, isolated_rng, model_device, pad_id,  # noqa: E402
                           replayed_rng, resolve_device, resolve_dtype, rng_state)


def test_seed_everything_range():
    with pytest.raises(ValueError, match="seed"):
        llmlab.seed_everything(2**70)
    with pytest.raises(ValueError, match="seed"):
        llmlab.seed_everything(-1)
    with pytest.raises(TypeError, match="seed"):
        llmlab.seed_everything(True)


def test_bogus_llmlab_device_names_the_variable(monkeypatch):
    monkeypatch.setenv("LLMLAB_DEVICE", "bogus")
    with pytest.raises(ValueError, match="LLMLAB_DEVICE"):
        llmlab.default_device()


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) == llmlab.default_device()
    with pytest.raises(ValueError, match="device"):
        resolve_device("bogus")
    with pytest.raises(TypeError, match="device"):
        resolve_device(1.5)
    with pytest.raises(TypeError, match="device"):
        resolve_device(True)
    with pytest.raises(ValueError, match="my_dev"):
        resolve_device("not-a-device", name="my_dev")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_resolve_device_without_cuda():
    with pytest.raises(ValueError, match="no CUDA"):
        resolve_device("cuda")


@pytest.mark.parametrize("name, dtype", [("fp16", torch.float16), ("half", torch.float16), ("BF16", torch.bfloat16),
                                         ("bfloat16", torch.bfloat16), ("float32", torch.float32),
                                         ("fp64", torch.float64), (torch.float32, torch.float32)])
def test_resolve_dtype_names(name, dtype):
    assert resolve_dtype(name) is dtype


def test_resolve_dtype_refusals():
    assert resolve_dtype(None, default=torch.float32) is torch.float32
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8")
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype(torch.int64)
    with pytest.raises(TypeError, match="dtype"):
        resolve_dtype(32)
    with pytest.raises(ValueError, match="precision"):
        resolve_dtype("fp32", name="precision", allowed=(torch.float16, torch.bfloat16))


def test_model_device():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")  # no parameters: the CPU


def test_isolated_rng_restores_the_callers_stream():
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    with isolated_rng(123):
        inside = torch.rand(4)
    assert torch.equal(torch.rand(4), expected)  # the caller's stream did not move
    with isolated_rng(123):
        assert torch.equal(torch.rand(4), inside)  # the same seed, the same numbers


@pytest.mark.parametrize("device", ["cuda:0", "mps"])
def test_rng_state_and_replay_use_the_accelerators_generator(monkeypatch, device):
    """A Dropout on a GPU draws from that device's generator, not the CPU's: rng_state must snapshot
    it and replayed_rng rewind it, then give the caller's state back. No GPU here: a CPU Generator
    stands in for the device's generator, behind torch.cuda's / torch.mps's get/set_rng_state."""
    dev = torch.device(device)
    fake = torch.Generator().manual_seed(7)
    module = torch.get_device_module(dev.type)
    monkeypatch.setattr(module, "get_rng_state", lambda device=None: fake.get_state())
    monkeypatch.setattr(module, "set_rng_state", lambda state, device=None: fake.set_state(state))
    if dev.type == "cuda":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    else:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    state = rng_state(dev)
    assert state.device == dev and state.device_state is not None
    first = torch.rand(5, generator=fake)              # the "forward pass" draws on the device
    after_forward, cpu_before = fake.get_state(), torch.get_rng_state()
    with replayed_rng(state):
        assert torch.equal(torch.rand(5, generator=fake), first)  # the replay draws the same numbers
        torch.rand(3)                                             # and may move the CPU stream too
    assert torch.equal(fake.get_state(), after_forward)          # the device's state given back
    assert torch.equal(torch.get_rng_state(), cpu_before)        # and the CPU's


def test_rng_state_on_the_cpu_has_no_device_state():
    state = rng_state("cpu")
    assert state.device_state is None
    first = torch.rand(4)
    with replayed_rng(state):
        assert torch.equal(torch.rand(4), first)
    assert not torch.equal(torch.rand(4), first)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_rng_state_on_a_real_gpu_replays_dropout():
    x = torch.ones(1000, device="cuda")
    state = rng_state(x.device)
    mask = torch.nn.functional.dropout(x, 0.5)
    with replayed_rng(state):
        assert torch.equal(torch.nn.functional.dropout(x, 0.5), mask)
    assert not torch.equal(torch.nn.functional.dropout(x, 0.5), mask)


def test_eval_mode_turns_dropout_off_and_gives_the_mode_back():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
    x = torch.ones(2, 4)
    with eval_mode(model) as same:
        assert same is model and not model.training and not model[1].training
        assert torch.equal(model(x), model(x))  # no Dropout mask
    assert model.training and model[1].training
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            raise RuntimeError("boom")
    assert model.training  # given back when the block raises
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training  # an eval model stays in eval


def test_pad_id_falls_back_to_eos_then_default():
    class Tok:
        def __init__(self, pad, eos):
            self.pad_token_id, self.eos_token_id = pad, eos

    assert pad_id(Tok(0, 2)) == 0  # a pad token of id 0 is a pad token, not "missing"
    assert pad_id(Tok(None, 2)) == 2
    assert pad_id(Tok(None, None)) is None and pad_id(Tok(None, None), default=0) == 0


def test_ignore_index_is_cross_entropys():
    logits = torch.randn(3, 5)
    target = torch.tensor([1, IGNORE_INDEX, 2])
    full = torch.nn.functional.cross_entropy(logits, target)
    kept = torch.nn.functional.cross_entropy(logits[[0, 2]], target[[0, 2]])
    assert torch.allclose(full, kept)

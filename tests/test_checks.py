"""llmlab._checks: one policy. TypeError for a wrong type, ValueError for a wrong value, messages name the argument."""

import numpy as np
import pytest
import torch
from torch import nn

from llmlab._checks import (check_batch_plan, check_bool, check_choice, check_eos_token_id, check_finite_tensor,
                            check_float, check_int, check_length_range, check_module, check_prompt_ids, check_same_length,
                            check_str, check_tensor, check_world_size, describe_range)


def test_describe_range():
    assert describe_range(1, 10) == "in [1, 10]"
    assert describe_range(0, 1, low_open=True, high_open=True) == "in (0, 1)"
    assert describe_range(0, low_open=True) == "> 0" and describe_range(1) == ">= 1"
    assert describe_range(high=5) == "<= 5" and describe_range(high=5, high_open=True) == "< 5"
    assert describe_range() == ""


# --- check_int --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), torch.tensor(3)])
def test_check_int_accepts_integers(value):
    out = check_int("k", value, low=1, high=5)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", [True, False, 3.0, "3", None, torch.tensor(3.0), torch.tensor([3])])
def test_check_int_refuses_other_types(value):
    with pytest.raises(TypeError, match=r"^k must be an int in \[1, 5\], got"):
        check_int("k", value, low=1, high=5)


def test_check_int_ranges_and_message():
    with pytest.raises(ValueError, match=r"^k must be an int in \[1, 512\], got 0$"):
        check_int("k", 0, low=1, high=512)
    with pytest.raises(ValueError, match=r"^steps must be an int >= 1, got -3$"):
        check_int("steps", -3, low=1)
    with pytest.raises(ValueError, match=r"^n must be an int <= 4, got 5$"):
        check_int("n", 5, high=4)
    assert check_int("n", -(10**20)) == -(10**20)  # no bounds: any int
    assert check_int("k", 1, low=1, high=1) == 1


# --- check_float ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2, 2.0, np.float32(2.0), np.int64(2), torch.tensor(2.0), torch.tensor(2)])
def test_check_float_accepts_real_numbers(value):
    out = check_float("lr", value, low=0)
    assert out == 2.0 and type(out) is float


@pytest.mark.parametrize("value", [True, "0.1", None, [0.1], torch.tensor([0.1]), 1j])
def test_check_float_refuses_other_types(value):
    with pytest.raises(TypeError, match=r"^lr must be a number, got"):
        check_float("lr", value)


def test_check_float_ranges_nan_and_inf():
    with pytest.raises(ValueError, match=r"^lr must be a number > 0, got 0.0$"):
        check_float("lr", 0.0, low=0, low_open=True)
    assert check_float("lr", 0.0, low=0) == 0.0
    with pytest.raises(ValueError, match=r"^p must be a number in \[0, 1\), got 1.0$"):
        check_float("p", 1.0, low=0, high=1, high_open=True)
    with pytest.raises(ValueError, match=r"^p must be a number in \[0, 1\], got -0.5$"):
        check_float("p", -0.5, low=0, high=1)
    with pytest.raises(ValueError, match=r"^x must be a finite number, got nan$"):
        check_float("x", float("nan"))
    with pytest.raises(ValueError, match=r"^x must be a finite number >= 0, got inf$"):
        check_float("x", float("inf"), low=0)
    assert check_float("x", float("inf"), finite=False) == float("inf")
    with pytest.raises(ValueError, match="x must be a finite number"):
        check_float("x", float("nan"), finite=False)  # NaN is never a value


# --- check_bool, check_choice, check_str ----------------------------------------------------------


def test_check_bool():
    assert check_bool("flag", True) is True and check_bool("flag", False) is False
    for value in (1, 0, "yes", None, np.bool_(True), torch.tensor(True)):
        with pytest.raises(TypeError, match=r"^flag must be True or False, got"):
            check_bool("flag", value)


def test_check_choice():
    assert check_choice("mode", "a", ("a", "b")) == "a"
    assert check_choice("opt", "sgd", {"sgd": 0, "adam": 2}) == "sgd"  # a dict: its keys
    with pytest.raises(ValueError, match=r"^mode must be one of \['a', 'b'\], got 'c'$"):
        check_choice("mode", "c", ["a", "b"])
    with pytest.raises(ValueError, match="mode must be one of"):
        check_choice("mode", ["a"], ("a", "b"))  # unhashable: refused, not a crash
    with pytest.raises(ValueError, match="mode must be one of"):
        check_choice("mode", None, ("a", "b"))


def test_check_str():
    assert check_str("name", "x") == "x" and check_str("name", "", allow_empty=True) == ""
    with pytest.raises(ValueError, match=r"^name must be a non-empty str$"):
        check_str("name", "")
    for value in (3, None, b"x", ["x"]):
        with pytest.raises(TypeError, match=r"^name must be a str, got"):
            check_str("name", value)


# --- tensors, modules, lengths ------------------------------------------------------------------------


def test_check_tensor():
    x = torch.zeros(2, 3)
    assert check_tensor("x", x, dim=2, floating=True, min_numel=6) is x
    assert check_tensor("x", x, dim=(1, 2)) is x
    ids = torch.zeros(4, dtype=torch.long)
    assert check_tensor("ids", ids, dim=1, integer=True) is ids
    with pytest.raises(TypeError, match=r"^x must be a torch.Tensor, got list$"):
        check_tensor("x", [1.0])
    with pytest.raises(ValueError, match=r"^x must be 1-D or 3-D, got shape \(2, 3\)$"):
        check_tensor("x", x, dim=(1, 3))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        check_tensor("x", ids, floating=True)
    with pytest.raises(TypeError, match="ids must hold integers"):
        check_tensor("ids", x, integer=True)
    with pytest.raises(TypeError, match="ids must hold integers"):
        check_tensor("ids", torch.zeros(2, dtype=torch.bool), integer=True)
    with pytest.raises(ValueError, match=r"x must hold at least 1 element"):
        check_tensor("x", torch.zeros(0), min_numel=1)


def test_check_finite_tensor():
    x = torch.tensor([1.0, 2.0])
    assert check_finite_tensor("x", x) is x
    assert check_finite_tensor("ids", torch.tensor([1, 2])) is not None  # integers are always finite
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match=r"^x must be finite"):
            check_finite_tensor("x", torch.tensor([1.0, bad]))


def test_check_prompt_ids():
    ids = torch.tensor([[1, 2, 3]])
    assert check_prompt_ids("input_ids", ids) is ids
    assert check_prompt_ids("input_ids", ids.int()) is not None
    with pytest.raises(TypeError, match=r"^input_ids must hold token ids as torch.long"):
        check_prompt_ids("input_ids", ids.to(torch.uint8))
    with pytest.raises(TypeError, match=r"^input_ids must hold integers"):
        check_prompt_ids("input_ids", ids.float())
    for bad in (torch.ones(2, 3, dtype=torch.long), torch.ones(1, 0, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"^input_ids must have shape \(1, prompt_len\)"):
            check_prompt_ids("input_ids", bad)


def test_check_module():
    layer = nn.Linear(2, 2)
    assert check_module("model", layer) is layer
    for value in (None, "gpt2", layer.weight, [layer]):
        with pytest.raises(TypeError, match=r"^model must be a torch.nn.Module, got"):
            check_module("model", value)


def test_check_same_length():
    assert check_same_length(ns=[1, 2], values=(3, 4)) == 2
    assert check_same_length() == 0
    assert check_same_length(a=[]) == 0
    with pytest.raises(ValueError, match=r"^ns and values must have the same length: ns has 3, values has 2$"):
        check_same_length(ns=[1, 2, 3], values=[1, 2])


def test_check_eos_token_id():
    assert check_eos_token_id(None) is None and check_eos_token_id(2) == 2
    with pytest.raises(ValueError, match=r"^eos_token_id must be"):
        check_eos_token_id(-1)
    with pytest.raises(TypeError, match=r"^eos_token_id must be"):
        check_eos_token_id("2")


def test_check_batch_plan():
    assert check_batch_plan(np.int64(4), 10, 0) == (4, 10, 0)
    with pytest.raises(ValueError, match=r"^batch_size must be an int in \[1, 4096\], got 5000$"):
        check_batch_plan(5000, 1, 0, max_batch_size=4096)
    with pytest.raises(ValueError, match=r"^steps must be an int in \[1, 10\], got 11$"):
        check_batch_plan(1, 11, 0, max_steps=10)
    with pytest.raises(ValueError, match=r"^seed must be an int >= 0"):
        check_batch_plan(1, 1, -1)


def test_check_length_range():
    assert check_length_range(3, 2, 8, 1, high=64) == (3, 2, 8, 1)
    with pytest.raises(ValueError, match=r"^need 2 <= min_len <= max_len, got min_len=9, max_len=8$"):
        check_length_range(1, 9, 8, 0, high=64)
    with pytest.raises(ValueError, match=r"^max_len must be an int in \[2, 64\]"):
        check_length_range(1, 2, 65, 0, high=64)
    with pytest.raises(TypeError, match=r"^batch_size must be an int"):
        check_length_range(True, 2, 8, 0, high=64)


def test_check_world_size():
    assert check_world_size(4, high=32, divides={"spec.batch": 8}) == 4
    with pytest.raises(ValueError, match=r"^spec.batch must be divisible by world_size, got 8 and 3$"):
        check_world_size(3, high=32, divides={"spec.batch": 8})
    with pytest.raises(ValueError, match=r"^world_size must be an int in \[2, 32\], got 1$"):
        check_world_size(1, low=2, high=32)

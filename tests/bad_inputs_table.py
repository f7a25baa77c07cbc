"""The bad-input table: every public callable of llmlab and the inputs a careful user gets wrong.

Each row is ``Case(target, arg, exc, call)``: calling ``call()`` must raise ``exc`` (``ValueError``
for a wrong value, ``TypeError`` for a wrong type) from llmlab's own code, with a message that
names ``arg``. ``tests/test_bad_inputs.py`` runs the table; ``python tests/test_bad_inputs.py``
prints the census (clear / silent / foreign / vague / runaway) used in issue 18's closing note.

A new public name must get rows here (a test checks every name in every module's ``__all__``),
or a place in ``NO_ARGUMENTS`` / ``RESULT_TYPES`` / ``INNER`` with the reason. Only entry points
(what a notebook or user calls) check their arguments (issue 23); ``INNER`` lists the public names
that are steps of an entry point and trust it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

import llmlab
from llmlab import _checks, _torch, accumulation, checkpointing, data, display, fitting, lora, memory, modelinfo, models
from llmlab import perplexity, precision, schedules, svd, timing, tokenization
from llmlab import decoding
from llmlab.decoding import roofline, search
from llmlab.distributed import batchnorm as dist_bn, comm, ddp, launch, ledger, sharding
from llmlab.distributed import demo as dist_demo
from llmlab.precision import formats, mixed, speed as prec_speed, toy
from llmlab.tokenization import bpe, library, texts


@dataclass
class Case:
    target: object          # the public callable the row is about
    arg: str                # the argument the message must name
    exc: type               # ValueError or TypeError
    call: Callable[[], object]
    note: str = ""

    @property
    def label(self) -> str:
        name = getattr(self.target, "__qualname__", repr(self.target))
        return f"{getattr(self.target, '__module__', '?')}.{name}[{self.arg}{': ' + self.note if self.note else ''}]"


V, T = ValueError, TypeError
NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------------------------------------
# Fixtures built once (lazily: the table is a list of thunks, nothing runs at import time)
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def tiny():
    """The tiny random Llama: vocab 97, 128 positions."""
    return models.random_llama("tiny")


@functools.lru_cache(maxsize=None)
def tokenizer():
    from transformers import AutoTokenizer  # only the rows that need a real tokenizer load it
    return AutoTokenizer.from_pretrained(str(models.default_model_dir()), local_files_only=True)


def ids(*values):
    return torch.tensor([list(values)], dtype=torch.long)


PROMPT = ids(1, 5, 7, 9)
EX = {"instruction": "Say hi", "input": "", "output": "hi"}


@functools.lru_cache(maxsize=None)
def factors():
    return svd.factorize(torch.rand(12, 10))


@functools.lru_cache(maxsize=None)
def static_decoder():
    return decoding.StaticDecoder(tiny(), 32)


def lin():
    return nn.Linear(8, 6)


def chain():
    return checkpointing.make_chain(4, 8)


def mse(p, t):
    return ((p - t) ** 2).mean()


def small_bpe():
    return tokenization.train_bpe(["low lower lowest", "new newer newest"], 260)


def hf_bpe():
    return library.reference_bpe(["low lower lowest", "new newer newest"], 260)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

C = Case
CASES: list[Case] = [
    # --- _checks / _torch -----------------------------------------------------------------------
    C(_checks.check_int, "k", T, lambda: _checks.check_int("k", True)),
    C(_checks.check_int, "k", V, lambda: _checks.check_int("k", 0, low=1)),
    C(_checks.check_float, "x", V, lambda: _checks.check_float("x", NAN)),
    C(_checks.check_float, "x", T, lambda: _checks.check_float("x", "1")),
    C(_checks.check_bool, "flag", T, lambda: _checks.check_bool("flag", 1)),
    C(_checks.check_choice, "mode", V, lambda: _checks.check_choice("mode", "c", ("a", "b"))),
    C(_checks.check_choice, "mode", V, lambda: _checks.check_choice("mode", [1], ("a", "b")), "unhashable"),
    C(_checks.check_str, "s", V, lambda: _checks.check_str("s", "")),
    C(_checks.check_tensor, "t", T, lambda: _checks.check_tensor("t", [1, 2])),
    C(_checks.check_tensor, "t", V, lambda: _checks.check_tensor("t", torch.zeros(2), dim=2)),
    C(_checks.check_prompt_ids, "ids", T, lambda: _checks.check_prompt_ids("ids", torch.zeros(1, 2))),
    C(_checks.check_prompt_ids, "ids", V, lambda: _checks.check_prompt_ids("ids", torch.zeros(2, 2, dtype=torch.long))),
    C(_checks.check_eos_token_id, "eos_token_id", T, lambda: _checks.check_eos_token_id(2.0)),
    C(_checks.check_eos_token_id, "eos_token_id", V, lambda: _checks.check_eos_token_id(-1)),
    C(_checks.check_callable, "fn", T, lambda: _checks.check_callable("fn", 5)),
    C(_checks.check_module, "m", T, lambda: _checks.check_module("m", "model")),
    C(_checks.check_same_length, "b", V, lambda: _checks.check_same_length(a=[1], b=[1, 2])),
    C(_checks.check_finite_tensor, "t", V, lambda: _checks.check_finite_tensor("t", torch.tensor([NAN]))),
    C(_checks.check_finite_tensor, "t", T, lambda: _checks.check_finite_tensor("t", [1.0])),
    C(_checks.check_sequence, "xs", T, lambda: _checks.check_sequence("xs", "abc")),
    C(_checks.check_sequence, "xs", T, lambda: _checks.check_sequence("xs", {"a": 1}), "one dict"),
    C(_checks.check_sequence, "xs", V, lambda: _checks.check_sequence("xs", [])),
    # --- modelinfo ------------------------------------------------------------------------------
    C(modelinfo.check_token_ids, "input_ids", V, lambda: modelinfo.check_token_ids(tiny(), ids(1, 97))),
    C(modelinfo.check_token_ids, "ids", V, lambda: modelinfo.check_token_ids(tiny(), ids(-1), name="ids"), "negative"),
    C(modelinfo.check_token_ids, "input_ids", T, lambda: modelinfo.check_token_ids(tiny(), torch.zeros(1, 2))),
    C(modelinfo.check_fits_model, "input_ids", V, lambda: modelinfo.check_fits_model(tiny(), ids(1, 97))),
    C(modelinfo.check_fits_model, "max_new_tokens", V, lambda: modelinfo.check_fits_model(tiny(), PROMPT, max_new_tokens=125)),
    C(modelinfo.check_fits_model, "eos_token_id", V, lambda: modelinfo.check_fits_model(tiny(), PROMPT, eos_token_id=97)),
    C(modelinfo.context_size, "model", T, lambda: modelinfo.context_size("gpt2")),
    C(modelinfo.vocab_size, "model", T, lambda: modelinfo.vocab_size(None)),
    C(_checks.describe_range, "low_open", T, lambda: _checks.describe_range(1, 2, low_open="yes")),
    C(_checks.check_path, "folder", T, lambda: _checks.check_path("folder", 5)),
    C(_checks.check_optimizer, "optimizer", T, lambda: _checks.check_optimizer("optimizer", "adam")),
    C(_checks.check_batch_plan, "batch_size", V, lambda: _checks.check_batch_plan(0, 1, 0)),
    C(_checks.check_batch_plan, "steps", V, lambda: _checks.check_batch_plan(1, 11, 0, max_steps=10)),
    C(_checks.check_batch_plan, "seed", T, lambda: _checks.check_batch_plan(1, 1, 0.5)),
    C(_checks.check_length_range, "min_len", V, lambda: _checks.check_length_range(1, 9, 8, 0, high=64)),
    C(_checks.check_length_range, "max_len", V, lambda: _checks.check_length_range(1, 2, 65, 0, high=64)),
    C(_checks.check_world_size, "world_size", V, lambda: _checks.check_world_size(0, high=8)),
    C(_checks.check_world_size, "world_size", V, lambda: _checks.check_world_size(3, high=8, divides={"spec.batch": 8}),
      "does not divide"),
    C(_torch.seed_everything, "seed", T, lambda: _torch.seed_everything(True)),
    C(_torch.seed_everything, "seed", V, lambda: _torch.seed_everything(2**70)),
    C(_torch.seed_everything, "seed", V, lambda: _torch.seed_everything(-1)),
    C(_torch.resolve_device, "device", V, lambda: _torch.resolve_device("bogus")),
    C(_torch.resolve_device, "device", T, lambda: _torch.resolve_device(3.5)),
    C(_torch.resolve_dtype, "dtype", V, lambda: _torch.resolve_dtype("float7")),
    C(_torch.resolve_dtype, "dtype", V, lambda: _torch.resolve_dtype(torch.int64)),
    C(_torch.isolated_rng, "seed", T, lambda: _torch.isolated_rng(1.5).__enter__()),
    C(_torch.rng_state, "device", V, lambda: _torch.rng_state("bogus")),
    C(_torch.replayed_rng, "state", T, lambda: _torch.replayed_rng(None).__enter__()),
    C(_torch.pad_id, "tokenizer", T, lambda: _torch.pad_id("tok")),
    C(_torch.pad_id, "default", V, lambda: _torch.pad_id(tokenizer(), default=-1)),
    C(llmlab.default_device, "device", V, lambda: _torch.resolve_device("cuda:x"), "via resolve_device"),

    # --- timing ---------------------------------------------------------------------------------
    C(timing.time_calls, "fn", T, lambda: timing.time_calls(5)),
    C(timing.time_calls, "repeat", V, lambda: timing.time_calls(lambda: None, repeat=0)),
    C(timing.time_calls, "repeat", T, lambda: timing.time_calls(lambda: None, repeat=True)),
    C(timing.time_calls, "warmup", V, lambda: timing.time_calls(lambda: None, warmup=-1)),
    C(timing.time_calls, "repeat", V, lambda: timing.time_calls(lambda: None, repeat=10**12), "huge"),
    C(timing.timeit, "repeat", V, lambda: timing.timeit(lambda: None, repeat=0)),
    C(timing.interleaved, "fns", T, lambda: timing.interleaved({}), "a TypeError that says non-empty dict"),
    C(timing.interleaved, "fns", T, lambda: timing.interleaved([lambda: None])),
    C(timing.interleaved, "rounds", V, lambda: timing.interleaved({"a": lambda: None}, rounds=0)),
    C(timing.Stopwatch, "device", V, lambda: timing.Stopwatch("bogus")),
    C(timing.synchronize, "device", V, lambda: timing.synchronize("bogus")),

    # --- memory ---------------------------------------------------------------------------------
    C(memory.count_parameters, "model", T, lambda: memory.count_parameters("m")),
    C(memory.memory_ledger, "optimizer", V, lambda: memory.memory_ledger(lin(), optimizer="rmsprop2")),
    C(memory.memory_ledger, "precision", V, lambda: memory.memory_ledger(lin(), precision="fp7")),
    C(memory.memory_ledger, "model", T, lambda: memory.memory_ledger("m")),
    C(memory.measured_ledger, "model", T, lambda: memory.measured_ledger(None)),
    C(memory.measured_ledger, "optimizer", T, lambda: memory.measured_ledger(lin(), optimizer="adam")),
    C(memory.saved_activation_bytes, "model", T, lambda: memory.saved_activation_bytes("m", torch.zeros(1, 8))),
    C(memory.SavedTensorTracker, "params", T, lambda: memory.SavedTensorTracker(5)),

    # --- fitting --------------------------------------------------------------------------------
    C(fitting.loglog_slope, "values", V, lambda: fitting.loglog_slope([1, 2], [1])),
    C(fitting.loglog_slope, "ns", V, lambda: fitting.loglog_slope([1], [1])),
    C(fitting.loglog_slope, "ns", V, lambda: fitting.loglog_slope([0, 1], [1, 2])),
    C(fitting.loglog_slope, "values", V, lambda: fitting.loglog_slope([1, 2], [-1, 2])),
    C(fitting.loglog_slope, "ns", V, lambda: fitting.loglog_slope([2, 2, 2], [1, 2, 3])),
    C(fitting.loglog_slope, "values", V, lambda: fitting.loglog_slope([1, 2, 3], [1, NAN, 3])),
    C(fitting.loglog_slope, "ns", T, lambda: fitting.loglog_slope("abc", [1, 2, 3])),
    C(fitting.fit_scaling, "ns", V, lambda: fitting.fit_scaling([1, 1, 1], [1, 2, 3], "n")),
    C(fitting.fit_scaling, "values", V, lambda: fitting.fit_scaling([1, 2, 3], [1, NAN, 3], "n")),
    C(fitting.fit_scaling, "law", V, lambda: fitting.fit_scaling([1, 2, 3], [1, 2, 3], "cubic")),
    C(fitting.fit_scaling, "values", V, lambda: fitting.fit_scaling([1, 2, 3], [1, 2], "n")),

    # --- svd ------------------------------------------------------------------------------------
    C(svd.factorize, "image", T, lambda: svd.factorize("img")),
    C(svd.factorize, "image", V, lambda: svd.factorize(torch.zeros(5))),
    C(svd.factorize, "image", V, lambda: svd.factorize(torch.full((4, 4), NAN))),
    C(svd.factorize, "image", V, lambda: svd.factorize(np.zeros((0, 4)))),
    C(svd.factorize, "device", V, lambda: svd.factorize(torch.rand(4, 4), device="bogus")),
    C(svd.reconstruct, "factors", T, lambda: svd.reconstruct("x", 2)),
    C(svd.reconstruct, "k", V, lambda: svd.reconstruct(factors(), 0)),
    C(svd.reconstruct, "k", V, lambda: svd.reconstruct(factors(), 11)),
    C(svd.reconstruct, "k", T, lambda: svd.reconstruct(factors(), True)),
    C(svd.relative_error, "k", V, lambda: svd.relative_error(factors(), -1)),
    C(svd.relative_error, "factors", T, lambda: svd.relative_error(None, 1)),
    C(svd.energy, "k", T, lambda: svd.energy(factors(), 2.0)),
    C(svd.energy, "k", V, lambda: svd.energy(factors(), 99)),
    C(svd.k_for_error, "max_error", V, lambda: svd.k_for_error(factors(), -0.1)),
    C(svd.k_for_error, "max_error", V, lambda: svd.k_for_error(factors(), NAN)),
    C(svd.compression_ratio, "k", V, lambda: svd.compression_ratio(10, 10, 0)),
    C(svd.compression_ratio, "height", T, lambda: svd.compression_ratio(True, 10, 1)),
    C(svd.compression_ratio, "k", V, lambda: svd.compression_ratio(10, 10, 11)),
    C(svd.low_rank_factors, "k", V, lambda: svd.low_rank_factors(torch.rand(4, 5), 6)),
    C(svd.low_rank_factors, "W", T, lambda: svd.low_rank_factors([["a"]], 1)),
    C(svd.low_rank_factors, "W", V, lambda: svd.low_rank_factors(torch.rand(4), 1)),
    C(svd.checkerboard, "angle", V, lambda: svd.checkerboard(angle=NAN)),
    C(svd.checkerboard, "size", V, lambda: svd.checkerboard(size=0)),
    C(svd.checkerboard, "size", V, lambda: svd.checkerboard(size=10**6), "huge"),
    C(svd.checkerboard, "square", V, lambda: svd.checkerboard(square=0)),
    C(svd.demo_images, "size", V, lambda: svd.demo_images(size=0)),
    C(svd.demo_images, "size", V, lambda: svd.demo_images(size=10**6), "huge"),
    C(svd.demo_images, "seed", T, lambda: svd.demo_images(size=8, seed=1.5)),

    # --- schedules ------------------------------------------------------------------------------
    C(schedules.cosine_annealing, "step", V, lambda: schedules.cosine_annealing(-1, base_lr=0.1, t_max=10)),
    C(schedules.cosine_annealing, "t_max", V, lambda: schedules.cosine_annealing(1, base_lr=0.1, t_max=0)),
    C(schedules.cosine_annealing, "base_lr", V, lambda: schedules.cosine_annealing(1, base_lr=NAN, t_max=10)),
    C(schedules.cosine_annealing, "step", T, lambda: schedules.cosine_annealing(True, base_lr=0.1, t_max=10)),
    C(schedules.cosine_with_restarts, "t_0", V, lambda: schedules.cosine_with_restarts(1, base_lr=0.1, t_0=0)),
    C(schedules.cosine_with_restarts, "t_mult", V, lambda: schedules.cosine_with_restarts(1, base_lr=0.1, t_0=5, t_mult=0)),
    C(schedules.cosine_with_restarts, "base_lr", V, lambda: schedules.cosine_with_restarts(1, base_lr=-1.0, t_0=5)),
    C(schedules.warmup_cosine, "total_steps", V, lambda: schedules.warmup_cosine(1, base_lr=0.1, warmup_steps=10, total_steps=5)),
    C(schedules.warmup_cosine, "warmup_steps", V, lambda: schedules.warmup_cosine(1, base_lr=0.1, warmup_steps=-1, total_steps=5)),
    C(schedules.torch_trace, "steps", V, lambda: schedules.torch_trace(lambda o: torch.optim.lr_scheduler.StepLR(o, 1), -1, base_lr=0.1)),
    C(schedules.torch_trace, "make_scheduler", T, lambda: schedules.torch_trace(5, 3, base_lr=0.1)),
    C(schedules.torch_trace, "steps", V, lambda: schedules.torch_trace(lambda o: torch.optim.lr_scheduler.StepLR(o, 1), 10**9, base_lr=0.1), "huge"),

    # --- checkpointing --------------------------------------------------------------------------
    C(checkpointing.make_chain, "n_layers", V, lambda: checkpointing.make_chain(0, 8)),
    C(checkpointing.make_chain, "width", T, lambda: checkpointing.make_chain(2, 8.0)),
    C(checkpointing.make_chain, "width", V, lambda: checkpointing.make_chain(2, 10**6), "huge"),
    C(checkpointing.measure, "x", V, lambda: checkpointing.measure(chain(), torch.zeros(0, 8), "store_all")),
    C(checkpointing.measure, "strategy", V, lambda: checkpointing.measure(chain(), torch.zeros(2, 8), "some")),
    C(checkpointing.measure, "x", V, lambda: checkpointing.measure(chain(), torch.zeros(2, 5), "store_all"), "width"),
    C(checkpointing.measure, "model", T, lambda: checkpointing.measure(nn.Linear(8, 8), torch.zeros(2, 8), "store_all")),
    C(checkpointing.measure, "segments", V, lambda: checkpointing.measure(chain(), torch.zeros(2, 8), "sqrt", segments=9)),
    C(checkpointing.measure, "sizes", V, lambda: checkpointing.measure(chain(), torch.zeros(2, 8), "sqrt", sizes=[2, 1]), "sum"),
    C(checkpointing.measure, "sizes", T, lambda: checkpointing.measure(chain(), torch.zeros(2, 8), "sqrt", sizes="22")),
    C(checkpointing.default_segments, "n_layers", V, lambda: checkpointing.default_segments(0)),
    C(checkpointing.segment_sizes, "segments", V, lambda: checkpointing.segment_sizes(4, 5)),
    C(checkpointing.segment_sizes, "segments", V, lambda: checkpointing.segment_sizes(4, 0)),
    C(checkpointing.theory_saved_activations, "strategy", V, lambda: checkpointing.theory_saved_activations(4, "x")),
    C(checkpointing.theory_forward_calls, "segments", V, lambda: checkpointing.theory_forward_calls(4, "store_all", segments=2)),
    C(checkpointing.theory_forward_calls, "n_layers", T, lambda: checkpointing.theory_forward_calls(True, "store_all")),
    C(checkpointing.max_relative_grad_error, "reference", V,
      lambda: checkpointing.max_relative_grad_error({"w": torch.ones(2)}, {"w": torch.zeros(2)})),
    C(checkpointing.max_relative_grad_error, "reference", V,
      lambda: checkpointing.max_relative_grad_error({"w": torch.ones(2)}, {"v": torch.ones(2)}), "keys"),
    C(checkpointing.max_relative_grad_error, "grads", V,
      lambda: checkpointing.max_relative_grad_error({"w": torch.ones(3)}, {"w": torch.ones(2)}), "shape"),
    C(checkpointing.max_relative_grad_error, "grads", T, lambda: checkpointing.max_relative_grad_error([1], {"w": torch.ones(2)})),

    # --- accumulation ---------------------------------------------------------------------------
    C(accumulation.make_model, "kind", V, lambda: accumulation.make_model("cnn")),
    C(accumulation.make_model, "dtype", V, lambda: accumulation.make_model("linear", dtype="float7")),
    C(accumulation.make_model, "seed", T, lambda: accumulation.make_model("linear", seed=1.5)),
    C(accumulation.make_batch, "batch_size", V, lambda: accumulation.make_batch("linear", 0)),
    C(accumulation.make_batch, "batch_size", V, lambda: accumulation.make_batch("linear", 10**12), "huge"),
    C(accumulation.make_batch, "kind", V, lambda: accumulation.make_batch("x")),
    C(accumulation.loss_fn_for, "kind", V, lambda: accumulation.loss_fn_for("x")),
    C(accumulation.divisors, "n", V, lambda: accumulation.divisors(0)),
    C(accumulation.divisors, "n", T, lambda: accumulation.divisors(4.0)),
    C(accumulation.divisors, "n", V, lambda: accumulation.divisors(10**18), "huge"),
    C(accumulation.accumulation_pass, "steps", V, lambda: accumulation.accumulation_pass(
        accumulation.make_model("linear"), mse, *accumulation.make_batch("linear", 8), 3)),
    C(accumulation.accumulation_pass, "steps", V, lambda: accumulation.accumulation_pass(
        accumulation.make_model("linear"), mse, *accumulation.make_batch("linear", 8), 0)),
    C(accumulation.full_batch_grads, "y", V, lambda: accumulation.full_batch_grads(
        accumulation.make_model("linear"), mse, torch.zeros(8, 4), torch.zeros(5, 1))),
    C(accumulation.full_batch_grads, "model", T, lambda: accumulation.full_batch_grads("m", mse, torch.zeros(8, 4), torch.zeros(8, 1))),
    C(accumulation.full_batch_grads, "loss_fn", T, lambda: accumulation.full_batch_grads(
        accumulation.make_model("linear"), 5, *accumulation.make_batch("linear", 8))),
    C(accumulation.accumulated_grads, "steps", T, lambda: accumulation.accumulated_grads(
        accumulation.make_model("linear"), mse, *accumulation.make_batch("linear", 8), True)),
    C(accumulation.relative_difference, "grads_b", V, lambda: accumulation.relative_difference({"w": torch.ones(2)}, {"v": torch.ones(2)})),
    C(accumulation.relative_difference, "grads_b", V, lambda: accumulation.relative_difference({"w": torch.ones(2)}, {"w": torch.zeros(2)})),
    C(accumulation.relative_difference, "grads_a", V, lambda: accumulation.relative_difference({}, {})),
    C(accumulation.make_token_model, "vocab_size", V, lambda: accumulation.make_token_model(vocab_size=0)),
    C(accumulation.make_token_model, "dim", V, lambda: accumulation.make_token_model(dim=10**7), "huge"),
    C(accumulation.make_token_batch, "min_len", V, lambda: accumulation.make_token_batch(max_len=4, min_len=5)),
    C(accumulation.make_token_batch, "max_len", V, lambda: accumulation.make_token_batch(max_len=10**9), "huge"),
    C(accumulation.make_token_batch, "batch_size", V, lambda: accumulation.make_token_batch(batch_size=0)),
    C(accumulation.micro_batch_token_counts, "steps", V, lambda: accumulation.micro_batch_token_counts(torch.zeros(4, 3, dtype=torch.long), 3)),
    C(accumulation.micro_batch_token_counts, "targets", T, lambda: accumulation.micro_batch_token_counts([[1]], 1)),
    C(accumulation.token_loss_grads, "normalization", V, lambda: accumulation.token_loss_grads(
        accumulation.make_token_model(), *accumulation.make_token_batch(4, max_len=6), 2, normalization="x")),
    C(accumulation.token_loss_grads, "inputs", V, lambda: accumulation.token_loss_grads(
        accumulation.make_token_model(vocab_size=50), torch.full((4, 6), 60), torch.zeros(4, 6, dtype=torch.long), 2), "id >= vocab"),
    C(accumulation.recalibrate_batchnorm, "batches", V, lambda: accumulation.recalibrate_batchnorm(
        accumulation.make_model("cnn_bn"), [])),
    C(accumulation.recalibrate_batchnorm, "model", T, lambda: accumulation.recalibrate_batchnorm("m", [])),
    C(accumulation.train_with_accumulation, "batches", V, lambda: accumulation.train_with_accumulation(
        accumulation.make_model("linear"), mse, [], 1)),
    C(accumulation.train_with_accumulation, "lr", V, lambda: accumulation.train_with_accumulation(
        accumulation.make_model("linear"), mse, [accumulation.make_batch("linear", 8)], 1, lr=NAN)),
    C(accumulation.train_with_accumulation, "momentum", V, lambda: accumulation.train_with_accumulation(
        accumulation.make_model("linear"), mse, [accumulation.make_batch("linear", 8)], 1, momentum=1.5)),

    # --- lora -----------------------------------------------------------------------------------
    C(lora.LoRALinear, "r", V, lambda: lora.LoRALinear(lin(), r=0, alpha=8)),
    C(lora.LoRALinear, "base", T, lambda: lora.LoRALinear(nn.Conv1d(2, 2, 1), r=1, alpha=1)),
    C(lora.LoRALinear, "dropout", V, lambda: lora.LoRALinear(lin(), r=2, alpha=8, dropout=1.0)),
    C(lora.LoRALinear, "alpha", V, lambda: lora.LoRALinear(lin(), r=2, alpha=NAN)),
    C(lora.add_lora, "r", V, lambda: lora.add_lora(tiny(), r=0)),
    C(lora.add_lora, "target_modules", V, lambda: lora.add_lora(nn.Sequential(lin()), target_modules=("q_proj",), r=2)),
    C(lora.add_lora, "target_modules", V, lambda: lora.add_lora(nn.Sequential(lin()), target_modules="q_proj", r=2), "one name as a str"),
    C(lora.add_lora, "model", T, lambda: lora.add_lora("m")),
    C(lora.merge_lora, "model", T, lambda: lora.merge_lora("m")),
    C(lora.lora_param_count, "r", V, lambda: lora.lora_param_count(8, 6, -1)),
    C(lora.lora_param_count, "m", T, lambda: lora.lora_param_count(True, 6, 1)),
    C(lora.break_even_rank, "m", V, lambda: lora.break_even_rank(0, 6)),
    C(lora.lora_model_param_count, "r", V, lambda: lora.lora_model_param_count(tiny(), r=0)),
    C(lora.lora_model_param_count, "target_modules", V, lambda: lora.lora_model_param_count(tiny(), target_modules=("nope",))),
    C(lora.truncation_error, "ranks", T, lambda: lora.truncation_error(torch.randn(6, 8), [True])),
    C(lora.truncation_error, "ranks", V, lambda: lora.truncation_error(torch.randn(6, 8), [])),
    C(lora.truncation_error, "delta_W", V, lambda: lora.truncation_error(torch.randn(6), [1])),
    C(lora.truncation_error, "delta_W", V, lambda: lora.truncation_error(torch.full((3, 3), NAN), [1])),
    C(lora.train_steps, "batches", T, lambda: lora.train_steps(tiny(), [5], torch.optim.SGD(tiny().parameters(), lr=0.0))),
    C(lora.train_steps, "optimizer", T, lambda: lora.train_steps(tiny(), [], "adam")),

    # --- data -----------------------------------------------------------------------------------
    C(data.format_prompt, "instruction", T, lambda: data.format_prompt(None)),
    C(data.format_prompt, "instruction", T, lambda: data.format_prompt(5)),
    C(data.format_prompt, "input", T, lambda: data.format_prompt("x", None)),
    C(data.load_instructions, "split", V, lambda: data.load_instructions("validation")),
    C(data.load_instructions, "folder", V, lambda: data.load_instructions("train", folder="/nonexistent/llmlab")),
    C(data.tokenize_example, "max_length", V, lambda: data.tokenize_example(EX, tokenizer(), max_length=3)),
    C(data.tokenize_example, "example", T, lambda: data.tokenize_example(["x"], tokenizer())),
    C(data.tokenize_example, "example", T, lambda: data.tokenize_example({"instruction": "x"}, tokenizer()), "keys"),
    C(data.tokenize_example, "output", T, lambda: data.tokenize_example({**EX, "output": 5}, tokenizer())),
    C(data.tokenize_example, "instruction", T, lambda: data.tokenize_example({**EX, "instruction": None}, tokenizer())),
    C(data.tokenize_example, "tokenizer", V, lambda: data.tokenize_example(EX, "tok")),
    C(data.make_batches, "batch_size", V, lambda: data.make_batches([EX], tokenizer(), batch_size=0, steps=1)),
    C(data.make_batches, "examples", V, lambda: data.make_batches([], tokenizer(), batch_size=2, steps=1)),
    C(data.make_batches, "steps", V, lambda: data.make_batches([EX], tokenizer(), batch_size=1, steps=10**9), "huge"),
    C(data.exact_match, "max_new_tokens", V, lambda: data.exact_match(tiny(), tokenizer(), [EX], max_new_tokens=0)),
    C(data.exact_match, "examples", V, lambda: data.exact_match(tiny(), tokenizer(), [])),
    C(data.exact_match, "batch_size", V, lambda: data.exact_match(tiny(), tokenizer(), [EX], batch_size=0)),
    C(data.exact_match, "model", T, lambda: data.exact_match("m", tokenizer(), [EX])),
    # notebook 07 calls greedy_answers itself (the base model's and LoRA's answers to two prompts)
    C(data.greedy_answers, "model", T, lambda: data.greedy_answers("m", tokenizer(), [[1, 5]], max_new_tokens=2)),
    C(data.greedy_answers, "max_new_tokens", V, lambda: data.greedy_answers(tiny(), tokenizer(), [[1, 5]], max_new_tokens=0)),
    C(data.greedy_answers, "prompt_ids", T, lambda: data.greedy_answers(tiny(), tokenizer(), "1 5", max_new_tokens=2)),
    C(data.greedy_answers, "prompt_ids", V, lambda: data.greedy_answers(tiny(), tokenizer(), [], max_new_tokens=2)),

    # --- perplexity -----------------------------------------------------------------------------
    C(perplexity.sliding_windows, "stride", V, lambda: perplexity.sliding_windows(10, max_length=4, stride=5)),
    C(perplexity.sliding_windows, "max_length", V, lambda: perplexity.sliding_windows(10, max_length=0, stride=1)),
    C(perplexity.sliding_windows, "seq_len", T, lambda: perplexity.sliding_windows(10.0, max_length=4, stride=2)),
    C(perplexity.forward_tokens, "stride", V, lambda: perplexity.forward_tokens(10, max_length=4, stride=0)),
    C(perplexity.token_nlls, "input_ids", V, lambda: perplexity.token_nlls(tiny(), ids(1, 500, 3), max_length=8, stride=4)),
    C(perplexity.token_nlls, "input_ids", V, lambda: perplexity.token_nlls(tiny(), ids(1, -1, 3), max_length=8, stride=4)),
    C(perplexity.token_nlls, "max_length", V, lambda: perplexity.token_nlls(tiny(), ids(1, 2, 3), max_length=1000, stride=4)),
    C(perplexity.token_nlls, "batch_size", V, lambda: perplexity.token_nlls(tiny(), ids(1, 2, 3), max_length=8, stride=4, batch_size=0)),
    C(perplexity.perplexity, "input_ids", T, lambda: perplexity.perplexity(tiny(), [1, 2, 3])),
    C(perplexity.perplexity, "input_ids", V, lambda: perplexity.perplexity(tiny(), ids(1))),
    C(perplexity.perplexity, "model", T, lambda: perplexity.perplexity("gpt2", ids(1, 2, 3))),
    C(perplexity.bits_per_byte, "text", V, lambda: perplexity.bits_per_byte(perplexity.PerplexityResult(2.0, math.log(2), 4), "")),
    C(perplexity.bits_per_byte, "result", T, lambda: perplexity.bits_per_byte(2.0, "abc")),
    C(perplexity.bits_per_byte, "text", T, lambda: perplexity.bits_per_byte(perplexity.PerplexityResult(2.0, math.log(2), 4), 1.5)),
    C(perplexity.byte_ngram_nlls, "order", V, lambda: perplexity.byte_ngram_nlls(b"abc", b"abc", order=0)),
    C(perplexity.byte_ngram_nlls, "train", T, lambda: perplexity.byte_ngram_nlls("abc", b"abc")),
    C(perplexity.byte_ngram_nlls, "train", V, lambda: perplexity.byte_ngram_nlls(b"abc", b"abc")),
    C(perplexity.byte_ngram_nlls, "text", T, lambda: perplexity.byte_ngram_nlls(b"abcdef", "abc")),

    # --- decoding -------------------------------------------------------------------------------
    C(search.greedy, "max_new_tokens", V, lambda: search.greedy(tiny(), PROMPT, 200), "past the context"),
    C(search.greedy, "input_ids", V, lambda: search.greedy(tiny(), ids(1, 500), 2), "id >= vocab"),
    C(search.greedy, "input_ids", V, lambda: search.greedy(tiny(), ids(1, -3), 2), "negative id"),
    C(search.greedy, "max_new_tokens", T, lambda: search.greedy(tiny(), PROMPT, 2.0)),
    C(search.greedy, "input_ids", T, lambda: search.greedy(tiny(), [[1, 2]], 2)),
    C(search.greedy, "input_ids", V, lambda: search.greedy(tiny(), torch.ones(2, 3, dtype=torch.long), 2)),
    C(search.greedy, "eos_token_id", T, lambda: search.greedy(tiny(), PROMPT, 2, eos_token_id=True)),
    C(search.greedy, "eos_token_id", V, lambda: search.greedy(tiny(), PROMPT, 2, eos_token_id=500), "eos >= vocab"),
    C(search.greedy, "model", T, lambda: search.greedy("m", PROMPT, 2)),
    C(search.greedy_without_cache, "max_new_tokens", V, lambda: search.greedy_without_cache(tiny(), PROMPT, 200)),
    C(search.greedy_without_cache, "input_ids", V, lambda: search.greedy_without_cache(tiny(), ids(1, 97), 2)),
    C(search.beam_search, "num_beams", V, lambda: search.beam_search(tiny(), PROMPT, 3, num_beams=49153), "> vocab"),
    C(search.beam_search, "num_beams", V, lambda: search.beam_search(tiny(), PROMPT, 3, num_beams=0)),
    C(search.beam_search, "length_penalty", V, lambda: search.beam_search(tiny(), PROMPT, 3, num_beams=2, length_penalty=NAN)),
    C(search.beam_search, "max_new_tokens", V, lambda: search.beam_search(tiny(), PROMPT, 500, num_beams=2)),
    C(search.beam_search, "input_ids", V, lambda: search.beam_search(tiny(), ids(1, 97), 2, num_beams=2)),
    C(search.sample, "temperature", V, lambda: search.sample(tiny(), PROMPT, 2, temperature=0.0)),
    C(search.sample, "top_p", V, lambda: search.sample(tiny(), PROMPT, 2, top_p=0.0)),
    C(search.sample, "top_k", V, lambda: search.sample(tiny(), PROMPT, 2, top_k=-1)),
    C(search.sample, "generator", T, lambda: search.sample(tiny(), PROMPT, 2, generator=5)),
    C(search.sample, "max_new_tokens", V, lambda: search.sample(tiny(), PROMPT, 300)),
    C(search.sample, "input_ids", V, lambda: search.sample(tiny(), ids(1, 97), 2)),
    C(search.top_p_filter, "min_tokens_to_keep", V, lambda: search.top_p_filter(torch.randn(5), 0.5, min_tokens_to_keep=0)),
    C(search.top_p_filter, "p", V, lambda: search.top_p_filter(torch.randn(5), 1.5)),
    C(search.top_p_filter, "p", V, lambda: search.top_p_filter(torch.randn(5), NAN)),
    C(search.warp_logits, "temperature", V, lambda: search.warp_logits(torch.randn(5), temperature=-1.0)),
    C(search.beam_search, "num_beams", V, lambda: search.beam_search(tiny(),
                                                                    PROMPT, 3, num_beams=98), "> vocab of 97"),
    C(search.warp_logits, "top_k", T, lambda: search.warp_logits(torch.randn(5), top_k=1.5)),
    C(search.sequence_logprob, "prompt_len", V, lambda: search.sequence_logprob(tiny(), PROMPT, 4)),
    C(search.sequence_logprob, "input_ids", V, lambda: search.sequence_logprob(tiny(), ids(1, 97, 3), 1)),
    C(search.sequence_logprob, "input_ids", V, lambda: search.sequence_logprob(tiny(), torch.ones(1, 300, dtype=torch.long), 1), "past the context"),
    C(search.next_token_logits, "input_ids", V, lambda: search.next_token_logits(tiny(), ids(1, 97))),
    C(search.next_token_logits, "input_ids", V, lambda: search.next_token_logits(tiny(), torch.ones(1, 300, dtype=torch.long)), "past the context"),
    C(search.greedy, "input_ids", T, lambda: search.greedy(tiny(), torch.ones(1, 3), 2), "float ids"),
    C(search.greedy, "input_ids", V, lambda: search.greedy(tiny(), torch.ones(1, 0, dtype=torch.long), 2), "empty"),
    C(search.greedy, "max_new_tokens", V, lambda: search.greedy(tiny(), PROMPT, -1)),
    C(search.greedy, "eos_token_id", V, lambda: search.greedy(tiny(), PROMPT, 2, eos_token_id=-1)),
    C(decoding.StaticDecoder, "max_len", V, lambda: decoding.StaticDecoder(tiny(), 1000), "past the context"),
    C(decoding.StaticDecoder, "max_len", V, lambda: decoding.StaticDecoder(tiny(), 1)),
    C(decoding.StaticDecoder, "model_type", V, lambda: decoding.StaticDecoder(nn.Linear(2, 2), 8), "not a Llama"),
    C(decoding.StaticDecoder.greedy, "max_new_tokens", V, lambda: static_decoder().greedy(PROMPT, 40)),
    C(decoding.StaticDecoder.greedy, "input_ids", V, lambda: static_decoder().greedy(ids(1, 97), 2)),
    C(decoding.StaticDecoder.greedy, "input_ids", V, lambda: static_decoder().greedy(ids(1, -2), 2)),
    C(roofline.decode_roofline, "peak_flops", V, lambda: roofline.decode_roofline(tiny(), 8, bandwidth=1e9, peak_flops=0)),
    C(roofline.decode_roofline, "peak_flops", V, lambda: roofline.decode_roofline(tiny(), 8, bandwidth=1e9, peak_flops=-5)),
    C(roofline.decode_roofline, "bandwidth", V, lambda: roofline.decode_roofline(tiny(), 8, bandwidth=0)),
    C(roofline.decode_roofline, "context_len", V, lambda: roofline.decode_roofline(tiny(), -1, bandwidth=1e9)),
    C(roofline.decode_roofline, "dtype", V, lambda: roofline.decode_roofline(tiny(), 8, bandwidth=1e9, dtype="float7")),
    C(roofline.measure_bandwidth, "n_bytes", V, lambda: roofline.measure_bandwidth(n_bytes=0)),
    C(roofline.measure_bandwidth, "repeat", V, lambda: roofline.measure_bandwidth(n_bytes=1024, repeat=0)),
    C(roofline.measure_bandwidth, "device", V, lambda: roofline.measure_bandwidth("bogus", n_bytes=1024)),
    C(roofline.measure_bandwidth, "n_bytes", V, lambda: roofline.measure_bandwidth(n_bytes=2**50), "huge"),
    C(roofline.known_gpu_peak, "device_name", T, lambda: roofline.known_gpu_peak(None)),
    C(decoding.repeated_ngram_fraction, "n", V, lambda: decoding.repeated_ngram_fraction([1, 2, 3], 0)),
    C(decoding.repeated_ngram_fraction, "token_ids", T, lambda: decoding.repeated_ngram_fraction("abc", 2)),
    C(decoding.repeated_ngram_fraction, "n", T, lambda: decoding.repeated_ngram_fraction([1, 2, 3], True)),
    C(decoding.time_decoders, "names", T, lambda: decoding.time_decoders(tiny(), PROMPT, 2, names="greedy")),
    C(decoding.time_decoders, "names", V, lambda: decoding.time_decoders(tiny(), PROMPT, 2, names=("beam",))),
    C(decoding.time_decoders, "names", V, lambda: decoding.time_decoders(tiny(), PROMPT, 2, names=())),
    C(decoding.time_decoders, "repeat", V, lambda: decoding.time_decoders(tiny(), PROMPT, 2, names=("greedy",), repeat=0)),
    C(decoding.time_decoders, "max_new_tokens", V, lambda: decoding.time_decoders(tiny(), PROMPT, 500, names=("greedy",))),

    # --- display --------------------------------------------------------------------------------
    C(display.surprisal_html, "bits", V, lambda: display.surprisal_html(["a"], [-1.0])),
    C(display.surprisal_html, "surprisal_bits", V, lambda: display.surprisal_html(["a", "b"], [1.0])),
    C(display.surprisal_html, "vmax", V, lambda: display.surprisal_html(["a"], [1.0], vmax=0)),
    C(display.surprisal_html, "pieces", T, lambda: display.surprisal_html("ab", [1.0, 2.0])),
    C(display.tokens_html, "titles", V, lambda: display.tokens_html(["a", "b"], titles=["x"])),
    C(display.tokens_html, "pieces", T, lambda: display.tokens_html([1, 2])),
    C(display.html_table, "rows", V, lambda: display.html_table(["a", "b"], [[1]])),
    C(display.html_table, "header", T, lambda: display.html_table("ab", [])),

    # --- precision ------------------------------------------------------------------------------
    C(formats.float_format, "dtype", V, lambda: formats.float_format(torch.int32)),
    C(formats.float_format, "dtype", V, lambda: formats.float_format("float7")),
    C(formats.update_survives, "dtype", V, lambda: formats.update_survives(1.0, 1e-3, torch.int8)),
    C(formats.update_survives, "weight", V, lambda: formats.update_survives(NAN, 1e-3, torch.float16)),
    C(formats.update_survives, "weight", T, lambda: formats.update_survives("1", 1e-3, torch.float16)),
    C(formats.smallest_surviving_update, "weight", V, lambda: formats.smallest_surviving_update(torch.float16, weight=0.0)),
    C(formats.smallest_surviving_update, "weight", V, lambda: formats.smallest_surviving_update(torch.float16, weight=INF)),
    C(mixed.MasterWeightsOptimizer, "optimizer", V, lambda: mixed.MasterWeightsOptimizer(lin().half().parameters(), optimizer="lion")),
    C(mixed.MasterWeightsOptimizer, "params", V, lambda: mixed.MasterWeightsOptimizer([])),
    C(mixed.mixed_precision_setup, "dtype", V, lambda: mixed.mixed_precision_setup(lin(), torch.int8)),
    C(mixed.mixed_precision_setup, "model", T, lambda: mixed.mixed_precision_setup("m")),
    C(mixed.DynamicLossScaler, "init_scale", V, lambda: mixed.DynamicLossScaler(init_scale=0)),
    C(mixed.DynamicLossScaler, "growth_factor", V, lambda: mixed.DynamicLossScaler(growth_factor=0.5)),
    C(mixed.DynamicLossScaler, "backoff_factor", V, lambda: mixed.DynamicLossScaler(backoff_factor=1.5)),
    C(mixed.DynamicLossScaler, "growth_interval", V, lambda: mixed.DynamicLossScaler(growth_interval=0)),
    C(mixed.adam_vs_adamw_step, "grad", V, lambda: mixed.adam_vs_adamw_step(torch.ones(3), torch.ones(4))),
    C(mixed.adam_vs_adamw_step, "weight", T, lambda: mixed.adam_vs_adamw_step([1.0], torch.ones(1))),
    C(toy.toy_problem, "n", V, lambda: toy.toy_problem(n=0)),
    C(toy.toy_problem, "d", V, lambda: toy.toy_problem(n=10**7, d=10**5), "huge"),
    C(toy.train_toy, "mode", V, lambda: toy.train_toy("bf8")),
    C(toy.train_toy, "steps", V, lambda: toy.train_toy("fp32", steps=0)),
    C(toy.train_toy, "scaler", V, lambda: toy.train_toy("fp32", scaler="x")),
    C(prec_speed.block_step, "mode", V, lambda: prec_speed.block_step("fp8")),
    C(prec_speed.block_step, "n_heads", V, lambda: prec_speed.block_step("fp32", d_model=10, n_heads=3)),
    C(prec_speed.block_step, "batch", V, lambda: prec_speed.block_step("fp32", batch=10**6, seq=10**6), "huge"),
    C(prec_speed.block_step_seconds, "repeat", V, lambda: prec_speed.block_step_seconds("fp32", repeat=0)),

    # --- models ---------------------------------------------------------------------------------
    C(models.random_llama, "preset", V, lambda: models.random_llama("huge")),
    C(models.random_llama, "device", V, lambda: models.random_llama(device="bogus")),
    C(models.random_llama, "dtype", V, lambda: models.random_llama(dtype="float7")),
    C(models.random_llama, "seed", T, lambda: models.random_llama(seed="a")),
    C(models.load_model, "name", T, lambda: models.load_model(5)),
    C(models.load_model, "device", V, lambda: models.load_model(device="bogus")),
    C(models.load_model, "dtype", V, lambda: models.load_model(dtype="float7")),
    C(models.load_model, "name", V, lambda: models.load_model("/nonexistent/folder"), "missing folder"),

    # --- tokenization ---------------------------------------------------------------------------
    C(bpe.train_bpe, "vocab_size", V, lambda: bpe.train_bpe(["abc"], 10)),
    C(bpe.train_bpe, "texts", T, lambda: bpe.train_bpe("abc", 260)),
    C(bpe.train_bpe, "texts", V, lambda: bpe.train_bpe([], 260)),
    C(bpe.train_bpe, "min_frequency", V, lambda: bpe.train_bpe(["abc"], 260, min_frequency=-1)),
    C(bpe.BPETokenizer, "merges", T, lambda: bpe.BPETokenizer("ab")),
    C(bpe.BPETokenizer, "merges", T, lambda: bpe.BPETokenizer([("a", "b", "c")])),
    C(bpe.BPETokenizer.encode, "text", T, lambda: small_bpe().encode(5)),
    C(bpe.BPETokenizer.decode, "ids", V, lambda: small_bpe().decode([10**6])),
    C(bpe.BPETokenizer.decode, "ids", T, lambda: small_bpe().decode("abc")),
    C(bpe.check_texts, "texts", T, lambda: bpe.check_texts(["a", 5])),
    C(bpe.pretokenize, "text", T, lambda: bpe.pretokenize(None)),
    C(bpe.split_pieces, "text", T, lambda: bpe.split_pieces(b"abc")),
    C(library.reference_bpe, "vocab_size", V, lambda: library.reference_bpe(["abc"], 0)),
    C(library.reference_bpe, "texts", T, lambda: library.reference_bpe("abc", 300)),
    C(library.train_wordpiece, "vocab_size", V, lambda: library.train_wordpiece(["abc"], 0)),
    C(library.train_unigram, "vocab_size", T, lambda: library.train_unigram(["abc"], 3.5)),
    C(library.train_llama_style, "texts", T, lambda: library.train_llama_style([1, 2], 300)),
    C(library.model_json, "tokenizer", T, lambda: library.model_json("tok")),
    C(library.token_strings, "text", T, lambda: library.token_strings(hf_bpe(), None)),
    C(library.unigram_scores, "tokenizer", T, lambda: library.unigram_scores("tok")),
    C(library.unigram_viterbi, "word", V, lambda: library.unigram_viterbi("", {"a": -1.0})),
    C(library.unigram_viterbi, "log_probs", T, lambda: library.unigram_viterbi("ab", ["a"])),
    C(library.unigram_viterbi, "log_probs", V, lambda: library.unigram_viterbi("ab", {"a": NAN, "b": -1.0})),
    C(library.wordpiece_greedy, "vocab", T, lambda: library.wordpiece_greedy("ab", 5)),
    C(library.wordpiece_greedy, "word", T, lambda: library.wordpiece_greedy(5, {"a"})),
    C(library.segmentations, "limit", V, lambda: library.segmentations("abc", {"a", "b", "c"}, limit=0)),
    C(library.segmentations, "word", V, lambda: library.segmentations("a" * 10**5, {"a"}), "huge"),
    C(texts.token_counts, "texts", T, lambda: texts.token_counts(tokenizer(), ["abc"])),
    C(texts.token_counts, "tokenizer", T, lambda: texts.token_counts(5, {"a": "abc"})),
    C(texts.token_counts, "texts", V, lambda: texts.token_counts(tokenizer(), {})),

    # --- distributed ----------------------------------------------------------------------------
    C(launch.run, "world_size", V, lambda: launch.run(print, 0)),
    C(launch.run, "world_size", V, lambda: launch.run(print, 10**6), "huge"),
    C(launch.run, "backend", V, lambda: launch.run(print, 1, backend="mpi2")),
    C(launch.run, "fn", T, lambda: launch.run(5, 1)),
    C(launch.run, "timeout", V, lambda: launch.run(print, 1, timeout=0)),
    C(launch.check_importable, "fn", V, lambda: launch.check_importable("fn", lambda: None), "a lambda"),
    C(ddp.ddp_gradients, "world_size", V, lambda: ddp.ddp_gradients(lin, torch.zeros(4, 8), torch.zeros(4, 6), mse, 0)),
    C(ddp.ddp_gradients, "y", V, lambda: ddp.ddp_gradients(lin, torch.zeros(4, 8), torch.zeros(3, 6), mse, 2)),
    C(ddp.ddp_gradients, "x", V, lambda: ddp.ddp_gradients(lin, torch.zeros(3, 8), torch.zeros(3, 6), mse, 2), "not divisible"),
    C(ddp.ddp_gradients, "accumulation_steps", V, lambda: ddp.ddp_gradients(lin, torch.zeros(4, 8), torch.zeros(4, 6), mse, 2, accumulation_steps=0)),
    C(ddp.batchnorm_under_ddp, "world_size", V, lambda: ddp.batchnorm_under_ddp(lin, torch.zeros(4, 8), torch.zeros(4, 6), mse, 0)),
    C(dist_bn.sync_batch_norm, "x", V, lambda: dist_bn.sync_batch_norm(torch.zeros(4), None, None)),
    C(dist_bn.sync_batch_norm, "momentum", V, lambda: dist_bn.sync_batch_norm(torch.zeros(4, 2), None, None, momentum=2.0)),
    C(dist_bn.sync_batch_norm, "eps", V, lambda: dist_bn.sync_batch_norm(torch.zeros(4, 2), None, None, eps=0.0)),
    C(dist_bn.SyncBatchNorm, "num_features", V, lambda: dist_bn.SyncBatchNorm(0)),
    C(dist_bn.SyncBatchNorm, "num_features", T, lambda: dist_bn.SyncBatchNorm(2.5)),
    C(comm.ring_allreduce_bytes, "world_size", V, lambda: comm.ring_allreduce_bytes(100, 0)),
    C(comm.ring_allreduce_bytes, "nbytes", V, lambda: comm.ring_allreduce_bytes(-1, 2)),
    C(comm.ring_allreduce_bytes, "nbytes", V, lambda: comm.ring_allreduce_bytes(NAN, 2)),
    C(comm.simulate_ring_all_reduce, "buffers", T, lambda: comm.simulate_ring_all_reduce([]), "a TypeError that says non-empty list"),
    C(comm.simulate_ring_all_reduce, "buffers", V, lambda: comm.simulate_ring_all_reduce([torch.zeros(4), torch.zeros(5)])),
    C(comm.simulate_ring_all_reduce, "buffers", T, lambda: comm.simulate_ring_all_reduce([[1.0], [2.0]])),
    C(comm.measure_all_reduce, "world_size", V, lambda: comm.measure_all_reduce(0)),
    C(comm.measure_all_reduce, "nbytes", V, lambda: comm.measure_all_reduce(2, ())),
    C(comm.measure_all_reduce, "nbytes", V, lambda: comm.measure_all_reduce(2, (2**45,)), "huge"),
    C(comm.measure_all_reduce, "repeat", V, lambda: comm.measure_all_reduce(2, repeat=0)),
    C(comm.step_estimate, "params", V, lambda: comm.step_estimate(-1, 2)),
    C(comm.step_estimate, "link_gbit_s", V, lambda: comm.step_estimate(1e6, 2, link_gbit_s=0)),
    C(comm.step_estimate, "world_size", T, lambda: comm.step_estimate(1e6, 2.0)),
    C(comm.crossover_tokens, "flops_per_s", V, lambda: comm.crossover_tokens(2, flops_per_s=NAN)),
    C(comm.crossover_tokens, "world_size", V, lambda: comm.crossover_tokens(0)),
    C(ledger.sharded_ledger, "stage", V, lambda: ledger.sharded_ledger(lin(), 2, "zero9")),
    C(ledger.sharded_ledger, "world_size", V, lambda: ledger.sharded_ledger(lin(), 0, "ddp")),
    C(ledger.sharded_ledger, "precision", V, lambda: ledger.sharded_ledger(lin(), 2, "ddp", precision="fp7")),
    C(sharding.CausalTransformer, "n_heads", V, lambda: sharding.CausalTransformer(16, 10, 1, 3, 8)),
    C(sharding.CausalTransformer, "vocab_size", V, lambda: sharding.CausalTransformer(0, 8, 1, 2, 8)),
    C(sharding.make_transformer, "config", V, lambda: sharding.make_transformer(widht=8)),
    C(sharding.sharding_table, "world_sizes", V, lambda: sharding.sharding_table(world_sizes=())),
    C(sharding.sharding_table, "stages", V, lambda: sharding.sharding_table(stages=("zero9",))),
    C(sharding.sharding_table, "world_sizes", V, lambda: sharding.sharding_table(world_sizes=(0,))),
    C(dist_demo.main, "argv", T, lambda: dist_demo.main(5)),
]


#: Public names that take no argument a user could get wrong (constants, zero-argument functions,
#: helpers that only read the environment): nothing to put in the table.
NO_ARGUMENTS = {
    "IGNORE_INDEX", "DTYPE_NAMES", "default_device", "KINDS", "STRATEGIES", "PROMPT_TEMPLATE",
    "GPU_PEAKS", "DECODERS", "BACKENDS", "MAX_WORLD_SIZE", "STAGES", "STAGE_LABELS", "TOLERANCE",
    "TINY_TRANSFORMER", "MAX_NUM_BEAMS", "INTEGRITY_FILE", "MEASURED_STAGES", "LAWS", "OPTIMIZER_STATES", "PRECISIONS", "DEFAULT_MODEL",
    "LLAMA_PRESETS", "TOY_MODES", "STEP_MODES", "ALPHABET", "BYTE_TO_CHAR", "CHAR_TO_BYTE", "GPT2_PATTERN",
    "BYTE_TOKENS", "load_corpus", "load_parallel", "load_samples", "RANK_OPTIONS",
    "NOISE_LIMIT", "SECTIONS", "SIZES",
    # These read only $LLMLAB_CACHE / $XDG_CACHE_HOME and the installed package; what they do with a
    # damaged or missing cache is tested in tests/test_bad_inputs.py (the model cache section).
    "cache_dir", "default_gguf_path", "default_model_dir",
    # modelinfo's forward-signature readers take any object and answer for its class's forward
    # (False / "past_key_values" / None when it has no such keyword or field): nothing to refuse.
    "cache_keyword", "accepts_logits_to_keep", "output_cache",
    # _torch.read_floats: the library's loops hand it the losses they collected (no user input).
    "read_floats",
}

#: Modules whose names the table does not list: the bench (runs on its own inputs; its command
#: line is checked by tests/bench), the gallery and colab (build tools over our own notebooks) and
#: the widgets (tests/widgets drives each control through its allowed values).
OUT_OF_SCOPE_MODULES = ("llmlab.bench", "llmlab.gallery", "llmlab.colab", "llmlab.widgets", "llmlab.plotting")
CASES += [
    C(bpe.BPETokenizer.truncated, "n_merges", V, lambda: small_bpe().truncated(-1)),
    C(bpe.BPETokenizer.token_bytes, "token_id", V, lambda: small_bpe().token_bytes(10**6)),
    C(bpe.BPETokenizer.merge_steps, "word", T, lambda: small_bpe().merge_steps(5)),
]

#: Frozen dataclasses that llmlab builds and returns (results, records of a run) and the worker
#: error it raises: users read their fields, they do not construct them, so the table checks the
#: functions that build them instead.
RESULT_TYPES = {
    "AccumulationResult", "AccumulationRun", "RankPass", "BatchNormComparison", "Timing", "StateLedger",
    "ParamCount", "ScalingFit", "SVDFactors", "ScheduleRun", "CheckpointStats", "TrainResult",
    "InstructionBatch", "ExactMatch", "PerplexityResult", "Window", "DecodeRoofline", "DecoderTiming",
    "FloatFormat", "ToyRun", "TokenCount", "RingResult", "AllReduceTiming", "StepEstimate",
    "RankMemory", "ShardingRow", "RNGState", "WorkerError", "RankRun",
}


# ---------------------------------------------------------------------------------------------
# Names merged after issue 18: llmlab.anatomy, checkpointing.run_strategy, decoding.repetition,
# lora.validation_loss / lr_sweep, memory.LiveActivationTracker, precision.gradients,
# svd.noise_singular_values (issue 18b)
# ---------------------------------------------------------------------------------------------

from llmlab import anatomy as A  # noqa: E402
import sys  # noqa: E402

from llmlab.anatomy import causality, classify, corpus, datasets as anat_data, masks, objectives, params  # noqa: E402
from llmlab.anatomy import tiny as anat_tiny  # noqa: E402
from llmlab.decoding import repetition  # noqa: E402
from llmlab.precision import gradients  # noqa: E402

summarize = sys.modules["llmlab.anatomy.summarize"]  # the package's name `summarize` is the function


@functools.lru_cache(maxsize=None)
def tt():
    """A TinyTransformer over the animal vocabulary (vocab 20 here), max_len 16."""
    torch.manual_seed(0)
    return A.TinyTransformer(20, d_model=8, n_layers=1, n_heads=2, max_len=16)


@functools.lru_cache(maxsize=None)
def wv():
    return A.WordVocab.from_sentences(A.make_animal_corpus(50))


def tt_ids(n=6):
    return torch.tensor([[A.BOS] + [4 + i for i in range(n - 2)] + [A.EOS]])


def val_batch():
    return {"input_ids": PROMPT, "labels": PROMPT}


CASES += [
    # --- anatomy.masks ------------------------------------------------------------------------
    C(masks.attention_mask, "kind", V, lambda: A.attention_mask("diagonal", 4)),
    C(masks.attention_mask, "n", V, lambda: A.attention_mask("causal", 0)),
    C(masks.attention_mask, "n", T, lambda: A.attention_mask("causal", 4.0)),
    C(masks.attention_mask, "n_prefix", V, lambda: A.attention_mask("prefix", 4, n_prefix=5)),
    C(masks.attention_mask, "n_prefix", T, lambda: A.attention_mask("prefix", 4, n_prefix=True)),
    C(masks.attention_mask, "n", V, lambda: A.attention_mask("causal", 10**7), "huge"),
    C(masks.encoder_decoder_masks, "n_source", V, lambda: A.encoder_decoder_masks(0, 3)),
    C(masks.encoder_decoder_masks, "n_target", T, lambda: A.encoder_decoder_masks(3, "4")),
    C(masks.encoder_decoder_masks, "n_source", V, lambda: A.encoder_decoder_masks(10**7, 1), "huge"),
    # --- anatomy.tiny ---------------------------------------------------------------------------
    C(anat_tiny.attention, "q", T, lambda: A.attention("q", torch.zeros(3, 4), torch.zeros(3, 4))),
    C(anat_tiny.attention, "k", V, lambda: A.attention(torch.zeros(3, 4), torch.zeros(3, 5), torch.zeros(3, 4)), "head size"),
    C(anat_tiny.attention, "v", V, lambda: A.attention(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(2, 4)), "keys"),
    C(anat_tiny.attention, "mask", T, lambda: A.attention(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 4), torch.ones(3, 3))),
    C(anat_tiny.attention, "mask", V, lambda: A.attention(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 4),
                                                          torch.ones(2, 2, dtype=torch.bool)), "shape"),
    C(anat_tiny.attention, "q", T, lambda: A.attention(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4), torch.zeros(3, 4)), "dtype"),
    C(anat_tiny.TinyTransformer, "vocab_size", V, lambda: A.TinyTransformer(0)),
    C(anat_tiny.TinyTransformer, "vocab_size", T, lambda: A.TinyTransformer(True)),
    C(anat_tiny.TinyTransformer, "d_model", V, lambda: A.TinyTransformer(20, d_model=10, n_heads=4)),
    C(anat_tiny.TinyTransformer, "dropout", V, lambda: A.TinyTransformer(20, dropout=NAN)),
    C(anat_tiny.TinyTransformer.forward, "input_ids", V, lambda: tt()(torch.zeros(1, 17, dtype=torch.long)), "past max_len"),
    C(anat_tiny.TinyTransformer.forward, "input_ids", T, lambda: tt()(torch.zeros(1, 4))),
    C(anat_tiny.TinyTransformer.forward, "mask", V, lambda: tt()(tt_ids(), torch.ones(5, 5, dtype=torch.bool))),
    # --- anatomy.corpus -------------------------------------------------------------------------
    C(corpus.is_grammatical, "sentence", T, lambda: A.is_grammatical(["the", "dog"])),
    C(corpus.WordVocab, "tokens", T, lambda: A.WordVocab("abc")),
    C(corpus.WordVocab, "tokens", V, lambda: A.WordVocab(("dog", "cat")), "no specials"),
    C(corpus.WordVocab.from_sentences, "sentences", V, lambda: A.WordVocab.from_sentences([])),
    C(corpus.WordVocab.from_sentences, "sentences", V, lambda: A.WordVocab.from_sentences("the dog barks .")),
    C(corpus.WordVocab.from_sentences, "sentence", T, lambda: A.WordVocab.from_sentences([5])),
    C(corpus.WordVocab.encode, "sentence", V, lambda: wv().encode("the unicorn sings .")),
    C(corpus.WordVocab.encode, "sentence", T, lambda: wv().encode(None)),
    C(corpus.WordVocab.decode, "ids", V, lambda: wv().decode([1, 10**6])),
    C(corpus.WordVocab.decode, "ids", T, lambda: wv().decode("the dog")),
    C(corpus.encode_batch, "sentences", V, lambda: A.encode_batch([], wv())),
    C(corpus.encode_batch, "vocab", T, lambda: A.encode_batch(["the dog barks ."], None)),
    C(corpus.encode_batch, "sentence", V, lambda: A.encode_batch(["the unicorn sings ."], wv())),
    # --- anatomy.datasets -----------------------------------------------------------------------
    C(anat_data.load_animal_corpus, "folder", T, lambda: A.load_animal_corpus(folder=5)),
    C(anat_data.load_classification_task, "name", V, lambda: A.load_classification_task("spam", "train")),
    C(anat_data.load_classification_task, "split", V, lambda: A.load_classification_task("topic", "validation")),
    C(anat_data.load_documents, "n", V, lambda: A.load_documents(n=0)),
    C(anat_data.load_documents, "n", T, lambda: A.load_documents(n=2.0)),
    # --- anatomy.objectives ---------------------------------------------------------------------
    C(objectives.padded_mask, "kind", V, lambda: A.padded_mask("sideways", tt_ids())),
    C(objectives.padded_mask, "ids", T, lambda: A.padded_mask("causal", [[1, 2]])),
    C(objectives.padded_mask, "ids", V, lambda: A.padded_mask("causal", torch.tensor([1, 2]))),
    C(objectives.padded_mask, "pad_id", T, lambda: A.padded_mask("causal", tt_ids(), pad_id="[PAD]")),
    C(objectives.mask_tokens, "p", V, lambda: A.mask_tokens(tt_ids(), vocab_size=20, p=1.5)),
    C(objectives.mask_tokens, "vocab_size", V, lambda: A.mask_tokens(tt_ids(), vocab_size=0)),
    C(objectives.mask_tokens, "mask_id", V, lambda: A.mask_tokens(tt_ids(), vocab_size=20, mask_id=20)),
    C(objectives.mask_tokens, "special_mask", V, lambda: A.mask_tokens(tt_ids(), vocab_size=20,
                                                                        special_mask=torch.zeros(1, 3, dtype=torch.bool))),
    C(objectives.mask_tokens, "ids", T, lambda: A.mask_tokens(tt_ids().float(), vocab_size=20)),
    C(objectives.lm_loss, "objective", V, lambda: A.lm_loss(tt(), tt_ids(), "prefix")),
    C(objectives.lm_loss, "model", T, lambda: A.lm_loss("model", tt_ids(), "causal")),
    C(objectives.lm_loss, "mask_prob", V, lambda: A.lm_loss(tt(), tt_ids(), "masked", mask_prob=2.0)),
    C(objectives.lm_loss, "ids", V, lambda: A.lm_loss(tt(), torch.tensor([[1]]), "causal"), "one token"),
    C(objectives.train_tiny_lm, "steps", V, lambda: A.train_tiny_lm(tt(), tt_ids(), "causal", steps=0)),
    C(objectives.train_tiny_lm, "batch_size", T, lambda: A.train_tiny_lm(tt(), tt_ids(), "causal", batch_size=2.0)),
    C(objectives.train_tiny_lm, "mask_prob", V, lambda: A.train_tiny_lm(tt(), tt_ids(), "masked", mask_prob=0.0)),
    C(objectives.train_tiny_lm, "model", T, lambda: A.train_tiny_lm(None, tt_ids(), "causal")),
    C(objectives.train_tiny_lm, "ids", V, lambda: A.train_tiny_lm(tt(), torch.tensor([[1, 2, 99]]), "causal"), "id past vocab"),
    C(objectives.lm_loss, "ids", V, lambda: A.lm_loss(tt(), torch.tensor([[1, -2, 3]]), "causal"), "negative id"),
    C(objectives.target_logprobs, "model", T, lambda: A.target_logprobs("model", tt_ids())),
    C(objectives.target_logprobs, "ids", V, lambda: A.target_logprobs(tt(), torch.tensor([[1]])), "one token"),
    C(objectives.target_logprobs, "ids", T, lambda: A.target_logprobs(tt(), tt_ids().float())),
    C(objectives.sentence_logprob, "ids", V, lambda: A.sentence_logprob(tt(), torch.tensor([1, 5, 2]))),
    C(objectives.sentence_logprob, "model", T, lambda: A.sentence_logprob(None, tt_ids())),
    C(objectives.causal_perplexity, "ids", V, lambda: A.causal_perplexity(tt(), torch.tensor([[1, 0, 0]])), "only padding"),
    C(objectives.causal_perplexity, "model", T, lambda: A.causal_perplexity("model", tt_ids())),
    C(objectives.pseudo_logprobs, "mask_id", V, lambda: A.pseudo_logprobs(tt(), tt_ids(), mask_id=20)),
    C(objectives.pseudo_logprobs, "mask_id", T, lambda: A.pseudo_logprobs(tt(), tt_ids(), mask_id=3.0)),
    C(objectives.pseudo_logprobs, "ids", V, lambda: A.pseudo_logprobs(tt(), torch.tensor([[1]])), "one token"),
    C(objectives.pseudo_perplexity, "ids", V, lambda: A.pseudo_perplexity(tt(), torch.tensor([[1, 0, 0]])), "only padding"),
    C(objectives.pseudo_perplexity, "model", T, lambda: A.pseudo_perplexity([], tt_ids())),
    C(objectives.sample_sentences, "n", V, lambda: A.sample_sentences(tt(), 0)),
    C(objectives.sample_sentences, "max_len", V, lambda: A.sample_sentences(tt(), 2, max_len=17)),
    C(objectives.sample_sentences, "temperature", V, lambda: A.sample_sentences(tt(), 2, temperature=0.0)),
    C(objectives.sample_sentences, "model", T, lambda: A.sample_sentences(nn.Linear(2, 2), 2)),
    C(objectives.sample_sentences, "n", V, lambda: A.sample_sentences(tt(), 10**10), "huge"),
    C(objectives.fill_blank, "method", V, lambda: A.fill_blank(tt(), tt_ids(), 2, method="guess", candidates=[5])),
    C(objectives.fill_blank, "position", V, lambda: A.fill_blank(tt(), tt_ids(), 0, method="masked", candidates=[5])),
    C(objectives.fill_blank, "candidates", V, lambda: A.fill_blank(tt(), tt_ids(), 2, method="masked", candidates=[])),
    C(objectives.fill_blank, "candidates", V, lambda: A.fill_blank(tt(), tt_ids(), 2, method="masked", candidates=[99]), "past vocab"),
    C(objectives.fill_blank, "candidates", T, lambda: A.fill_blank(tt(), tt_ids(), 2, method="left", candidates=["dog"])),
    C(objectives.fill_blank, "candidates", T, lambda: A.fill_blank(tt(), tt_ids(), 2, method="left", candidates=5)),
    C(objectives.fill_blank, "model", T, lambda: A.fill_blank("model", tt_ids(), 2, method="left", candidates=[5])),
    C(objectives.pair_total, "objective", V, lambda: A.pair_total(tt(), tt_ids(), 2, objective="prefix")),
    C(objectives.pair_total, "position", V, lambda: A.pair_total(tt(), tt_ids(), 5, objective="causal")),
    C(objectives.pair_total, "ids", V, lambda: A.pair_total(tt(), tt_ids().repeat(2, 1), 2, objective="causal")),
    C(objectives.pair_total, "model", T, lambda: A.pair_total("model", tt_ids(), 2, objective="causal")),
    C(objectives.pair_total, "model", V, lambda: A.pair_total(A.TinyTransformer(50_000, d_model=4, n_layers=1, n_heads=1),
                                                              tt_ids(), 2, objective="causal"), "huge vocabulary"),
    # --- anatomy.causality (a Hugging Face causal LM: the tiny random Llama, vocab 97) ------------
    C(causality.logit_changes, "model", T, lambda: A.logit_changes("model", PROMPT, 1, 3)),
    C(causality.logit_changes, "position", V, lambda: A.logit_changes(tiny(), PROMPT, 4, 3)),
    C(causality.logit_changes, "new_token", V, lambda: A.logit_changes(tiny(), PROMPT, 1, 5), "same token"),
    C(causality.logit_changes, "new_token", V, lambda: A.logit_changes(tiny(), PROMPT, 1, 10**6), "past vocab"),
    C(causality.logit_changes, "input_ids", V, lambda: A.logit_changes(tiny(), PROMPT.repeat(2, 1), 1, 3)),
    C(causality.masked_nll, "mask", V, lambda: A.masked_nll(tiny(), PROMPT, A.attention_mask("causal", 3))),
    C(causality.masked_nll, "mask", T, lambda: A.masked_nll(tiny(), PROMPT, torch.ones(4, 4))),
    C(causality.masked_nll, "first_target", V, lambda: A.masked_nll(tiny(), PROMPT, A.attention_mask("causal", 4), first_target=0)),
    C(causality.masked_nll, "input_ids", T, lambda: A.masked_nll(tiny(), PROMPT.float(), A.attention_mask("causal", 4))),
    # --- anatomy.params -------------------------------------------------------------------------
    C(params.param_breakdown, "config", T, lambda: A.param_breakdown({"hidden_size": 8})),
    C(params.param_count, "config", T, lambda: A.param_count(None)),
    C(params.built_param_count, "config", T, lambda: A.built_param_count("LLaMA-7B")),
    C(params.paper_config, "name", V, lambda: A.paper_config("GPT-5")),
    C(params.paper_config, "name", V, lambda: A.paper_config(["LLaMA-7B"]), "unhashable"),
    # --- anatomy.classify -----------------------------------------------------------------------
    C(classify.hidden_features, "texts", V, lambda: A.hidden_features(tiny(), tokenizer(), [])),
    C(classify.hidden_features, "texts", V, lambda: A.hidden_features(tiny(), tokenizer(), "one text")),
    C(classify.hidden_features, "pool", V, lambda: A.hidden_features(tiny(), tokenizer(), ["a"], pool="max")),
    C(classify.hidden_features, "layer", T, lambda: A.hidden_features(tiny(), tokenizer(), ["a"], layer=1.0)),
    C(classify.hidden_features, "batch_size", V, lambda: A.hidden_features(tiny(), tokenizer(), ["a"], batch_size=0)),
    C(classify.hidden_features, "model", T, lambda: A.hidden_features("model", tokenizer(), ["a"])),
    C(classify.train_probe, "features", T, lambda: A.train_probe(torch.zeros(4, 2, dtype=torch.long), list("aabb"))),
    C(classify.train_probe, "labels", V, lambda: A.train_probe(torch.rand(4, 2), list("aab"))),
    C(classify.train_probe, "labels", V, lambda: A.train_probe(torch.rand(4, 2), list("aaaa")), "one class"),
    C(classify.train_probe, "l2", V, lambda: A.train_probe(torch.rand(4, 2), list("aabb"), l2=0.0)),
    C(classify.train_probe, "max_iter", V, lambda: A.train_probe(torch.rand(4, 2), list("aabb"), max_iter=0)),
    C(classify.train_probe, "features", V, lambda: A.train_probe(torch.tensor([[NAN, 1.0]] * 4), list("aabb")), "NaN"),
    C(classify.train_probe, "features", V, lambda: A.train_probe(torch.rand(4), list("aabb")), "1-D"),
    C(classify.Probe.logits, "features", V, lambda: A.train_probe(torch.rand(4, 2), list("aabb")).logits(torch.rand(3, 5)), "width"),
    C(classify.Probe.logits, "features", T, lambda: A.train_probe(torch.rand(4, 2), list("aabb")).logits([[0.0, 1.0]])),
    C(classify.label_token_ids, "words", T, lambda: A.label_token_ids(tokenizer(), [" positive", " negative"])),
    C(classify.label_token_ids, "words", V, lambda: A.label_token_ids(tokenizer(), {"pos": " positive"}), "one label"),
    C(classify.label_token_ids, "words", V, lambda: A.label_token_ids(tokenizer(), {"a": " antidisestablishmentarianism", "b": " no"})),
    C(classify.shared_prefix_length, "rows", V, lambda: A.shared_prefix_length([])),
    C(classify.shared_prefix_length, "rows", V, lambda: A.shared_prefix_length([[1, 2], []])),
    C(classify.shared_prefix_length, "rows", T, lambda: A.shared_prefix_length([1, 2])),
    C(classify.prompt_classify, "batch_size", V, lambda: A.prompt_classify(tiny(), tokenizer(), ["a"], {"a": " yes", "b": " no"},
                                                                             batch_size=0)),
    C(classify.prompt_classify, "prompts", V, lambda: A.prompt_classify(tiny(), tokenizer(), [], {"a": " yes", "b": " no"})),
    C(classify.prompt_classify, "model", T, lambda: A.prompt_classify("model", tokenizer(), ["a"], {"a": " yes", "b": " no"})),
    # --- anatomy.summarize ----------------------------------------------------------------------
    C(summarize.rouge_tokens, "text", T, lambda: A.rouge_tokens(None)),
    C(summarize.rouge_n, "n", V, lambda: A.rouge_n("a b", "a b", 0)),
    C(summarize.rouge_n, "n", T, lambda: A.rouge_n("a b", "a b", True)),
    C(summarize.rouge_n, "candidate", T, lambda: A.rouge_n("a b", ["a", "b"])),
    C(summarize.rouge1, "reference", T, lambda: A.rouge1(None, "a")),
    C(summarize.lead_sentences, "k", V, lambda: A.lead_sentences("A. B.", 0)),
    C(summarize.lead_sentences, "document", V, lambda: A.lead_sentences("", 1)),
    C(summarize.summary_prompt, "instruction", V, lambda: A.summary_prompt(tokenizer(), "doc", instruction="Summarize.")),
    C(summarize.summary_prompt, "document", T, lambda: A.summary_prompt(tokenizer(), 5)),
    C(summarize.summary_prompt, "tokenizer", V, lambda: A.summary_prompt(None, "doc")),
    C(summarize.summarize, "max_new_tokens", V, lambda: A.summarize(tiny(), tokenizer(), "doc", max_new_tokens=0)),
    C(summarize.summarize, "model", T, lambda: A.summarize("model", tokenizer(), "doc")),
    C(summarize.summarize, "document", V, lambda: A.summarize(tiny(), tokenizer(), "")),
    # --- checkpointing.run_strategy -------------------------------------------------------------
    C(checkpointing.run_strategy, "strategy", V, lambda: checkpointing.run_strategy(chain(), torch.zeros(2, 8), "some")),
    C(checkpointing.run_strategy, "x", V, lambda: checkpointing.run_strategy(chain(), torch.zeros(2, 5), "store_all"), "width"),
    C(checkpointing.run_strategy, "model", T, lambda: checkpointing.run_strategy(nn.Linear(8, 8), torch.zeros(2, 8), "store_all")),
    C(checkpointing.run_strategy, "segments", V, lambda: checkpointing.run_strategy(chain(), torch.zeros(2, 8), "sqrt", segments=9)),
    C(checkpointing.run_strategy, "sizes", V, lambda: checkpointing.run_strategy(chain(), torch.zeros(2, 8), "torch", sizes=[2, 2])),
    C(checkpointing.run_strategy, "x", T, lambda: checkpointing.run_strategy(chain(), [[0.0] * 8], "store_all")),
    # --- decoding.repetition --------------------------------------------------------------------
    C(repetition.repetition_penalty_filter, "penalty", V, lambda: decoding.repetition_penalty_filter(torch.zeros(1, 5), ids(1), 0.0)),
    C(repetition.repetition_penalty_filter, "penalty", V, lambda: decoding.repetition_penalty_filter(torch.zeros(1, 5), ids(1), NAN)),
    C(repetition.repetition_penalty_filter, "scores", T, lambda: decoding.repetition_penalty_filter(torch.zeros(1, 5, dtype=torch.long), ids(1), 1.2)),
    C(repetition.repetition_penalty_filter, "token_ids", T, lambda: decoding.repetition_penalty_filter(torch.zeros(1, 5), torch.zeros(1, 2), 1.2)),
    C(repetition.repetition_penalty_filter, "token_ids", V, lambda: decoding.repetition_penalty_filter(torch.zeros(1, 5), ids(-1), 1.2)),
    C(repetition.repetition_penalty_filter, "scores", V, lambda: decoding.repetition_penalty_filter(torch.zeros(2, 5), ids(1), 1.2), "batch"),
    C(repetition.repetition_penalty_filter, "scores", V, lambda: decoding.repetition_penalty_filter(torch.zeros(1, 5), torch.tensor([1]), 1.2), "dims"),
    C(repetition.banned_ngram_tokens, "n", V, lambda: decoding.banned_ngram_tokens([1, 2, 1], 0)),
    C(repetition.banned_ngram_tokens, "token_ids", T, lambda: decoding.banned_ngram_tokens("abc", 2)),
    C(repetition.banned_ngram_tokens, "token_ids", T, lambda: decoding.banned_ngram_tokens([1, 2.5], 2)),
    C(repetition.banned_ngram_tokens, "token_ids", V, lambda: decoding.banned_ngram_tokens(torch.zeros(2, 3, dtype=torch.long), 2)),
    # --- lora.validation_loss / lr_sweep --------------------------------------------------------
    C(lora.validation_loss, "model", T, lambda: lora.validation_loss("model", [val_batch()])),
    C(lora.validation_loss, "batches", V, lambda: lora.validation_loss(tiny(), [])),
    C(lora.validation_loss, "batches", T, lambda: lora.validation_loss(tiny(), [5])),
    C(lora.validation_loss, "batches", V, lambda: lora.validation_loss(tiny(), [{"input_ids": PROMPT}]), "no labels"),
    C(lora.validation_loss, "batches", T, lambda: lora.validation_loss(tiny(), None)),
    C(lora.lr_sweep, "make_model", T, lambda: lora.lr_sweep(tiny(), [val_batch()], [1e-3], [val_batch()])),
    C(lora.lr_sweep, "lrs", V, lambda: lora.lr_sweep(tiny, [val_batch()], [], [val_batch()])),
    C(lora.lr_sweep, "lrs", V, lambda: lora.lr_sweep(tiny, [val_batch()], [NAN], [val_batch()])),
    C(lora.lr_sweep, "lrs", T, lambda: lora.lr_sweep(tiny, [val_batch()], 1e-3, [val_batch()]), "a number, not a list"),
    C(lora.lr_sweep, "val_batches", V, lambda: lora.lr_sweep(lambda: models.random_llama("tiny"), [val_batch()], [1e-3], [])),
    C(lora.lr_sweep, "make_model()", T, lambda: lora.lr_sweep(lambda: "model", [val_batch()], [1e-3], [val_batch()])),
    C(lora.lr_sweep, "widen", V, lambda: lora.lr_sweep(tiny, [val_batch()], [1e-3], [val_batch()], widen=1), "one rate"),
    C(lora.lr_sweep, "widen", V, lambda: lora.lr_sweep(tiny, [val_batch()], [1e-3, 1e-2], [val_batch()], widen=-1)),
    C(lora.lr_sweep, "widen", T, lambda: lora.lr_sweep(tiny, [val_batch()], [1e-3, 1e-2], [val_batch()], widen=1.5)),
    # --- memory.LiveActivationTracker -----------------------------------------------------------
    C(memory.LiveActivationTracker, "model", T, lambda: memory.LiveActivationTracker("model")),
    C(memory.LiveActivationTracker, "model", T, lambda: memory.LiveActivationTracker(lambda x: x)),
    # --- precision.gradients --------------------------------------------------------------------
    C(gradients.lm_gradient_sizes, "model", T, lambda: precision.lm_gradient_sizes("model", PROMPT)),
    C(gradients.lm_gradient_sizes, "input_ids", T, lambda: precision.lm_gradient_sizes(tiny(), PROMPT.float())),
    C(gradients.lm_gradient_sizes, "input_ids", V, lambda: precision.lm_gradient_sizes(tiny(), ids(1)), "one token"),
    C(gradients.lm_gradient_sizes, "input_ids", V, lambda: precision.lm_gradient_sizes(tiny(), PROMPT[0]), "1-D"),
    C(gradients.lm_gradient_sizes, "attention_mask", V, lambda: precision.lm_gradient_sizes(tiny(), PROMPT, torch.ones(1, 3))),
    C(gradients.lm_gradient_sizes, "dtype", V, lambda: precision.lm_gradient_sizes(tiny(), PROMPT, dtype=torch.float32)),
    C(gradients.lm_gradient_sizes, "global_tokens", V, lambda: precision.lm_gradient_sizes(tiny(), PROMPT, global_tokens=2)),
    C(gradients.lm_gradient_sizes, "global_tokens", T, lambda: precision.lm_gradient_sizes(tiny(), PROMPT, global_tokens=1e6)),
    C(gradients.lm_gradient_sizes, "input_ids", V, lambda: precision.lm_gradient_sizes(tiny(), ids(1, 500, 2)), "id past vocab"),
    C(gradients.train_scaled_quadratic, "optimizer", V, lambda: precision.train_scaled_quadratic("rmsprop", lr=0.1)),
    C(gradients.train_scaled_quadratic, "steps", V, lambda: precision.train_scaled_quadratic("sgd", lr=0.1, steps=0)),
    C(gradients.train_scaled_quadratic, "steps", T, lambda: precision.train_scaled_quadratic("sgd", lr=0.1, steps=True)),
    C(gradients.train_scaled_quadratic, "steps", V, lambda: precision.train_scaled_quadratic("sgd", lr=0.1, steps=10**12), "huge"),
    C(gradients.train_scaled_quadratic, "curvatures", V, lambda: precision.train_scaled_quadratic("sgd", lr=0.1, curvatures=())),
    C(gradients.train_scaled_quadratic, "curvatures", V, lambda: precision.train_scaled_quadratic("sgd", lr=0.1, curvatures=(1.0, -2.0))),
    C(gradients.train_scaled_quadratic, "curvatures", T, lambda: precision.train_scaled_quadratic("sgd", lr=0.1, curvatures=5.0)),
    C(gradients.train_scaled_quadratic, "optimizer", V, lambda: precision.train_scaled_quadratic(["sgd"], lr=0.1), "unhashable"),
    # --- svd.noise_singular_values --------------------------------------------------------------
    C(svd.noise_singular_values, "m", V, lambda: svd.noise_singular_values(0, 4)),
    C(svd.noise_singular_values, "n", T, lambda: svd.noise_singular_values(4, 4.0)),
    C(svd.noise_singular_values, "std", V, lambda: svd.noise_singular_values(4, 4, std=-1.0)),
    C(svd.noise_singular_values, "std", V, lambda: svd.noise_singular_values(4, 4, std=NAN)),
    C(svd.noise_singular_values, "std", T, lambda: svd.noise_singular_values(4, 4, std="1")),
    C(svd.noise_singular_values, "m", V, lambda: svd.noise_singular_values(10**12, 10**12), "huge"),
]

NO_ARGUMENTS |= {
    # anatomy: constants (the grammar's word lists, the special ids, the tables and choices)
    "MASK_KINDS", "ANIMAL_SOUNDS", "DETERMINERS", "ADJECTIVES", "ADVERBS", "PLACES", "SPECIALS", "PAD", "BOS", "EOS",
    "MASK", "TASKS", "CLASSIFICATION_TASKS", "OBJECTIVES", "FILL_METHODS", "FAMILIES", "LLM_THRESHOLD", "PAPER_CONFIGS", "POOLINGS",
    "SUMMARY_INSTRUCTION", "QUADRATIC_OPTIMIZERS",
    # paths.DATA_FILES: where the shipped data lives (data_path has rows).
    "DATA_FILES",
}
RESULT_TYPES |= {
    "EncoderDecoderMasks", "LabelledText", "TrainLog", "ParamBreakdown", "PromptResult", "RougeScore",
    "LayerCall", "SweepRun", "GradientSizes", "QuadraticRun",
    # Probe is what train_probe returns (rows above check train_probe and Probe.logits).
    "Probe",
}


# --- exercises (issue 17): an unknown id or a wrong kind of answer is the only ValueError -----------
from llmlab import exercises  # noqa: E402

CASES += [
    C(exercises.check, "exercise_id", V, lambda: exercises.check("99.1", 1)),
    C(exercises.check, "answer", V, lambda: exercises.check("01.1", "1000")),
    C(exercises.grade, "exercise_id", V, lambda: exercises.grade(6.2, 1)),
    C(exercises.grade, "answer", V, lambda: exercises.grade("06.1", 12)),
]
NO_ARGUMENTS |= {"EXERCISES", "exercise_ids"}
RESULT_TYPES |= {"Exercise"}


# --- prompting, alignment, prompt_data (issue 14) ---------------------------------------------------
from llmlab import alignment, prompt_data, prompting  # noqa: E402
from llmlab.data import collate as _collate  # noqa: E402


# the stand-in tokenizer the prompting and alignment tests use (one id per character)
from conftest import CharTokenizer as CharTok  # noqa: E402


class NoEosTok(CharTok):
    eos_token_id = None


PT = prompting
AL = alignment
PD = prompt_data
TPL = "Review: {input}\nSentiment: {output}"
LABELS = ["positive", "negative"]
Q = [("great film", "positive"), ("dull plot", "negative")]
PAIR = {"prompt": "Q?", "chosen": "A.", "rejected": "A. Blah."}


def pref_batches(n=1):
    return AL.make_preference_batches([PAIR], CharTok(), batch_size=1, steps=n, chat=False)


def inst_batch(labels=(-100, -100, 7, 9)):
    return _collate([{"input_ids": [1, 5, 7, 9], "labels": list(labels)}], 0)


def lp(*values):
    return torch.tensor(values, dtype=torch.float32)


def sgd():
    return torch.optim.SGD(tiny().parameters(), lr=0.0)


CASES += [
    # --- prompting ------------------------------------------------------------------------------
    C(prompting.Template, "example", T, lambda: PT.Template(example=5)),
    C(prompting.Template, "example", V, lambda: PT.Template(example="no fields here")),
    C(prompting.Template, "example", V, lambda: PT.Template(example="{output} then {input}"), "output not last"),
    C(prompting.Template, "example", V, lambda: PT.Template(example="{input"), "bad format"),
    C(prompting.Template, "instruction", T, lambda: PT.Template(instruction=None)),
    C(prompting.Template, "separator", T, lambda: PT.Template(separator=3)),
    C(prompting.few_shot_prompt, "demonstrations", T, lambda: PT.few_shot_prompt("a b", "q", template=TPL)),
    C(prompting.few_shot_prompt, "demonstrations", T, lambda: PT.few_shot_prompt([("a",)], "q", template=TPL), "not a pair"),
    C(prompting.few_shot_prompt, "demonstrations", V, lambda: PT.few_shot_prompt([{"input": "a"}], "q", template=TPL),
      "no output key"),
    C(prompting.few_shot_prompt, "query", T, lambda: PT.few_shot_prompt([], 5, template=TPL)),
    C(prompting.few_shot_prompt, "template", T, lambda: PT.few_shot_prompt([], "q", template=5)),
    C(prompting.few_shot_prompt, "example", V, lambda: PT.few_shot_prompt([], "q", template="no fields")),
    C(prompting.label_logprobs, "model", T, lambda: PT.label_logprobs("model", CharTok(), "p", LABELS)),
    C(prompting.label_logprobs, "labels", V, lambda: PT.label_logprobs(tiny(), CharTok(), "p", [])),
    C(prompting.label_logprobs, "labels", T, lambda: PT.label_logprobs(tiny(), CharTok(), "p", "positive")),
    C(prompting.label_logprobs, "labels", V, lambda: PT.label_logprobs(tiny(), CharTok(), "p", [" a", ""]), "empty label"),
    C(prompting.label_logprobs, "prompt", V, lambda: PT.label_logprobs(tiny(), CharTok(), "", LABELS)),
    C(prompting.label_logprobs, "prompt", T, lambda: PT.label_logprobs(tiny(), CharTok(), 5, LABELS)),
    C(prompting.evaluate_icl, "model", T, lambda: PT.evaluate_icl(None, CharTok(), [], Q, template=TPL, labels=LABELS)),
    C(prompting.evaluate_icl, "queries", V, lambda: PT.evaluate_icl(tiny(), CharTok(), [], [], template=TPL, labels=LABELS)),
    C(prompting.evaluate_icl, "queries", T, lambda: PT.evaluate_icl(tiny(), CharTok(), [], 5, template=TPL, labels=LABELS)),
    C(prompting.evaluate_icl, "queries", V, lambda: PT.evaluate_icl(tiny(), CharTok(), [], [("x", "maybe")], template=TPL,
                                                                    labels=LABELS), "output not a label"),
    C(prompting.evaluate_icl, "labels", V, lambda: PT.evaluate_icl(tiny(), CharTok(), [], Q, template=TPL, labels=[])),
    C(prompting.evaluate_icl, "template", T, lambda: PT.evaluate_icl(tiny(), CharTok(), [], Q, template=None, labels=LABELS)),
    C(prompting.evaluate_icl, "demonstrations", T, lambda: PT.evaluate_icl(tiny(), CharTok(), 5, Q, template=TPL, labels=LABELS)),
    C(prompting.sample_demonstrations, "k", V, lambda: PT.sample_demonstrations(Q, -1)),
    C(prompting.sample_demonstrations, "k", V, lambda: PT.sample_demonstrations(Q, 3), "more than the pool"),
    C(prompting.sample_demonstrations, "k", T, lambda: PT.sample_demonstrations(Q, True)),
    C(prompting.sample_demonstrations, "pool", T, lambda: PT.sample_demonstrations(5, 1)),
    C(prompting.sample_demonstrations, "seed", T, lambda: PT.sample_demonstrations(Q, 1, seed=1.5)),
    C(prompting.sample_demonstrations, "seed", T, lambda: PT.sample_demonstrations(Q, 1, seed="0")),
    C(prompting.icl_sweep, "shots", V, lambda: PT.icl_sweep(tiny(), CharTok(), Q, Q, template=TPL, labels=LABELS, shots=())),
    C(prompting.icl_sweep, "shots", T, lambda: PT.icl_sweep(tiny(), CharTok(), Q, Q, template=TPL, labels=LABELS, shots=2)),
    C(prompting.icl_sweep, "shots", V, lambda: PT.icl_sweep(tiny(), CharTok(), Q, Q, template=TPL, labels=LABELS, shots=(9,))),
    C(prompting.icl_sweep, "draws", V, lambda: PT.icl_sweep(tiny(), CharTok(), Q, Q, template=TPL, labels=LABELS, shots=(0,), draws=0)),
    C(prompting.icl_sweep, "draws", T, lambda: PT.icl_sweep(tiny(), CharTok(), Q, Q, template=TPL, labels=LABELS, shots=(0,), draws=2.0)),
    C(prompting.icl_sweep, "draws", V, lambda: PT.icl_sweep(tiny(), CharTok(), Q, Q, template=TPL, labels=LABELS, shots=(0,),
                                                            draws=10**12), "huge"),
    C(prompting.icl_sweep, "seed", T, lambda: PT.icl_sweep(tiny(), CharTok(), Q, Q, template=TPL, labels=LABELS, shots=(1,),
                                                           seed=0.5)),
    C(prompting.icl_sweep, "pool", T, lambda: PT.icl_sweep(tiny(), CharTok(), 5, Q, template=TPL, labels=LABELS)),
    C(prompting.icl_sweep, "model", T, lambda: PT.icl_sweep("model", CharTok(), Q, Q, template=TPL, labels=LABELS, shots=(0,))),
    C(prompting.weights_fingerprint, "model", T, lambda: PT.weights_fingerprint({"w": torch.zeros(2)})),
    C(prompting.alpaca_text, "instruction", V, lambda: PT.alpaca_text("", "", "out")),
    C(prompting.alpaca_text, "instruction", T, lambda: PT.alpaca_text(5, "", "out")),
    C(prompting.alpaca_text, "input", T, lambda: PT.alpaca_text("Say hi", None, "out")),
    C(prompting.alpaca_text, "output", T, lambda: PT.alpaca_text("Say hi", "", None)),
    # --- alignment ------------------------------------------------------------------------------
    C(alignment.dpo_loss, "beta", V, lambda: AL.dpo_loss(lp(0), lp(0), lp(0), lp(0), beta=0.0)),
    C(alignment.dpo_loss, "beta", V, lambda: AL.dpo_loss(lp(0), lp(0), lp(0), lp(0), beta=NAN)),
    C(alignment.dpo_loss, "beta", T, lambda: AL.dpo_loss(lp(0), lp(0), lp(0), lp(0), beta=True)),
    C(alignment.dpo_loss, "policy_chosen_logps", T, lambda: AL.dpo_loss([0.0], lp(0), lp(0), lp(0))),
    C(alignment.dpo_loss, "policy_rejected_logps", T, lambda: AL.dpo_loss(lp(0), torch.zeros(1, dtype=torch.long), lp(0), lp(0))),
    C(alignment.dpo_loss, "reference_chosen_logps", V, lambda: AL.dpo_loss(lp(0), lp(0), torch.zeros(0), lp(0)), "empty"),
    C(alignment.dpo_loss, "reference_rejected_logps", V, lambda: AL.dpo_loss(lp(0), lp(0), lp(0), lp(0, 1)), "lengths"),
    C(alignment.dpo_loss, "policy_chosen_logps", V, lambda: AL.dpo_loss(torch.zeros(2, 1), lp(0, 0), lp(0, 0), lp(0, 0)), "2-D"),
    C(alignment.tokenize_preference, "example", T, lambda: AL.tokenize_preference("Q? A.", CharTok())),
    C(alignment.tokenize_preference, "example", V, lambda: AL.tokenize_preference({"prompt": "Q?", "chosen": "A."}, CharTok())),
    C(alignment.tokenize_preference, "chosen", T, lambda: AL.tokenize_preference({**PAIR, "chosen": 5}, CharTok(), chat=False)),
    C(alignment.tokenize_preference, "chat", T, lambda: AL.tokenize_preference(PAIR, CharTok(), chat=1)),
    C(alignment.tokenize_preference, "tokenizer", V, lambda: AL.tokenize_preference(PAIR, NoEosTok(), chat=False)),
    C(alignment.tokenize_preference, "tokenizer", V, lambda: AL.tokenize_preference(PAIR, None, chat=False)),
    C(alignment.make_preference_batches, "batch_size", V, lambda: AL.make_preference_batches([PAIR], CharTok(), batch_size=0, steps=1)),
    C(alignment.make_preference_batches, "batch_size", T, lambda: AL.make_preference_batches([PAIR], CharTok(), batch_size=2.0,
                                                                                             steps=1)),
    C(alignment.make_preference_batches, "steps", V, lambda: AL.make_preference_batches([PAIR], CharTok(), batch_size=1, steps=0)),
    C(alignment.make_preference_batches, "steps", V, lambda: AL.make_preference_batches([PAIR], CharTok(), batch_size=1,
                                                                                        steps=10**12, chat=False), "huge"),
    C(alignment.make_preference_batches, "seed", V, lambda: AL.make_preference_batches([PAIR], CharTok(), batch_size=1, steps=1,
                                                                                       seed=-1)),
    C(alignment.make_preference_batches, "examples", V, lambda: AL.make_preference_batches([], CharTok(), batch_size=1, steps=1)),
    C(alignment.make_preference_batches, "examples", T, lambda: AL.make_preference_batches(PAIR, CharTok(), batch_size=1, steps=1,
                                                                                           chat=False), "one dict"),
    C(alignment.make_preference_batches, "chat", T, lambda: AL.make_preference_batches([PAIR], CharTok(), batch_size=1, steps=1,
                                                                                       chat="no")),
    C(alignment.reference_logps, "model", T, lambda: AL.reference_logps("model", pref_batches())),
    C(alignment.reference_logps, "batches", T, lambda: AL.reference_logps(tiny(), 5)),
    C(alignment.reference_logps, "batches", V, lambda: AL.reference_logps(tiny(), [])),
    C(alignment.evaluate_preferences, "model", T, lambda: AL.evaluate_preferences("model", pref_batches(), [(lp(0), lp(0))])),
    C(alignment.evaluate_preferences, "reference", V, lambda: AL.evaluate_preferences(tiny(), pref_batches(), [])),
    C(alignment.evaluate_preferences, "batches", V, lambda: AL.evaluate_preferences(tiny(), [], [])),
    C(alignment.evaluate_preferences, "beta", V, lambda: AL.evaluate_preferences(tiny(), pref_batches(), [(lp(0), lp(0))], beta=-1.0)),
    C(alignment.evaluate_preferences, "reference", T, lambda: AL.evaluate_preferences(tiny(), pref_batches(), 5)),
    C(alignment.train_dpo, "model", T, lambda: AL.train_dpo("model", pref_batches(), sgd(), reference=[(lp(0), lp(0))])),
    C(alignment.train_dpo, "beta", V, lambda: AL.train_dpo(tiny(), pref_batches(), sgd(), reference=[(lp(0), lp(0))], beta=-0.1)),
    C(alignment.train_dpo, "beta", V, lambda: AL.train_dpo(tiny(), pref_batches(), sgd(), reference=[(lp(0), lp(0))], beta=INF)),
    C(alignment.train_dpo, "reference", V, lambda: AL.train_dpo(tiny(), pref_batches(2), sgd(), reference=[(lp(0), lp(0))])),
    C(alignment.train_dpo, "batches", V, lambda: AL.train_dpo(tiny(), [], sgd(), reference=[])),
    C(alignment.train_dpo, "optimizer", T, lambda: AL.train_dpo(tiny(), pref_batches(), None, reference=[(lp(0), lp(0))])),
    C(alignment.stop_probabilities, "model", T, lambda: AL.stop_probabilities("model", CharTok(), [PAIR], chat=False)),
    C(alignment.stop_probabilities, "examples", V, lambda: AL.stop_probabilities(tiny(), CharTok(), [], chat=False)),
    C(alignment.stop_probabilities, "example", T, lambda: AL.stop_probabilities(tiny(), CharTok(), [5], chat=False)),
    C(alignment.stop_probabilities, "examples", T, lambda: AL.stop_probabilities(tiny(), CharTok(), PAIR, chat=False), "one dict"),
    C(alignment.stop_probabilities, "chat", T, lambda: AL.stop_probabilities(tiny(), CharTok(), [PAIR], chat="no")),
    C(alignment.generate_answers, "model", T, lambda: AL.generate_answers("model", CharTok(), ["hi"], chat=False)),
    C(alignment.generate_answers, "max_new_tokens", V, lambda: AL.generate_answers(tiny(), CharTok(), ["hi"], max_new_tokens=0,
                                                                                   chat=False)),
    C(alignment.generate_answers, "max_new_tokens", T, lambda: AL.generate_answers(tiny(), CharTok(), ["hi"], max_new_tokens=4.0,
                                                                                   chat=False)),
    C(alignment.generate_answers, "max_new_tokens", V, lambda: AL.generate_answers(tiny(), CharTok(), ["hi"], max_new_tokens=10**9,
                                                                                   chat=False), "huge"),
    C(alignment.generate_answers, "prompts", V, lambda: AL.generate_answers(tiny(), CharTok(), [], chat=False)),
    C(alignment.generate_answers, "prompts", T, lambda: AL.generate_answers(tiny(), CharTok(), "hi", chat=False), "one string"),
    C(alignment.generate_answers, "prompts", T, lambda: AL.generate_answers(tiny(), CharTok(), [5], chat=False)),
    C(alignment.generate_answers, "chat", T, lambda: AL.generate_answers(tiny(), CharTok(), ["hi"], chat="no")),
    # --- prompt_data ----------------------------------------------------------------------------
    C(prompt_data.load_task, "name", V, lambda: PD.load_task("spam", "pool")),
    C(prompt_data.load_task, "split", V, lambda: PD.load_task("sentiment", "train")),
    C(prompt_data.load_task, "folder", T, lambda: PD.load_task("sentiment", "pool", folder=5)),
    C(prompt_data.load_preferences, "split", V, lambda: PD.load_preferences("test")),
    C(prompt_data.load_preferences, "split", V, lambda: PD.load_preferences(["train"]), "unhashable"),
    C(prompt_data.load_preferences, "folder", T, lambda: PD.load_preferences("train", folder=5)),
]
NO_ARGUMENTS |= {
    # prompting / prompt_data constants: the Alpaca prompts, LLaMA's published mixture and token counts
    "ALPACA_PROMPT", "ALPACA_PROMPT_NO_INPUT", "LLAMA_MIXTURE", "LLAMA_TOKENS",
}
RESULT_TYPES |= {
    # What evaluate_icl / icl_sweep / evaluate_preferences / train_dpo return.
    "ICLResult", "ICLSweep", "PreferenceEval", "DPOResult",
    # One row of LLAMA_MIXTURE: a record of published numbers, built by the module, not by a user.
    "MixtureRow",
}

# --- stats (issue 22): the Wilson interval of an accuracy -------------------------------------------
from llmlab import stats  # noqa: E402

CASES += [
    C(stats.wilson_interval, "successes", V, lambda: stats.wilson_interval(9, 8), "more than n"),
    C(stats.wilson_interval, "successes", T, lambda: stats.wilson_interval(1.5, 2)),
    C(stats.wilson_interval, "n", V, lambda: stats.wilson_interval(0, 0)),
    C(stats.wilson_interval, "confidence", V, lambda: stats.wilson_interval(1, 2, confidence=1.0)),
    C(stats.wilson_interval, "confidence", T, lambda: stats.wilson_interval(1, 2, confidence="95%")),
    C(stats.sign_test, "wins", V, lambda: stats.sign_test(5, 4)),
    C(stats.paired_t_interval, "differences", V, lambda: stats.paired_t_interval([0.1])),
    C(stats.paired_t_interval, "differences", V, lambda: stats.paired_t_interval([0.1] * 40), "too many for the table"),
    C(stats.sign_test, "n", V, lambda: stats.sign_test(0, 0)),
    C(stats.sign_test, "alternative", V, lambda: stats.sign_test(1, 4, alternative="less")),
]

# --- precision.activations (issue 22): saved bytes in fp32, under autocast, in bf16 -----------------
from llmlab.precision import activations as prec_act  # noqa: E402

CASES += [
    C(prec_act.saved_bytes_curve, "model", T, lambda: prec_act.saved_bytes_curve(nn.Linear(2, 2), [64, 128])),
    C(prec_act.saved_bytes_curve, "model", V, lambda: prec_act.saved_bytes_curve(models.random_llama("tiny", dtype=torch.bfloat16), [64, 128]),
      "not fp32"),
    C(prec_act.SavedBytesCurve.line, "tokens", V, lambda: prec_act.SavedBytesCurve((2, 2), {"fp32": (1, 1)}).line("fp32"),
      "one count"),
    C(prec_act.saved_bytes_curve, "tokens", V, lambda: prec_act.saved_bytes_curve(tiny(), [63, 128]), "not a multiple"),
    C(prec_act.saved_bytes_curve, "tokens", T, lambda: prec_act.saved_bytes_curve(tiny(), 128)),
    C(prec_act.saved_bytes_curve, "modes", V, lambda: prec_act.saved_bytes_curve(tiny(), [64, 128], modes=["fp16"])),
    C(prec_act.saved_bytes_curve, "batch", V, lambda: prec_act.saved_bytes_curve(tiny(), [64, 128], batch=0)),
    C(prec_act.SavedBytesCurve.line, "mode", V, lambda: prec_act.SavedBytesCurve((1, 2), {"fp32": (1, 2)}).line("bf16")),
]
NO_ARGUMENTS |= {"SAVED_BYTES_MODES"}  # a constant: the three modes
RESULT_TYPES |= {"SavedBytesCurve"}    # what saved_bytes_curve returns

# --- data.response_scores (issue 22): one teacher-forced pass per batch -----------------------------
CASES += [
    C(data.response_scores, "model", T, lambda: data.response_scores("model", [])),
    C(data.response_scores, "batches", T, lambda: data.response_scores(tiny(), val_batch())),
    C(data.response_scores, "batches", T, lambda: data.response_scores(tiny(), [{"input_ids": None}])),
    C(data.response_scores, "batches", V, lambda: data.response_scores(
        tiny(), [data.collate([{"input_ids": [5, 6], "labels": [-100, -100]}], pad_token_id=0)]), "no response token"),
]
RESULT_TYPES |= {"ResponseScores"}  # what response_scores returns
# ---------------------------------------------------------------------------------------------
# llmlab.distributed.tokens (issue 22: token-level losses under DDP, notebook 12)
# ---------------------------------------------------------------------------------------------

from llmlab.distributed import tokens as dist_tokens  # noqa: E402

_token_model = functools.partial(accumulation.make_token_model)
_ids = torch.zeros(4, 6, dtype=torch.long)
CASES += [
    C(dist_tokens.ddp_token_losses, "world_size", V, lambda: dist_tokens.ddp_token_losses(_token_model, _ids, _ids, 0)),
    C(dist_tokens.ddp_token_losses, "x", V, lambda: dist_tokens.ddp_token_losses(_token_model, _ids[:3], _ids[:3], 2), "not divisible"),
    C(dist_tokens.ddp_token_losses, "y", V, lambda: dist_tokens.ddp_token_losses(_token_model, _ids, _ids[:, :5], 2)),
    C(dist_tokens.ddp_token_losses, "x", T, lambda: dist_tokens.ddp_token_losses(_token_model, _ids.float(), _ids, 2)),
    C(dist_tokens.ddp_token_losses, "normalizations", V,
      lambda: dist_tokens.ddp_token_losses(_token_model, _ids, _ids, 2, normalizations=("mean",))),
    C(dist_tokens.ddp_token_losses, "normalizations", T,
      lambda: dist_tokens.ddp_token_losses(_token_model, _ids, _ids, 2, normalizations="rank_mean")),
    C(dist_tokens.ddp_token_losses, "y", V,
      lambda: dist_tokens.ddp_token_losses(_token_model, _ids, torch.full((4, 6), -100), 2), "a rank without tokens"),
    C(dist_tokens.ddp_token_losses, "model_fn", V, lambda: dist_tokens.ddp_token_losses(lambda: None, _ids, _ids, 2)),
    C(dist_tokens.ddp_token_losses, "timeout", V, lambda: dist_tokens.ddp_token_losses(_token_model, _ids, _ids, 2, timeout=0)),
]
CASES += [
    C(classify.next_token_logprobs, "batch_size", V, lambda: A.next_token_logprobs(tiny(), tokenizer(), ["a"], batch_size=0)),
    C(classify.next_token_logprobs, "prompts", V, lambda: A.next_token_logprobs(tiny(), tokenizer(), [])),
    C(classify.next_token_logprobs, "model", T, lambda: A.next_token_logprobs("model", tokenizer(), ["a"])),
]
NO_ARGUMENTS |= {"TOKEN_NORMALIZATIONS"}
RESULT_TYPES |= {"TokenLossPass", "DDPTokenLoss"}

# --- stats.paired_test (issue 22, notebooks 09 and 11): the exact McNemar test ----------------------
CASES += [
    C(stats.paired_test, "first_correct", V, lambda: stats.paired_test([1, 0], [1]), "unequal lengths"),
    C(stats.paired_test, "first_correct", V, lambda: stats.paired_test([], []), "empty"),
    C(stats.paired_test, "first_correct", T, lambda: stats.paired_test("10", "01"), "strings"),
]
RESULT_TYPES |= {"PairedTest"}  # what paired_test returns

# --- alignment.optimal_policy (issue 22, notebook 11's β explorer) -------------------------------------
CASES += [
    C(alignment.optimal_policy, "beta", V, lambda: alignment.optimal_policy(torch.zeros(2), torch.zeros(2), beta=0.0)),
    C(alignment.optimal_policy, "rewards", V, lambda: alignment.optimal_policy(torch.zeros(2), torch.zeros(3), beta=0.1),
      "shape"),
    C(alignment.optimal_policy, "reference_logps", T, lambda: alignment.optimal_policy([0.0, 1.0], torch.zeros(2), beta=0.1)),
    C(alignment.optimal_policy, "rewards", V,
      lambda: alignment.optimal_policy(torch.zeros(2), torch.tensor([0.0, NAN]), beta=0.1), "NaN"),
]
RESULT_TYPES |= {"OptimalPolicy"}  # what optimal_policy returns
NO_ARGUMENTS |= {"LLAMA_I_MMLU", "PRETRAINING_DATA"}  # published numbers (the models' papers)
CASES += [
]
#: Public for reading, testing or pickling by name, but called by llmlab's entry points, which check
#: the arguments first: they trust their callers and carry no checks (issue 23), so no rows.
INNER = {
    # rank functions that distributed.run starts in each process (ddp_gradients, batchnorm_under_ddp,
    # measure_all_reduce, the demo's main check their arguments before the processes start)
    "ddp_rank_pass", "batchnorm_rank_passes", "token_loss_rank_pass", "rank_shard", "allreduce_rank_timings", "shard_and_train", "train_rank",
    "storage_bytes",
    # steps of the ledgers and of the accumulation / DDP passes (they hand over tensors and models they made)
    "tensor_bytes", "batchnorm_running_stats",
    # the bench's precision timing (block_step checks each mode) and ddp_rank_pass's BatchNorm conversion
    "block_step_timings", "convert_sync_batchnorm",
    # the steps of the batch makers and of exact_match
    "epoch_order", "left_pad", "collate", "collate_preferences",
    # the chat template step of tokenize_preference / generate_answers (they check the user text)
    "chat_prompt",
    # HTML and image helpers the widgets call on every slider move
    "escape", "bar_table_html", "new_figure", "figure_png", "encode_image",
    # tokenization helpers of token_counts and the bench
    "encode_ids",
    # _torch helpers every module calls with a model it has checked
    "model_device", "eval_mode", "grads_by_name",
    # data generators that only the scripts in data/ run (and the loaders' fallback, with defaults):
    # they trust their arguments (issue 23, rule 4)
    "make_date_instructions", "write_instructions", "make_task", "make_preferences", "write_prompt_data",
    "make_animal_corpus", "write_corpus",
    # the data locator the loaders call (a missing file: FileNotFoundError, tests/test_packaging.py)
    "data_path",
}

# ---------------------------------------------------------------------------------------------
# llmlab.quantization (notebook 13)
# ---------------------------------------------------------------------------------------------

from llmlab import quantization as QZ  # noqa: E402
from llmlab.quantization import blocks as qz_blocks, gguf_file as qz_file, gptq as qz_gptq  # noqa: E402
from llmlab.quantization import model as qz_model, outliers as qz_out, rtn as qz_rtn, speed as qz_speed  # noqa: E402
from llmlab.quantization import int8_quality as qz_int8q  # noqa: E402

W64 = torch.ones(4, 64)

CASES += [
    C(qz_blocks.quantize_gguf, "x", V, lambda: QZ.quantize_gguf(torch.randn(4, 30), "Q4_0"), "row not a multiple of 32"),
    C(qz_blocks.quantize_gguf, "x", V, lambda: QZ.quantize_gguf(torch.tensor(1.0), "Q4_0"), "0-d"),
    C(qz_blocks.quantize_gguf, "x", T, lambda: QZ.quantize_gguf([1.0] * 32, "Q4_0"), "a list"),
    C(qz_blocks.quantize_gguf, "x", T, lambda: QZ.quantize_gguf(np.array(["a"] * 32), "Q4_0"), "strings"),
    C(qz_blocks.quantize_gguf, "qtype", V, lambda: QZ.quantize_gguf(W64, "Q3_K")),
    C(qz_blocks.quantize_gguf, "qtype", T, lambda: QZ.quantize_gguf(W64, 5)),
    C(qz_blocks.dequantize_gguf, "data", V, lambda: QZ.dequantize_gguf(np.zeros(10, dtype=np.uint8), "Q4_0")),
    C(qz_blocks.dequantize_gguf, "data", T, lambda: QZ.dequantize_gguf(np.zeros(18, dtype=np.float32), "Q4_0")),
    C(qz_blocks.dequantize_gguf, "data", T, lambda: QZ.dequantize_gguf([0] * 18, "Q4_0")),
    C(qz_blocks.dequantize_gguf, "qtype", V, lambda: QZ.dequantize_gguf(np.zeros(18, dtype=np.uint8), "F32")),
    C(qz_blocks.gguf_type_name, "qtype", T, lambda: QZ.gguf_type_name(None)),
    C(qz_rtn.quantize_rtn, "bits", V, lambda: QZ.quantize_rtn(W64, bits=1)),
    C(qz_rtn.quantize_rtn, "bits", T, lambda: QZ.quantize_rtn(W64, bits=4.0)),
    C(qz_rtn.quantize_rtn, "granularity", V, lambda: QZ.quantize_rtn(W64, bits=4, granularity="row")),
    C(qz_rtn.quantize_rtn, "granularity", V, lambda: QZ.quantize_rtn(W64, bits=4, granularity=0)),
    C(qz_rtn.quantize_rtn, "symmetric", T, lambda: QZ.quantize_rtn(W64, bits=4, symmetric="yes")),
    C(qz_rtn.quantize_rtn, "w", T, lambda: QZ.quantize_rtn(torch.ones(4, 4, dtype=torch.long), bits=4)),
    C(qz_rtn.quantize_rtn, "w", V, lambda: QZ.quantize_rtn(torch.ones(0, 4), bits=4), "empty"),
    C(qz_rtn.fake_quantize, "bits", V, lambda: QZ.fake_quantize(W64, bits=9)),
    C(qz_rtn.rtn_bits_per_weight, "granularity", V, lambda: QZ.rtn_bits_per_weight(4, "block", (2, 2))),
    C(qz_rtn.rtn_bits_per_weight, "bits", V, lambda: QZ.rtn_bits_per_weight(0, 32, (2, 64))),
    C(qz_rtn.pack_bits, "codes", V, lambda: QZ.pack_bits(torch.tensor([16]), 4), "past 2^bits"),
    C(qz_rtn.pack_bits, "codes", V, lambda: QZ.pack_bits(torch.tensor([-1]), 4), "negative"),
    C(qz_rtn.pack_bits, "codes", T, lambda: QZ.pack_bits(torch.tensor([1.0]), 4)),
    C(qz_rtn.pack_bits, "bits", V, lambda: QZ.pack_bits(torch.tensor([1]), 9)),
    C(qz_rtn.unpack_bits, "count", V, lambda: QZ.unpack_bits(torch.zeros(2, dtype=torch.uint8), 4, 5)),
    C(qz_rtn.unpack_bits, "packed", T, lambda: QZ.unpack_bits(torch.zeros(2, dtype=torch.int32), 4, 2)),
    C(qz_model.block_linears, "model", T, lambda: QZ.block_linears("model")),
    C(qz_model.apply_scheme, "scheme", V, lambda: QZ.apply_scheme(W64, "int5 g7")),
    C(qz_model.apply_scheme, "scheme", T, lambda: QZ.apply_scheme(W64, 4)),
    C(qz_model.apply_scheme, "w", V, lambda: QZ.apply_scheme(torch.ones(4, 30), "Q4_0"), "rows of 30"),
    C(qz_model.apply_scheme, "w", T, lambda: QZ.apply_scheme("w", "Q4_0")),
    C(qz_model.scheme_bits_per_weight, "scheme", V, lambda: QZ.scheme_bits_per_weight(tiny(), "Q9")),
    C(qz_model.scheme_bits_per_weight, "model", T, lambda: QZ.scheme_bits_per_weight(None, "Q4_0")),
    C(qz_model.requantized, "scheme", V, lambda: QZ.requantized(tiny(), "Q9").__enter__()),
    C(qz_model.scheme_nlls, "schemes", V, lambda: QZ.scheme_nlls(tiny(), PROMPT, [])),
    C(qz_model.scheme_nlls, "schemes", T, lambda: QZ.scheme_nlls(tiny(), PROMPT, "Q4_0"), "one string"),
    C(qz_model.scheme_nlls, "scheme", V, lambda: QZ.scheme_nlls(tiny(), PROMPT, ["Q9"])),
    C(qz_model.scheme_nlls, "input_ids", V, lambda: QZ.scheme_nlls(tiny(), ids(1, 500, 3), ["Q4_0"]), "id past vocab"),
    C(qz_model.paired_bootstrap, "nll_a", V, lambda: QZ.paired_bootstrap(torch.ones(5), torch.ones(6))),
    C(qz_model.paired_bootstrap, "level", V, lambda: QZ.paired_bootstrap(torch.ones(5), torch.ones(5), level=1.5)),
    C(qz_model.paired_bootstrap, "n_resamples", V, lambda: QZ.paired_bootstrap(torch.ones(5), torch.ones(5), n_resamples=1)),
    C(qz_file.gguf_tensors, "path", T, lambda: QZ.gguf_tensors(5)),
    C(qz_file.gguf_tensors, "path", V, lambda: QZ.gguf_tensors("/nonexistent/model.gguf")),
    C(qz_file.gguf_metadata, "path", T, lambda: QZ.gguf_metadata(path=[1])),
    C(qz_file.read_gguf_tensor, "name", V, lambda: QZ.read_gguf_tensor("blk.99.attn_q.weight")),
    C(qz_file.read_gguf_tensor, "name", T, lambda: QZ.read_gguf_tensor(3)),
    C(qz_file.hf_parameter_name, "gguf_name", V, lambda: QZ.hf_parameter_name("blk.0.ffn_foo.weight")),
    C(qz_file.unpermute_rows, "n_heads", V, lambda: QZ.unpermute_rows(torch.ones(10, 4), 3)),
    C(qz_file.unpermute_rows, "w", V, lambda: QZ.unpermute_rows(torch.ones(10), 1)),
    C(qz_file.gguf_weight, "name", V, lambda: QZ.gguf_weight("nope")),
    C(qz_gptq.calibration_hessian, "x", T, lambda: QZ.calibration_hessian([[1.0]])),
    C(qz_gptq.gptq_quantize, "hessian", V, lambda: QZ.gptq_quantize(W64, torch.eye(32), bits=4)),
    C(qz_gptq.gptq_quantize, "bits", V, lambda: QZ.gptq_quantize(W64, torch.eye(64), bits=1)),
    C(qz_gptq.gptq_quantize, "damp", V, lambda: QZ.gptq_quantize(W64, torch.eye(64), bits=4, damp=0.0)),
    C(qz_gptq.gptq_quantize, "group_size", V, lambda: QZ.gptq_quantize(W64, torch.eye(64), bits=4, group_size=0)),
    C(qz_gptq.gptq_quantize, "w", V, lambda: QZ.gptq_quantize(torch.ones(64), torch.eye(64), bits=4)),
    C(qz_gptq.layer_output_error, "w_hat", V, lambda: QZ.layer_output_error(W64, torch.ones(4, 32), torch.ones(3, 64))),
    C(qz_out.linear_inputs, "input_ids", T, lambda: QZ.linear_inputs(tiny(), torch.tensor([[1.5]]))),
    C(qz_out.linear_inputs, "names", V, lambda: QZ.linear_inputs(tiny(), PROMPT, names=["lm_head"])),
    C(qz_out.linear_inputs, "model", T, lambda: QZ.linear_inputs("model", PROMPT)),
    C(qz_out.outlier_features, "inputs", T, lambda: QZ.outlier_features({})),
    C(qz_out.outlier_features, "threshold", V, lambda: QZ.outlier_features({"a.q_proj": torch.ones(2, 3)}, threshold=0)),
    C(qz_out.outlier_features, "min_layer_fraction", V, lambda: QZ.outlier_features({"a.q_proj": torch.ones(2, 3)},
                                                                                     min_layer_fraction=2.0)),
    C(qz_out.int8_matmul, "x", V, lambda: QZ.int8_matmul(torch.ones(3, 5), torch.ones(2, 4))),
    C(qz_out.int8_matmul, "threshold", V, lambda: QZ.int8_matmul(torch.ones(3, 4), torch.ones(2, 4), threshold=-1.0)),
    C(qz_out.int8_matmul, "w", T, lambda: QZ.int8_matmul(torch.ones(3, 4), torch.ones(2, 4, dtype=torch.long))),
    C(qz_out.smooth_scales, "x_absmax", V, lambda: QZ.smooth_scales(torch.ones(5), torch.ones(2, 4))),
    C(qz_out.smooth_scales, "alpha", V, lambda: QZ.smooth_scales(torch.ones(4), torch.ones(2, 4), alpha=2.0)),
    C(qz_speed.int8_dynamic_copy, "model", T, lambda: QZ.int8_dynamic_copy("model")),
    C(qz_speed.int8_weight_bytes, "model", T, lambda: QZ.int8_weight_bytes(None)),
    C(qz_speed.time_int8, "n_new", V, lambda: QZ.time_int8(tiny(), PROMPT, n_new=0)),
    C(qz_speed.time_int8, "prefill_len", V, lambda: QZ.time_int8(tiny(), PROMPT, prefill_len=0)),
    C(qz_speed.time_int8, "prompt", T, lambda: QZ.time_int8(tiny(), [[1, 2]])),
    C(qz_speed.time_int8, "copy_bytes", V, lambda: QZ.time_int8(tiny(), PROMPT, copy_bytes=0)),
    C(qz_speed.time_matvec, "w", T, lambda: QZ.time_matvec([[1.0] * 64])),
    C(qz_speed.time_matvec, "w", V, lambda: QZ.time_matvec(torch.ones(64)), "1-d"),
    C(qz_speed.time_matvec, "w", V, lambda: QZ.time_matvec(torch.ones(4, 96)), "in_features not a multiple of 64"),
    C(qz_speed.time_matvec, "group_size", V, lambda: QZ.time_matvec(W64, group_size=48), "not a power of 2"),
    C(qz_speed.time_matvec, "rounds", V, lambda: QZ.time_matvec(W64, rounds=0)),
    C(qz_int8q.int8_weights_in_float, "int8_model", V, lambda: QZ.int8_weights_in_float(tiny(), tiny()).__enter__(),
      "no int8 linears"),
    C(qz_int8q.int8_weights_in_float, "model", T, lambda: QZ.int8_weights_in_float("model", tiny()).__enter__()),
    C(qz_int8q.float_linears, "roles", V, lambda: QZ.float_linears(QZ.int8_dynamic_copy(tiny()), tiny(), ["nope"]).__enter__()),
    C(qz_int8q.float_linears, "roles", T, lambda: QZ.float_linears(QZ.int8_dynamic_copy(tiny()), tiny(), [1]).__enter__()),
    C(qz_int8q.float_linears, "model", V, lambda: QZ.float_linears(QZ.int8_dynamic_copy(tiny()), tiny().model,
                                                                   ["down_proj"]).__enter__(), "another model"),
    C(qz_int8q.first_token_apart_nlls, "input_ids", V, lambda: QZ.first_token_apart_nlls(tiny(), ids(1, 50)), "2 tokens"),
    C(qz_int8q.first_token_apart_nlls, "input_ids", T, lambda: QZ.first_token_apart_nlls(tiny(), [1, 2, 3])),
]
NO_ARGUMENTS |= {
    # The GGUF formats and notebook 13's schemes: constant tables.
    "GGUF_TYPES", "SCHEMES",
    # Whether this torch has the int4 CPU kernel: a question about the installation.
    "int4_kernel_available",
}
RESULT_TYPES |= {
    # What quantize_rtn / gguf_tensors / scheme_nlls / outlier_features / time_int8 return; GGUFType and Scheme
    # are the records of GGUF_TYPES and SCHEMES (apply_scheme and scheme_bits_per_weight check the names users pass).
    "QuantizedTensor", "GGUFTensor", "SchemeNLL", "OutlierFeatures", "Int8Timing", "GGUFType", "Scheme",
    "MatvecTiming",
}
# --- attention (notebook 14) --------------------------------------------------------------------
from llmlab import attention as ATT  # noqa: E402


def qkv(n=6, d=4, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, 2, n, d, generator=g, dtype=dtype) for _ in range(3))


CASES += [
    C(ATT.flash_attention, "q", T, lambda: ATT.flash_attention(qkv()[0].long(), *qkv()[1:])),
    C(ATT.flash_attention, "q", T, lambda: ATT.flash_attention([[1.0]], *qkv()[1:]), "a list"),
    C(ATT.flash_attention, "q", V, lambda: ATT.flash_attention(torch.zeros(4), *qkv()[1:]), "1-D"),
    C(ATT.flash_attention, "k", T, lambda: ATT.flash_attention(qkv()[0], qkv(dtype=torch.float64)[1], qkv()[2]),
      "dtype"),
    C(ATT.flash_attention, "k", V, lambda: ATT.flash_attention(qkv()[0], qkv(d=5)[1], qkv()[2]), "head size"),
    C(ATT.flash_attention, "v", V, lambda: ATT.flash_attention(*qkv()[:2], qkv(n=7)[2]), "rows"),
    C(ATT.flash_attention, "q, k and v", V, lambda: ATT.flash_attention(torch.zeros(3, 6, 4), torch.zeros(2, 6, 4),
                                                                        torch.zeros(2, 6, 4)), "batch dims"),
    C(ATT.flash_attention, "block_size", V, lambda: ATT.flash_attention(*qkv(), block_size=0)),
    C(ATT.flash_attention, "block_size", T, lambda: ATT.flash_attention(*qkv(), block_size=16.0)),
    C(ATT.flash_attention, "scale", V, lambda: ATT.flash_attention(*qkv(), scale=NAN)),
    C(ATT.flash_attention, "scale", T, lambda: ATT.flash_attention(*qkv(), scale="0.5")),
    C(ATT.attention_function, "method", V, lambda: ATT.attention_function("fast")),
    C(ATT.attention_function, "block_size", V, lambda: ATT.attention_function("flash", block_size=-1)),
    C(ATT.attention_inputs, "n", V, lambda: ATT.attention_inputs(0)),
    C(ATT.attention_inputs, "n", V, lambda: ATT.attention_inputs(10**7), "huge"),
    C(ATT.attention_inputs, "d", T, lambda: ATT.attention_inputs(8, d=4.0)),
    C(ATT.attention_inputs, "heads", V, lambda: ATT.attention_inputs(8, heads=0)),
    C(ATT.attention_inputs, "dtype", V, lambda: ATT.attention_inputs(8, dtype=torch.int64)),
    C(ATT.attention_inputs, "seed", V, lambda: ATT.attention_inputs(8, seed=-1)),
    C(ATT.attention_memory, "method", V, lambda: ATT.attention_memory(8, method="fast")),
    C(ATT.attention_memory, "n", V, lambda: ATT.attention_memory(0, method="plain")),
    C(ATT.attention_memory, "device", V, lambda: ATT.attention_memory(8, device="nodevice")),
    C(ATT.attention_flops, "n", T, lambda: ATT.attention_flops("8")),
    C(ATT.attention_flops, "method", V, lambda: ATT.attention_flops(8, method="SDPA")),
    C(ATT.attention_traffic, "n", V, lambda: ATT.attention_traffic(0)),
    C(ATT.attention_traffic, "block_size", V, lambda: ATT.attention_traffic(64, 64, 0)),
    C(ATT.attention_traffic, "d", T, lambda: ATT.attention_traffic(64, None)),
    C(ATT.attention_traffic, "dtype", V, lambda: ATT.attention_traffic(64, dtype="int8")),
    C(ATT.attention_timings, "methods", T, lambda: ATT.attention_timings(8, methods="flash"), "one string"),
    C(ATT.attention_timings, "methods", V, lambda: ATT.attention_timings(8, methods=["flash", "fast"])),
    C(ATT.attention_timings, "methods", V, lambda: ATT.attention_timings(8, methods=[])),
    C(ATT.attention_timings, "rounds", V, lambda: ATT.attention_timings(8, rounds=0)),
    C(ATT.attention_timings, "threads", V, lambda: ATT.attention_timings(8, threads=0)),
    C(ATT.fused_sdpa_kernel, "capability", T, lambda: ATT.fused_sdpa_kernel("cpu", capability=8.0)),
    C(ATT.fused_sdpa_kernel, "capability", T, lambda: ATT.fused_sdpa_kernel("cpu", capability=(8, 0, 1)), "3 parts"),
    C(ATT.fused_sdpa_kernel, "device", V, lambda: ATT.fused_sdpa_kernel("nodevice")),
    C(ATT.math_backend_length, "device", V, lambda: ATT.math_backend_length("cpu"), "no GPU memory to size"),
    C(ATT.math_backend_length, "heads", V, lambda: ATT.math_backend_length(heads=0, memory_bytes=2**30)),
    C(ATT.math_backend_length, "longest", T, lambda: ATT.math_backend_length(longest=8192.0, memory_bytes=2**30)),
    C(ATT.math_backend_length, "memory_bytes", V, lambda: ATT.math_backend_length(memory_bytes=0)),
    C(ATT.sdpa_backend_timings, "n", V, lambda: ATT.sdpa_backend_timings(0, device="cpu")),
    C(ATT.sdpa_backend_timings, "kernel", T, lambda: ATT.sdpa_backend_timings(8, kernel="flash", device="cpu")),
    C(ATT.sdpa_backend_timings, "rounds", V, lambda: ATT.sdpa_backend_timings(8, rounds=0, device="cpu")),
    C(ATT.sdpa_backend_timings, "d", V, lambda: ATT.sdpa_backend_timings(8, d=1024, device="cpu")),
    C(ATT.op_profile, "fn", T, lambda: ATT.op_profile(5)),
    C(ATT.attention_geometry, "config", T, lambda: ATT.attention_geometry({"layers": 2})),
    C(ATT.attention_geometry, "config", T, lambda: ATT.attention_geometry(nn.Linear(2, 2)), "a module without config"),
    C(ATT.kv_cache_bytes, "config", T, lambda: ATT.kv_cache_bytes(None, 8)),
    C(ATT.kv_cache_bytes, "seq_len", V, lambda: ATT.kv_cache_bytes(tiny().config, -1)),
    C(ATT.kv_cache_bytes, "seq_len", T, lambda: ATT.kv_cache_bytes(tiny().config, 8.5)),
    C(ATT.kv_cache_bytes, "batch", V, lambda: ATT.kv_cache_bytes(tiny().config, 8, batch=0)),
    C(ATT.kv_cache_bytes, "dtype", V, lambda: ATT.kv_cache_bytes(tiny().config, 8, dtype="int4")),
    C(ATT.kv_cache_bytes, "n_kv_heads", V, lambda: ATT.kv_cache_bytes(tiny().config, 8, n_kv_heads=0)),
    C(ATT.measured_kv_cache_bytes, "model", T, lambda: ATT.measured_kv_cache_bytes("model", torch.ones(1, 4).long())),
    C(ATT.measured_kv_cache_bytes, "input_ids", V, lambda: ATT.measured_kv_cache_bytes(tiny(), torch.ones(4).long())),
    C(ATT.measured_kv_cache_bytes, "input_ids", T, lambda: ATT.measured_kv_cache_bytes(tiny(), torch.ones(1, 4))),
    C(ATT.measured_kv_cache_bytes, "input_ids", V, lambda: ATT.measured_kv_cache_bytes(tiny(), torch.full((1, 4), 500)),
      "id past vocab"),
    C(ATT.measured_kv_cache_bytes, "input_ids", V, lambda: ATT.measured_kv_cache_bytes(tiny(), torch.ones(1, 200).long()),
      "past the context"),
    C(memory.peak_allocated_bytes, "fn", T, lambda: memory.peak_allocated_bytes(None)),
    C(memory.peak_allocated_bytes, "device", V, lambda: memory.peak_allocated_bytes(lambda: None, device="meta")),
]
NO_ARGUMENTS |= {"ATTENTION_METHODS", "SHARED_MEMORY_PER_BLOCK", "L2_CACHE_BYTES"}
RESULT_TYPES |= {"AttentionMemory", "AttentionFlops", "AttentionTraffic", "OpProfile", "AttentionGeometry",
                 "FusedKernel"}   # FusedKernel: what fused_sdpa_kernel returns
CASES += [
    C(timing.cpu_threads, "threads", V, lambda: timing.cpu_threads(0)),
    C(timing.cpu_threads, "threads", T, lambda: timing.cpu_threads("2")),
    C(timing.cpu_threads, "device", V, lambda: timing.cpu_threads(1, device="nodevice")),
    C(timing.verdict, "a and b", T, lambda: timing.verdict(0.1, 0.2)),
    C(timing.verdict, "names", T, lambda: timing.verdict(timing.Timing((1.0,)), timing.Timing((2.0,)), names="ab")),
    C(timing.cpu_profile, "fn", T, lambda: timing.cpu_profile("f")),
]

# ---------------------------------------------------------------------------------------------
# Issue 22 (notebooks 01-04): schedules.compare_schedules, textdata.make_text_token_batch,
# decoding.count_step_ops, models.gguf_weight_formats
# ---------------------------------------------------------------------------------------------

from llmlab import textdata  # noqa: E402

CASES += [
    C(schedules.compare_schedules, "schedules", T, lambda: schedules.compare_schedules([0.1])),
    C(schedules.compare_schedules, "schedules", T, lambda: schedules.compare_schedules({}), "empty"),
    C(schedules.compare_schedules, "schedules", V, lambda: schedules.compare_schedules({"a": [0.1], "b": [0.1, 0.2]}),
      "unequal lengths"),
    C(schedules.compare_schedules, "schedules", V, lambda: schedules.compare_schedules({"a": [0.1, NAN]})),
    C(schedules.compare_schedules, "seeds", V, lambda: schedules.compare_schedules({"a": [0.1]}, seeds=[2, 2])),
    C(schedules.compare_schedules, "seeds", T, lambda: schedules.compare_schedules({"a": [0.1]}, seeds=4)),
    C(schedules.compare_schedules, "seeds", V, lambda: schedules.compare_schedules({"a": [0.1]}, seeds=[])),
    C(schedules.compare_schedules, "n_test", V, lambda: schedules.compare_schedules({"a": [0.1]}, n_test=0)),
    C(schedules.compare_schedules, "eval_every", V, lambda: schedules.compare_schedules({"a": [0.1]}, eval_every=0)),
    C(schedules.compare_schedules, "device", V, lambda: schedules.compare_schedules({"a": [0.1]}, device="bogus")),
    C(textdata.make_text_token_batch, "batch_size", V, lambda: textdata.make_text_token_batch(None, 0)),
    C(textdata.make_text_token_batch, "max_len", V, lambda: textdata.make_text_token_batch(None, 4, max_len=1)),
    C(textdata.make_text_token_batch, "min_len", V, lambda: textdata.make_text_token_batch(None, 4, max_len=8, min_len=9)),
    C(textdata.make_text_token_batch, "seed", T, lambda: textdata.make_text_token_batch(None, 4, seed="0")),
    C(textdata.make_text_token_batch, "tokenizer", T, lambda: textdata.make_text_token_batch("gpt2", 4)),
    C(roofline.count_step_ops, "model", T, lambda: roofline.count_step_ops("model", PROMPT)),
    C(roofline.count_step_ops, "input_ids", T, lambda: roofline.count_step_ops(tiny(), [[1, 2]])),
    C(roofline.count_step_ops, "input_ids", V, lambda: roofline.count_step_ops(tiny(), torch.tensor([[1, 500]])), "past vocab"),
    C(models.gguf_weight_formats, "path", V, lambda: models.gguf_weight_formats("/nonexistent/model.gguf")),
    C(models.gguf_weight_formats, "path", T, lambda: models.gguf_weight_formats(5)),
]
RESULT_TYPES |= {
    # What compare_schedules returns: losses per schedule, seed and evaluation step.
    "ScheduleComparison",
}

# --- serving (issue 26): paged KV cache, continuous batching, speculative decoding ----------------
from llmlab import serving as SV  # noqa: E402
from llmlab.decoding import llama as DL  # noqa: E402


def sv_trace():
    return SV.make_trace(CharTok(), 2, max_new_tokens=4, system_prompt="Hi.")


def sv_probs(rows, vocab=3):
    return torch.full((rows, vocab), 1.0 / vocab)


def sv_dist(prefix):
    return torch.tensor([0.5, 0.5], dtype=torch.float64)


SV_COSTS = SV.StepCosts(0.01, 0.001, 0.01, 0.001)

CASES += [
    C(DL.LlamaWeights, "model", T, lambda: DL.LlamaWeights("model")),
    C(DL.LlamaWeights, "model_type", V, lambda: DL.LlamaWeights(nn.Linear(2, 2)), "not a Llama"),
    C(SV.PagedKVCache, "num_blocks", V, lambda: SV.PagedKVCache(2, 2, 4, num_blocks=0, block_size=16)),
    C(SV.PagedKVCache, "block_size", T, lambda: SV.PagedKVCache(2, 2, 4, num_blocks=8, block_size=16.0)),
    C(SV.PagedKVCache, "n_layers", V, lambda: SV.PagedKVCache(0, 2, 4, num_blocks=8, block_size=16)),
    C(SV.PagedKVCache, "head_dim", T, lambda: SV.PagedKVCache(2, 2, "4", num_blocks=8, block_size=16)),
    C(SV.PagedKVCache, "dtype", V, lambda: SV.PagedKVCache(2, 2, 4, num_blocks=8, block_size=16, dtype=torch.int64)),
    C(SV.PagedKVCache, "num_blocks", V, lambda: SV.PagedKVCache(32, 8, 128, num_blocks=2**30, block_size=64), "TiB"),
    C(SV.PagedLlama, "model_type", V, lambda: SV.PagedLlama(nn.Linear(2, 2), num_blocks=4, block_size=4)),
    C(SV.PagedLlama, "block_size", V, lambda: SV.PagedLlama(tiny(), num_blocks=4, block_size=0)),
    C(SV.serve, "model", T, lambda: SV.serve("model", [PROMPT], 4)),
    C(SV.serve, "prompts", V, lambda: SV.serve(tiny(), [], 4)),
    C(SV.serve, "prompts", T, lambda: SV.serve(tiny(), PROMPT, 4), "one tensor"),
    C(SV.serve, "prompts", T, lambda: SV.serve(tiny(), [[1, 5, 7]], 4), "a list"),
    C(SV.serve, "input_ids", T, lambda: SV.serve(tiny(), [PROMPT.float()], 4)),
    C(SV.serve, "input_ids", V, lambda: SV.serve(tiny(), [ids(1, 500)], 4), "past the vocabulary"),
    C(SV.serve, "max_new_tokens", V, lambda: SV.serve(tiny(), [PROMPT], -1)),
    C(SV.serve, "max_new_tokens", V, lambda: SV.serve(tiny(), [PROMPT], [4, 4]), "one per prompt"),
    C(SV.serve, "max_new_tokens", V, lambda: SV.serve(tiny(), [PROMPT], 10**6), "past the context"),
    C(SV.serve, "max_batch", V, lambda: SV.serve(tiny(), [PROMPT], 4, max_batch=0)),
    C(SV.serve, "block_size", T, lambda: SV.serve(tiny(), [PROMPT], 4, block_size=2.5)),
    C(SV.serve, "eos_token_id", V, lambda: SV.serve(tiny(), [PROMPT], 4, eos_token_id=-2)),
    C(SV.serve, "arrival_times", V, lambda: SV.serve(tiny(), [PROMPT, PROMPT], 4, arrival_times=[1.0, 0.0]), "unsorted"),
    C(SV.serve, "arrival_times", V, lambda: SV.serve(tiny(), [PROMPT], 4, arrival_times=[-1.0])),
    C(SV.serve, "arrival_times", T, lambda: SV.serve(tiny(), [PROMPT], 4, arrival_times=0.0)),
    C(SV.serve, "policy", V, lambda: SV.serve(tiny(), [PROMPT], 4, policy="fifo")),
    C(SV.serve, "share_prefix", T, lambda: SV.serve(tiny(), [PROMPT], 4, share_prefix=1)),
    C(SV.simulate, "costs", T, lambda: SV.simulate([PROMPT], 4, costs=(0.1, 0.1, 0.1, 0.1))),
    C(SV.simulate, "prompts", T, lambda: SV.simulate(PROMPT, 4, costs=SV_COSTS)),
    C(SV.simulate, "max_new_tokens", V, lambda: SV.simulate([PROMPT], [1, 2], costs=SV_COSTS)),
    C(SV.simulate, "max_batch", T, lambda: SV.simulate([PROMPT], 4, costs=SV_COSTS, max_batch="8")),
    C(SV.simulate, "policy", V, lambda: SV.simulate([PROMPT], 4, costs=SV_COSTS, policy="lifo")),
    C(SV.StepCosts.fit, "results", T, lambda: SV.StepCosts.fit([1, 2])),
    C(SV.StepCosts.fit, "results", V, lambda: SV.StepCosts.fit(SV.simulate([PROMPT], 2, costs=SV_COSTS)), "one size"),
    C(SV.make_trace, "tokenizer", T, lambda: SV.make_trace("tokenizer", 4)),
    C(SV.make_trace, "n_requests", V, lambda: SV.make_trace(CharTok(), 0)),
    C(SV.make_trace, "rate", V, lambda: SV.make_trace(CharTok(), 4, rate=0.0)),
    C(SV.make_trace, "max_new_tokens", V, lambda: SV.make_trace(CharTok(), 4, min_new_tokens=8, max_new_tokens=4)),
    C(SV.make_trace, "seed", T, lambda: SV.make_trace(CharTok(), 4, seed=0.5)),
    C(SV.make_trace, "system_prompt", T, lambda: SV.make_trace(CharTok(), 4, system_prompt=None)),
    C(SV.speculative_generate, "model", T, lambda: SV.speculative_generate("model", PROMPT, 4, draft="prompt_lookup")),
    C(SV.speculative_generate, "draft", V, lambda: SV.speculative_generate(tiny(), PROMPT, 4, draft="ngram")),
    C(SV.speculative_generate, "draft", T, lambda: SV.speculative_generate(tiny(), PROMPT, 4, draft=None)),
    C(SV.speculative_generate, "draft", V, lambda: SV.speculative_generate(
        tiny(), PROMPT, 4, draft=_other_vocab()), "another vocabulary"),
    C(SV.speculative_generate, "num_draft_tokens", V, lambda: SV.speculative_generate(tiny(), PROMPT, 4, draft="prompt_lookup",
                                                                                   num_draft_tokens=0)),
    C(SV.speculative_generate, "max_new_tokens", V, lambda: SV.speculative_generate(tiny(), PROMPT, 10**6,
                                                                                 draft="prompt_lookup")),
    C(SV.speculative_generate, "input_ids", V, lambda: SV.speculative_generate(tiny(), ids(), 4, draft="prompt_lookup")),
    C(SV.speculative_generate, "temperature", V, lambda: SV.speculative_generate(tiny(), PROMPT, 4, draft="prompt_lookup",
                                                                              do_sample=True, temperature=0.0)),
    C(SV.speculative_generate, "do_sample", T, lambda: SV.speculative_generate(tiny(), PROMPT, 4, draft="prompt_lookup",
                                                                            do_sample="yes")),
    C(SV.speculative_generate, "generator", T, lambda: SV.speculative_generate(tiny(), PROMPT, 4, draft="prompt_lookup",
                                                                            generator=0)),
    C(SV.speculative_generate, "eos_token_id", V, lambda: SV.speculative_generate(tiny(), PROMPT, 4, draft="prompt_lookup",
                                                                               eos_token_id=500), "past the vocabulary"),
    C(SV.early_exit_draft, "model", T, lambda: SV.early_exit_draft("model", 1)),
    C(SV.early_exit_draft, "model", V, lambda: SV.early_exit_draft(nn.Linear(2, 2), 1), "no config"),
    C(SV.early_exit_draft, "num_layers", V, lambda: SV.early_exit_draft(tiny(), 2), "all of them"),
    C(SV.early_exit_draft, "num_layers", T, lambda: SV.early_exit_draft(tiny(), 1.0)),
    C(SV.expected_tokens_per_forward, "alpha", V, lambda: SV.expected_tokens_per_forward(1.5, 4)),
    C(SV.expected_tokens_per_forward, "gamma", T, lambda: SV.expected_tokens_per_forward(0.5, 4.0)),
    C(SV.acceptance_probabilities, "p", V, lambda: SV.acceptance_probabilities(sv_probs(2)[0], sv_probs(2), ids(0, 1)[0])),
    C(SV.acceptance_probabilities, "q", V, lambda: SV.acceptance_probabilities(sv_probs(2), sv_probs(3), ids(0, 1)[0])),
    C(SV.acceptance_probabilities, "tokens", V, lambda: SV.acceptance_probabilities(sv_probs(2), sv_probs(2), ids(0, 7)[0])),
    C(SV.acceptance_probabilities, "tokens", T, lambda: SV.acceptance_probabilities(sv_probs(2), sv_probs(2),
                                                                                   torch.tensor([0.0, 1.0]))),
    C(SV.residual_distribution, "p", T, lambda: SV.residual_distribution([0.5, 0.5], sv_probs(1)[0])),
    C(SV.residual_distribution, "q", V, lambda: SV.residual_distribution(sv_probs(1), sv_probs(2))),
    C(SV.verify, "q", V, lambda: SV.verify(sv_probs(3), sv_probs(3), ids(0, 1, 2)[0]), "γ + 1 rows of p"),
    C(SV.verify, "tokens", V, lambda: SV.verify(sv_probs(3), sv_probs(2), ids(0)[0])),
    C(SV.verify, "generator", T, lambda: SV.verify(sv_probs(3), sv_probs(2), ids(0, 1)[0], generator=1)),
    C(SV.next_token_distribution, "model", T, lambda: SV.next_token_distribution("model")),
    C(SV.next_token_distribution, "temperature", V, lambda: SV.next_token_distribution(tiny(), temperature=-1.0)),
    C(SV.autoregressive_distribution, "target", T, lambda: SV.autoregressive_distribution("p", (1,), 2)),
    C(SV.autoregressive_distribution, "prefix", V, lambda: SV.autoregressive_distribution(sv_dist, (), 2)),
    C(SV.autoregressive_distribution, "prefix", V, lambda: SV.autoregressive_distribution(sv_dist, (1, -2), 2)),
    C(SV.autoregressive_distribution, "n_tokens", V, lambda: SV.autoregressive_distribution(sv_dist, (1,), 40), "huge"),
    C(SV.speculative_distribution, "draft", T, lambda: SV.speculative_distribution(sv_dist, None, (1,), 2,
                                                                                   num_draft_tokens=2)),
    C(SV.speculative_distribution, "num_draft_tokens", V, lambda: SV.speculative_distribution(sv_dist, sv_dist, (1,), 2,
                                                                                              num_draft_tokens=0)),
    C(SV.speculative_distribution, "prefix", T, lambda: SV.speculative_distribution(sv_dist, sv_dist, 1, 2,
                                                                                    num_draft_tokens=1)),
]


@functools.lru_cache(maxsize=None)
def _other_vocab():
    from transformers import LlamaConfig, LlamaForCausalLM  # only this row needs a second vocabulary
    return LlamaForCausalLM(LlamaConfig(**{**models.LLAMA_PRESETS["tiny"], "vocab_size": 50})).eval()


NO_ARGUMENTS |= {
    # serving constants: the policies, the trace's texts, the name of prompt lookup
    "POLICIES", "SYSTEM_PROMPT", "QUESTIONS", "SPECULATIVE_PROMPTS", "PROMPT_LOOKUP",
}
RESULT_TYPES |= {
    # What serve / simulate / make_trace / speculative_generate / PagedKVCache.usage return.
    "ServeResult", "RequestStats", "Trace", "Request", "SpeculativeResult", "CacheUsage",
    # Built by StepCosts.fit (rows above) or by hand for a what-if; its fields are plain seconds.
    "StepCosts",
}


# --- model parallelism (issue 27): the entry points of notebook 16 ----------------------------------
from llmlab.distributed import model_parallel_demo as mp_demo, pipeline as pipe, pipeline_run as piperun  # noqa: E402
from llmlab.distributed import planner, tensor_parallel as tpar, traffic  # noqa: E402

_MODEL = planner.ModelConfig("m", params=7e9, layers=32, hidden=4096, seq_len=4096, global_batch=1024)
_CLUSTER = planner.ClusterConfig("c", gpus=64)

CASES += [
    C(tpar.tensor_parallel_step, "block", V, lambda: tpar.tensor_parallel_step("conv", 2)),
    C(tpar.tensor_parallel_step, "world_size", V, lambda: tpar.tensor_parallel_step("mlp", 0)),
    C(tpar.tensor_parallel_step, "world_size", V, lambda: tpar.tensor_parallel_step("mlp", 10**6), "huge"),
    C(tpar.tensor_parallel_step, "spec", T, lambda: tpar.tensor_parallel_step("mlp", 2, {"hidden": 8})),
    C(tpar.tensor_parallel_step, "ffn", V, lambda: tpar.tensor_parallel_step("mlp", 3, tpar.TPSpec(ffn=64))),
    C(tpar.tensor_parallel_step, "heads", V, lambda: tpar.tensor_parallel_step("attention", 2, tpar.TPSpec(heads=3, hidden=15))),
    C(pipe.pipeline_schedule, "kind", V, lambda: pipe.pipeline_schedule("zb1p", 2, 2)),
    C(pipe.pipeline_schedule, "stages", V, lambda: pipe.pipeline_schedule("gpipe", 0, 2)),
    C(pipe.pipeline_schedule, "micro_batches", T, lambda: pipe.pipeline_schedule("gpipe", 2, 2.0)),
    C(pipe.pipeline_schedule, "micro_batches", V, lambda: pipe.pipeline_schedule("gpipe", 2, 10**9), "huge"),
    C(pipe.bubble_fraction, "stages", V, lambda: pipe.bubble_fraction("1f1b", 10**6, 2), "huge"),
    C(pipe.peak_held_formula, "micro_batches", V, lambda: pipe.peak_held_formula("1f1b", 2, 0)),
    C(pipe.simulate_schedule, "t_forward", V, lambda: pipe.simulate_schedule("1f1b", 2, 2, t_forward=NAN)),
    C(pipe.simulate_schedule, "t_backward", V, lambda: pipe.simulate_schedule("1f1b", 2, 2, t_backward=-1.0)),
    C(piperun.run_pipelines, "kinds", T, lambda: piperun.run_pipelines("gpipe")),
    C(piperun.run_pipelines, "kinds", V, lambda: piperun.run_pipelines(())),
    C(piperun.run_pipelines, "kinds", V, lambda: piperun.run_pipelines(("gpipe", "zb1p"))),
    C(piperun.run_pipelines, "stages", V, lambda: piperun.run_pipelines(stages=0)),
    C(piperun.run_pipeline, "kind", V, lambda: piperun.run_pipeline("zb1p")),
    C(piperun.run_pipeline, "spec", T, lambda: piperun.run_pipeline("gpipe", {"layers": 2})),
    C(piperun.run_pipeline, "micro_batches", V, lambda: piperun.run_pipeline("gpipe", piperun.PipelineSpec(batch=10, micro_batches=4))),
    C(piperun.run_pipeline, "stages", V, lambda: piperun.run_pipeline("gpipe", piperun.PipelineSpec(layers=2), stages=3)),
    C(piperun.make_pipeline_model, "spec", T, lambda: piperun.make_pipeline_model({"layers": 2})),
    C(piperun.pipeline_data, "spec", T, lambda: piperun.pipeline_data(None)),
    C(piperun.single_process_step, "spec", T, lambda: piperun.single_process_step(8)),
    C(traffic.ddp_gradient_bytes, "spec", T, lambda: traffic.ddp_gradient_bytes("spec", 2)),
    C(traffic.ddp_gradient_bytes, "world_size", V, lambda: traffic.ddp_gradient_bytes(piperun.PipelineSpec(batch=9, micro_batches=1), 2)),
    C(traffic.dp_bytes_per_step, "world_size", V, lambda: traffic.dp_bytes_per_step(100, 0)),
    C(traffic.tp_payload_per_step, "activation_bytes", V, lambda: traffic.tp_payload_per_step(-1, 2)),
    C(traffic.tp_payload_per_step, "blocks", T, lambda: traffic.tp_payload_per_step(10, 2.5)),
    C(traffic.pp_bytes_per_step, "stages", V, lambda: traffic.pp_bytes_per_step(10, 0)),
    C(planner.estimate_plan, "model", T, lambda: planner.estimate_plan({"params": 7e9}, _CLUSTER, tp=1, pp=1)),
    C(planner.estimate_plan, "cluster", T, lambda: planner.estimate_plan(_MODEL, 64, tp=1, pp=1)),
    C(planner.estimate_plan, "tp", V, lambda: planner.estimate_plan(_MODEL, _CLUSTER, tp=3, pp=1), "not a divisor"),
    C(planner.estimate_plan, "pp", V, lambda: planner.estimate_plan(_MODEL, _CLUSTER, tp=1, pp=64), "more than the layers"),
    C(planner.estimate_plan, "zero", V, lambda: planner.estimate_plan(_MODEL, _CLUSTER, tp=1, pp=1, zero="zero4")),
    C(planner.estimate_plan, "global_batch", V, lambda: planner.estimate_plan(_MODEL, _CLUSTER, tp=1, pp=1, micro_batch=3)),
    C(planner.estimate_plan, "efficiency", V, lambda: planner.estimate_plan(
        _MODEL, planner.ClusterConfig("c", gpus=8, efficiency=1.5), tp=1, pp=1)),
    C(planner.estimate_plan, "params", V, lambda: planner.estimate_plan(
        planner.ModelConfig("m", params=NAN, layers=2, hidden=8, seq_len=8, global_batch=8), _CLUSTER, tp=1, pp=1)),
    C(planner.plan_parallelism, "zero_stages", V, lambda: planner.plan_parallelism(_MODEL, _CLUSTER, zero_stages=("zero9",))),
    C(planner.plan_parallelism, "micro_batches", V, lambda: planner.plan_parallelism(_MODEL, _CLUSTER, micro_batches=(0,))),
    C(planner.plan_parallelism, "max_tp", V, lambda: planner.plan_parallelism(_MODEL, _CLUSTER, max_tp=0)),
    C(planner.plan_parallelism, "zero_stages", V, lambda: planner.plan_parallelism(_MODEL, _CLUSTER, zero_stages=()), "empty"),
    C(mp_demo.main, "argv", T, lambda: mp_demo.main(5)),
]
NO_ARGUMENTS |= {"BLOCKS", "SCHEDULES", "ZERO_STAGES", "MEGATRON_1T", "SELENE_3072", "MODEL_PRESETS"}
RESULT_TYPES |= {
    # The specs are frozen records of sizes; the entry points that take them check every field (rows above).
    "TPSpec", "PipelineSpec", "ModelConfig", "ClusterConfig",
    # What tensor_parallel_step / simulate_schedule / run_pipeline(s) / estimate_plan return.
    "TPRun", "Timeline", "PipelineRun", "PlanEstimate",
}

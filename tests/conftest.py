"""Shared test fixtures. Tests run on the CPU unless a test asks for CUDA explicitly."""

import importlib
import os
import traceback

import pytest
import torch
import torch.distributed as dist

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Parallel runs (pytest-xdist: `make test`, `make check`): the workers share the cores, so each
# worker, and every kernel and process it starts, gets its share of torch threads. Two workers of
# two threads on two cores would make PyTorch's OpenMP threads wait for each other.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    torch.set_num_threads(THREADS)

#: Test files in the order a parallel run hands them to the workers, longest first (with the
#: Makefile's --dist loadfile --no-loadscope-reorder each file goes to one worker as a whole): the
#: browser test, the Colab replay, the notebooks, the distributed tests, the solutions, then the
#: other unit tests, so that short files fill in at the end and the workers finish together.
FIRST = ("tests/test_browser.py", "tests/test_colab.py", "notebooks/", "tests/test_distributed_", "solutions/")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):  # only in pytest-xdist's workers; a serial run keeps its order
        return
    root = config.rootpath

    def rank(item):
        rel = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else str(item.path)
        return next((i for i, prefix in enumerate(FIRST) if rel.startswith(prefix)), len(FIRST))

    items.sort(key=rank)  # stable: each file's items stay together and in order


@pytest.fixture(scope="session")
def default_lm():
    """The default SmolLM2-135M-Instruct model and tokenizer, float32 on the CPU, loaded once."""
    from llmlab.models import load_model

    model, tokenizer = load_model(device="cpu")
    return model, tokenizer


@pytest.fixture(scope="session")
def make_tiny_llama():
    """Build a tiny random Llama: ``make_tiny_llama(hidden_size=64, ...)`` overrides the config of
    :func:`tiny_llama` (``llmlab.models.LLAMA_PRESETS["tiny"]``: vocab 97, d_model 32, 2 layers,
    4 heads, 2 KV heads; BOS/EOS/PAD = 1/2/0); seeded, float32, eval."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmlab.models import LLAMA_PRESETS

    def build(**overrides):
        torch.manual_seed(0)
        settings = dict(LLAMA_PRESETS["tiny"], bos_token_id=1, eos_token_id=2, pad_token_id=0)
        return LlamaForCausalLM(LlamaConfig(**{**settings, **overrides})).eval()

    return build


@pytest.fixture(scope="session")
def tiny_llama(make_tiny_llama):
    """A tiny random Llama (same family as SmolLM2) built from a config: no download, float32, eval."""
    return make_tiny_llama()


@pytest.fixture(scope="session")
def tiny_gpt2():
    """A tiny random GPT-2 built from a config: no download, float32, eval."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(config).eval()


# Decoding tests (test_decoding, test_static_decoder, test_decoding_speed) share these helpers.

def random_prompt(seed: int, length: int = 5, vocab: int = 97) -> torch.Tensor:
    """Random token ids (1, length) in [3, vocab): never the special ids 0, 1, 2 of the tiny models."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (1, length), generator=g)


def hf_generate(model, ids, n, eos, **kwargs):
    """``model.generate`` with ``eos_token_id`` and ``pad_token_id`` given explicitly (pad 0, or 1 if EOS is 0)."""
    pad = 0 if eos is None or eos != 0 else 1
    return model.generate(ids, max_new_tokens=n, eos_token_id=eos, pad_token_id=pad, **kwargs)


def eos_hit_by_greedy(model, ids, n=12, at=3) -> int:
    """A token that greedy decoding produces at step ``at``: using it as EOS makes the run stop early."""
    from llmlab.decoding import greedy  # imported when used, as the fixtures above import theirs

    return int(greedy(model, ids, n)[0, ids.shape[1] + at])


class CharTokenizer:
    """A stand-in Hugging Face tokenizer for the tiny models: one id in [3, 97) per character,
    BOS = 1 (added when ``add_special_tokens``), EOS = 2, pad = 0; ``decode`` inverts it for ASCII."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [3 + (ord(c) - 32) % 94 for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return "".join(chr(32 + i - 3) for i in ids if i >= 3)


@pytest.fixture(scope="session")
def char_tokenizer():
    """A :class:`CharTokenizer` (shared by the prompting and alignment tests)."""
    return CharTokenizer()


# Memory and mixed-precision tests (test_memory, test_precision_mixed) share these helpers.

def small_mlp(seed: int = 0) -> torch.nn.Module:
    """A 64 -> 128 -> 64 GELU MLP, seeded (16,576 parameters)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64))


def one_step(model, opt, dtype=torch.float32) -> None:
    """One optimizer step on a seeded (8, 64) batch with loss mean(model(x)^2)."""
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(0)).to(dtype)
    model(x).float().pow(2).mean().backward()
    opt.step()



# Distributed tests (test_distributed_*.py) share this helper and a process group.

def model_step_with_zero_grad(model) -> None:
    """PyTorch's ``_model_step_with_zero_grad`` (its DDP tests): param += grad, then zero the gradient."""
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p += p.grad
                p.grad.zero_()


# Their test-only cases, ported from PyTorch's own tests, run on one shared process group: one launch of
# 3 gloo ranks instead of one per test (each rank is a new Python process that imports torch: seconds
# each). Tests of llmlab's launcher itself, and llmlab functions that start their own ranks, launch their own.

#: case -> "module:function" called as function(rank, world_size) on every rank of the shared group.
SHARED_GROUP_CASES = {
    "ddp_parity": "test_distributed_ddp:pytorch_ddp_cases",
    "syncbn": "test_distributed_batchnorm:syncbn_cases",
    "sharding": "test_distributed_sharding:sharding_ports",
}
SHARED_GROUP_SIZE = 3


def run_shared_cases(rank, world_size, cases):
    """One rank of the shared group: every case in turn; (True, its result) or (False, its traceback)."""
    out = {}
    for name, target in cases.items():
        module, function = target.split(":")
        try:
            out[name] = (True, getattr(importlib.import_module(module), function)(rank, world_size))
        except Exception:
            out[name] = (False, traceback.format_exc())
        dist.barrier()  # every rank ends a case before any rank starts the next
    return out


@pytest.fixture(scope="session")
def shared_group():
    """``shared_group(case)``: the per-rank results of a case of :data:`SHARED_GROUP_CASES`, all run in
    one launch of :data:`SHARED_GROUP_SIZE` gloo ranks on first use; a case that raised on a rank fails
    the test that asks for it, with that rank's traceback."""
    from llmlab.distributed import run

    per_rank = run(run_shared_cases, SHARED_GROUP_SIZE, SHARED_GROUP_CASES, timeout=300)

    def case(name):
        for rank, results in enumerate(per_rank):
            ok, value = results[name]
            if not ok:
                pytest.fail(f"case {name!r} failed on rank {rank}:\n{value}")
        return [results[name][1] for results in per_rank]

    return case

"""Every public function refuses bad input with one clear error from llmlab's own code (issue 18).

The rows live in ``tests/bad_inputs_table.py``. A row passes when its call raises the expected
``ValueError``/``TypeError``, the innermost traceback frame is inside ``lib/llmlab`` (not deep in
torch or transformers) and the message names the argument. ``python tests/test_bad_inputs.py``
prints the census by outcome (clear / silent / foreign / vague / runaway), each call under a
memory and time limit so a runaway case is counted instead of taking the machine down.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

import llmlab

sys.path.insert(0, str(Path(__file__).parent))
from bad_inputs_table import CASES, NO_ARGUMENTS, OUT_OF_SCOPE_MODULES, RESULT_TYPES  # noqa: E402

LIB = str(Path(llmlab.__file__).parent)


def classify(case) -> tuple[str, str]:
    """(outcome, detail) of one row: "clear", "silent", "foreign", "vague" (or "runaway" on MemoryError)."""
    try:
        result = case.call()
    except MemoryError as e:
        return "runaway", f"MemoryError {e}"
    except Exception as e:  # noqa: BLE001 - the point is to see every kind
        frames = traceback.extract_tb(e.__traceback__)
        inside = bool(frames) and frames[-1].filename.startswith(LIB)
        msg = f"{type(e).__name__}: {str(e)[:300]}"
        if not isinstance(e, (ValueError, TypeError)) or not inside:
            where = frames[-1].filename if frames else "?"
            return "foreign", f"{msg} (raised in {where})"
        if type(e) is not case.exc and not issubclass(type(e), case.exc):
            return "vague", f"expected {case.exc.__name__}, got {msg}"
        if case.arg not in str(e):
            return "vague", f"message does not name {case.arg!r}: {msg}"
        return "clear", msg
    return "silent", f"returned {type(result).__name__}: {str(result)[:120]}"


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_bad_input_gives_one_clear_error(case):
    outcome, detail = classify(case)
    assert outcome == "clear", f"{case.label}: {outcome}: {detail}"


def _public_modules():
    for info in pkgutil.walk_packages(llmlab.__path__, "llmlab."):
        if info.name.endswith("__main__") or info.name.startswith(OUT_OF_SCOPE_MODULES):
            continue
        yield importlib.import_module(info.name)


def test_every_public_name_is_in_the_table():
    """A new public function or class needs rows in the table (or a reason in NO_ARGUMENTS / RESULT_TYPES)."""
    covered = {id(case.target) for case in CASES}
    # A method row (e.g. StaticDecoder.generate) covers its method; the class needs its own rows.
    missing = []
    for module in _public_modules():
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if name in NO_ARGUMENTS or name in RESULT_TYPES or id(obj) in covered:
                continue
            missing.append(f"{module.__name__}.{name}")
    assert not missing, f"public names without bad-input rows: {missing}"


def test_every_row_names_a_public_name_or_method():
    public = set()
    for module in _public_modules():
        public |= {id(getattr(module, n)) for n in getattr(module, "__all__", ())}
    strays = [c.label for c in CASES if id(c.target) not in public and "." not in c.target.__qualname__]
    assert not strays, strays


def census(limit_gib: float = 8.0, seconds: int = 20) -> dict[str, list[str]]:
    """Run every row under an address-space limit and an alarm; group the labels by outcome."""
    import resource
    import signal

    resource.setrlimit(resource.RLIMIT_AS, (int(limit_gib * 2**30), resource.RLIM_INFINITY))

    def alarm(signum, frame):
        raise MemoryError("ran past the time limit")

    signal.signal(signal.SIGALRM, alarm)
    groups: dict[str, list[str]] = {}
    for case in CASES:
        signal.alarm(seconds)
        try:
            outcome, detail = classify(case)
        finally:
            signal.alarm(0)
        groups.setdefault(outcome, []).append(f"{case.label}: {detail}")
    return groups


if __name__ == "__main__":
    groups = census()
    for outcome in ("silent", "foreign", "vague", "runaway"):
        for line in groups.get(outcome, []):
            print(f"[{outcome}] {line}")
    print({k: len(v) for k, v in groups.items()}, "of", len(CASES))


# ---------------------------------------------------------------------------------------------
# Sampling at a temperature that underflows: the T -> 0 limit (greedy), never NaN
# ---------------------------------------------------------------------------------------------


def test_a_tiny_temperature_is_the_greedy_limit_not_nan(tiny_llama):
    from llmlab.decoding import greedy, sample, warp_logits

    logits = torch.tensor([[3.0, 1.0, -2.0, 3.5]])
    for t in (1e-45, 1e-38, 1e-30):
        probs = warp_logits(logits, temperature=t).softmax(-1)
        assert torch.isfinite(probs).all() and torch.equal(probs, torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
    # Ties at the maximum share the mass (the limit of softmax(logits / T)).
    tied = warp_logits(torch.tensor([2.0, 2.0, -1.0]), temperature=1e-40).softmax(-1)
    torch.testing.assert_close(tied, torch.tensor([0.5, 0.5, 0.0]))
    # An ordinary temperature is untouched by the safe path (bit-identical to logits / T).
    assert torch.equal(warp_logits(logits, temperature=0.7), logits / 0.7)
    ids = torch.tensor([[1, 5, 7, 9]])
    assert torch.equal(sample(tiny_llama, ids, 8, temperature=1e-45), greedy(tiny_llama, ids, 8))


# ---------------------------------------------------------------------------------------------
# The model cache: damage is detected and rebuilt, folders that are not models say so
# ---------------------------------------------------------------------------------------------

import os  # noqa: E402
import shutil  # noqa: E402
import stat  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from llmlab import models  # noqa: E402


def _key():
    gguf = models.default_gguf_path()
    return f"{gguf.stem}-{gguf.stat().st_size}"


@pytest.fixture(scope="session")
def pristine_cache(tmp_path_factory):
    """A converted default model with its integrity record, in a private cache (never the user's).

    Copied from the user's cache when it is there (a second), else converted once (~20 s)."""
    try:
        key = _key()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    root = tmp_path_factory.mktemp("pristine-cache")
    real = models.cache_dir() / key
    if (real / "config.json").exists():
        shutil.copytree(real, root / key, ignore=shutil.ignore_patterns(models.INTEGRITY_FILE))
    old = os.environ.get("LLMLAB_CACHE")
    os.environ["LLMLAB_CACHE"] = str(root)
    try:
        assert models.default_model_dir() == root / key  # records the SHA-256 (or converts)
    finally:
        os.environ.pop("LLMLAB_CACHE") if old is None else os.environ.__setitem__("LLMLAB_CACHE", old)
    yield root / key
    shutil.rmtree(root, ignore_errors=True)  # 0.5 GB: do not leave it in pytest's tmp folders


@pytest.fixture
def cache(pristine_cache, tmp_path, monkeypatch):
    """A fresh copy of the pristine cache as $LLMLAB_CACHE; yields the model folder inside it."""
    root = tmp_path / "cache"
    shutil.copytree(pristine_cache, root / pristine_cache.name)  # copy2 keeps the recorded times
    monkeypatch.setenv("LLMLAB_CACHE", str(root))
    monkeypatch.delenv("LLMLAB_MODEL", raising=False)
    yield root / pristine_cache.name
    shutil.rmtree(root, ignore_errors=True)


def _overwrite_middle(path):
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a later time, as any real write


def _fake_conversion_from(pristine, calls):
    def convert(gguf, out):
        calls.append(out)
        for file in pristine.iterdir():
            if file.name != models.INTEGRITY_FILE:
                shutil.copyfile(file, out / file.name)
                os.chmod(out / file.name, 0o600)  # as safetensors writes it
    return convert


def test_a_normal_load_only_stats_the_files(cache, monkeypatch):
    def no_hashing(path):
        raise AssertionError(f"{path} was hashed although it is unchanged")

    monkeypatch.setattr(models, "_sha256", no_hashing)
    assert models.default_model_dir() == cache


def test_touched_but_identical_weights_are_rehashed_once(cache, monkeypatch):
    weights = cache / "model.safetensors"
    os.utime(weights, ns=(time.time_ns(), time.time_ns() + 10**9))
    hashed = []
    real = models._sha256
    monkeypatch.setattr(models, "_sha256", lambda p: hashed.append(p) or real(p))
    assert models.default_model_dir() == cache and hashed == [weights]
    assert models.default_model_dir() == cache and hashed == [weights]  # the record was refreshed


@pytest.mark.slow
def test_random_bytes_in_the_weights_are_detected_and_rebuilt_from_the_gguf(cache, pristine_cache, monkeypatch):
    """The issue's case: 4 KiB of random bytes in the middle of model.safetensors (same size). Before,
    every logit came out NaN; now the folder is rebuilt and loads clean. The rebuild's conversion
    writes a pristine copy (0600, as safetensors writes its file): the real GGUF conversion, ~20 s,
    is test_models' test_conversion_from_gguf_offline_with_sockets_blocked."""
    _overwrite_middle(cache / "model.safetensors")
    calls = []
    monkeypatch.setattr(models, "_convert_gguf", _fake_conversion_from(pristine_cache, calls))
    model, tokenizer = models.load_model(device="cpu")
    assert len(calls) == 1
    logits = model(**tokenizer("The capital of France is", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()
    assert models._verify(cache) is None
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # the damaged copy is gone
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in cache.iterdir()}
    assert len(set(modes.values())) == 1, modes  # model.safetensors no longer 0600 among 0644s


@pytest.mark.parametrize("damage", ["overwrite", "truncate", "header", "delete"])
def test_damage_is_detected_and_the_folder_rebuilt(damage, cache, pristine_cache, monkeypatch):
    weights = cache / "model.safetensors"
    if damage == "overwrite":
        _overwrite_middle(weights)
    elif damage == "truncate":
        os.truncate(weights, weights.stat().st_size - 1000)
    elif damage == "header":
        with open(weights, "r+b") as f:
            f.seek(10)
            f.write(b"\xff\x00garbage")
    else:
        weights.unlink()
    assert models._verify(cache) is not None
    calls = []
    monkeypatch.setattr(models, "_convert_gguf", _fake_conversion_from(pristine_cache, calls))
    assert models.default_model_dir() == cache
    assert len(calls) == 1 and models._verify(cache) is None
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in cache.iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_a_damaged_cache_that_cannot_be_moved_says_to_delete_it(cache, monkeypatch):
    os.truncate(cache / "model.safetensors", 100)

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(models.os, "replace", refuse)
    with pytest.raises(RuntimeError, match=r"damaged.*Delete the folder") as info:
        models.default_model_dir()
    assert str(cache) in str(info.value)


def test_a_cache_without_a_record_is_checked_and_then_recorded(cache):
    (cache / models.INTEGRITY_FILE).unlink()
    assert models._verify(cache) is None and (cache / models.INTEGRITY_FILE).exists()
    os.truncate(cache / "model.safetensors", 1 << 20)
    (cache / models.INTEGRITY_FILE).unlink()
    assert "bytes long" in models._verify(cache)  # the header check alone catches truncation


def test_model_folder_errors_say_what_is_wrong(tmp_path, monkeypatch, tiny_llama):
    tiny_folder = tmp_path / "tiny"
    tiny_llama.save_pretrained(tiny_folder)
    monkeypatch.setenv("LLMLAB_MODEL", "/nonexistent/folder")
    with pytest.raises(ValueError, match="LLMLAB_MODEL.*does not exist"):
        models.load_model()
    monkeypatch.delenv("LLMLAB_MODEL")
    for path in ("./missing-model", "~/missing-llmlab-model", "a/b/c"):
        with pytest.raises(ValueError, match="does not exist"):
            models.load_model(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no model"):
        models.load_model(tmp_path / "empty")
    with pytest.raises(ValueError, match="is a file"):
        models.load_model(tiny_folder / "config.json")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    weights = next(broken.glob("*.safetensors"))
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(ValueError, match="damaged"):
        models.load_model(broken)


def test_normal_load_cost(cache):
    """Not a timed assertion: the record makes a normal check a few stats, a re-hash ~1 s per 0.5 GB."""
    t0 = time.perf_counter()
    models.default_model_dir()
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    models._sha256(cache / "model.safetensors")
    full = time.perf_counter() - t0
    print(f"check with the record: {fast * 1e3:.2f} ms; full SHA-256: {full * 1e3:.0f} ms")
    assert fast < full

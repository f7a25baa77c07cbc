"""What a GGUF file holds, and where each of its tensors lives in the Hugging Face model.

A GGUF file (llama.cpp's format) is a header of key-value metadata, a table of tensors (name,
shape, type, offset) and the tensors' bytes. :func:`gguf_tensors` lists the table and
:func:`gguf_metadata` the key-value header, both parsed here from the memory-mapped file (a few dozen
lines of ``struct``: the ``gguf`` package's ``GGUFReader`` builds a NumPy view for every one of the
~100,000 strings of the tokenizer's vocabulary, seconds of CPU; the tests check both agree), and
nothing is decoded; :func:`read_gguf_tensor` returns one tensor's raw bytes, and :func:`gguf_weight` decodes one with
:func:`llmlab.quantization.dequantize_gguf` into the layout of the Hugging Face parameter
:func:`hf_parameter_name` names. llama.cpp's converter permutes the rows of ``attn_q`` and
``attn_k`` (it interleaves the two rotary halves of every head); :func:`unpermute_rows` undoes it,
as transformers does when it loads a GGUF file.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType  # the type table only

from .._checks import check_int, check_str, check_tensor
from ..models import default_gguf_path
from .blocks import GGUF_TYPES, dequantize_gguf

__all__ = ["GGUFTensor", "gguf_tensors", "gguf_metadata", "read_gguf_tensor", "hf_parameter_name", "unpermute_rows",
           "gguf_weight"]

_PLAIN = {"F32": np.float32, "F16": np.float16}
_LAYER_PARTS = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


@dataclass(frozen=True)
class GGUFTensor:
    """One entry of a GGUF file's tensor table. ``shape`` is in PyTorch order (rows, columns); GGUF
    itself lists dimensions fastest-first."""

    name: str
    qtype: str
    shape: tuple[int, ...]
    n_bytes: int

    @property
    def n_weights(self) -> int:
        return int(np.prod(self.shape))

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.n_bytes / self.n_weights


def _path(path) -> Path:
    if path is None:
        return default_gguf_path()
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or Path) or None, got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"path={str(path)!r}: no such file")
    return p


# GGUF value types (ggml's gguf.h): scalar struct formats; 8 = string, 9 = array.
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_PLAIN_ITEMS = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8, "I16": np.int16,
                "I32": np.int32, "I64": np.int64}
# Tokenizer tables: tens of thousands of entries each, skipped rather than decoded.
_SKIPPED = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")


@dataclass(frozen=True)
class _Parsed:
    metadata: dict
    tensors: dict  # name -> (qtype name, shape in PyTorch order, n_bytes, absolute offset)
    mm: np.ndarray


class _Cursor:
    """Little-endian reads from a buffer, advancing an offset."""

    def __init__(self, buf):
        self.buf, self.off = buf, 0

    def scalar(self, fmt: str):
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.off)
        self.off += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.scalar("Q")
        self.off += n
        return bytes(self.buf[self.off - n:self.off]).decode("utf-8")

    def value(self, vtype: int, keep: bool = True):
        """The next value of type ``vtype``; with ``keep`` False it is skipped (None)."""
        if vtype == _STRING:
            if keep:
                return self.string()
            n = self.scalar("Q")  # read first: ``self.off += self.scalar(...)`` would add to the old offset
            self.off += n
            return None
        if vtype == _ARRAY:
            item, count = self.scalar("I"), self.scalar("Q")
            if item in _SCALAR and not keep:
                self.off += count * struct.calcsize(_SCALAR[item])
                return None
            items = [self.value(item, keep) for _ in range(count)]
            return items if keep else None
        return self.scalar(_SCALAR[vtype])


@functools.lru_cache(maxsize=4)
def _parse(path: str, mtime_ns: int) -> _Parsed:
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(memoryview(mm))
    if bytes(mm[:4]) != b"GGUF":
        raise ValueError(f"path={path!r} is not a GGUF file (no 'GGUF' magic)")
    cur.off = 4
    version = cur.scalar("I")
    if version not in (2, 3):
        raise ValueError(f"path={path!r}: GGUF version {version} (this reader knows little-endian versions 2 and 3)")
    n_tensors, n_kv = cur.scalar("Q"), cur.scalar("Q")
    metadata = {"GGUF.version": version, "GGUF.tensor_count": n_tensors, "GGUF.kv_count": n_kv}  # as GGUFReader
    for _ in range(n_kv):
        key, vtype = cur.string(), cur.scalar("I")
        keep = key not in _SKIPPED
        value = cur.value(vtype, keep)
        if keep:
            metadata[key] = value
    infos = []
    for _ in range(n_tensors):
        name, n_dims = cur.string(), cur.scalar("I")
        dims = [cur.scalar("Q") for _ in range(n_dims)]
        infos.append((name, GGMLQuantizationType(cur.scalar("I")), dims, cur.scalar("Q")))
    align = int(metadata.get("general.alignment", 32))
    start = -(-cur.off // align) * align
    tensors = {}
    for name, qtype, dims, offset in infos:
        block, type_size = GGML_QUANT_SIZES[qtype]
        n_bytes = int(np.prod(dims)) * type_size // block
        tensors[name] = (qtype.name, tuple(reversed(dims)), n_bytes, start + offset)
    return _Parsed(metadata, tensors, mm)


def _open(path) -> _Parsed:
    p = _path(path)
    return _parse(str(p), p.stat().st_mtime_ns)


def gguf_tensors(path=None) -> list[GGUFTensor]:
    """The tensor table of the GGUF file at ``path`` (default: the default model's file), in file order."""
    return [GGUFTensor(name, qtype, shape, n_bytes) for name, (qtype, shape, n_bytes, _) in _open(path).tensors.items()]


def gguf_metadata(path=None) -> dict:
    """The file's key-value metadata (tokenizer vocabularies left out): e.g. ``"llama.attention.head_count"``."""
    return dict(_open(path).metadata)


def read_gguf_tensor(name: str, path=None) -> tuple[np.ndarray, str]:
    """``(raw, qtype)``: the bytes of tensor ``name``, shape ``(rows, bytes per row)`` (read-only, memory-mapped),
    and its type name. Unquantized types (F32, F16, ...) come as arrays of that type in PyTorch's shape."""
    check_str("name", name)
    parsed = _open(path)
    if name not in parsed.tensors:
        raise ValueError(f"name must be a tensor of the file, got {name!r} (e.g. 'blk.0.attn_q.weight')")
    qtype, shape, n_bytes, offset = parsed.tensors[name]
    raw = parsed.mm[offset:offset + n_bytes]
    if qtype in _PLAIN_ITEMS:
        return raw.view(_PLAIN_ITEMS[qtype]).reshape(shape), qtype
    return raw.reshape(*shape[:-1], -1), qtype


def hf_parameter_name(gguf_name: str) -> str:
    """The Hugging Face Llama parameter a GGUF tensor becomes: ``"blk.3.ffn_up.weight"`` ->
    ``"model.layers.3.mlp.up_proj.weight"``."""
    check_str("gguf_name", gguf_name)
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if m and m.group(2) in _LAYER_PARTS:
        return f"model.layers.{m.group(1)}.{_LAYER_PARTS[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"(\w+)\.(weight|bias)", gguf_name)
    if m and m.group(1) in _TOP:
        return f"{_TOP[m.group(1)]}.{m.group(2)}"
    raise ValueError(f"gguf_name must be a Llama tensor name such as 'blk.0.attn_q.weight', got {gguf_name!r}")


def unpermute_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's row permutation of a q or k projection with ``n_heads`` heads (KV heads for k).

    The converter reorders each head's rows from (first rotary half, second half) to interleaved
    pairs, for llama.cpp's rotary kernel; rows ``(2i, 2i+1)`` of a head go back to ``(i, i + d/2)``.
    """
    check_tensor("w", w, dim=2)
    n_heads = check_int("n_heads", n_heads, low=1)
    if w.shape[0] % (2 * n_heads):
        raise ValueError(f"n_heads must divide the rows of w into heads of an even size, got {n_heads} heads "
                         f"for {w.shape[0]} rows")
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, w.shape[1]).transpose(1, 2).reshape(w.shape)


def gguf_weight(name: str, path=None) -> torch.Tensor:
    """Tensor ``name`` of the file decoded to float32 in the Hugging Face layout (q and k un-permuted)."""
    raw, qtype = read_gguf_tensor(name, path)
    if qtype in _PLAIN:
        w = torch.from_numpy(np.array(raw, dtype=_PLAIN[qtype])).to(torch.float32)
    elif qtype in GGUF_TYPES:
        w = dequantize_gguf(raw, qtype)
    else:
        raise ValueError(f"name: tensor {name!r} has type {qtype}, which this module does not decode "
                         f"(it decodes {sorted(GGUF_TYPES)} and {sorted(_PLAIN)})")
    part = name.split(".")[-2] if name.startswith("blk.") else ""
    if part in ("attn_q", "attn_k"):
        meta = gguf_metadata(path)
        arch = meta["general.architecture"]
        heads = meta[f"{arch}.attention.head_count" + ("_kv" if part == "attn_k" else "")]
        w = unpermute_rows(w, int(heads))
    return w

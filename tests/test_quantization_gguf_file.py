"""llmlab.quantization.gguf_file: the default model's GGUF table, names, and the decoded weights = load_model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmlab.quantization import (gguf_metadata, gguf_tensors, gguf_weight, hf_parameter_name, read_gguf_tensor,
                                 unpermute_rows)


def llama_cpp_permute(weights: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (re-derived): HF rows -> GGUF rows."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def test_table_of_the_default_model():
    table = gguf_tensors()
    counts = {}
    for t in table:
        counts[t.qtype] = counts.get(t.qtype, 0) + 1
    assert counts == {"Q8_0": 1, "Q4_1": 210, "F32": 61}
    emb = next(t for t in table if t.name == "token_embd.weight")
    assert emb.shape == (49152, 576) and emb.n_bytes == 49152 * 576 // 32 * 34 and emb.bits_per_weight == 8.5
    meta = gguf_metadata()
    assert meta["llama.attention.head_count"] == 9 and meta["llama.attention.head_count_kv"] == 3
    assert "tokenizer.ggml.tokens" not in meta


def test_raw_bytes_shape():
    raw, qtype = read_gguf_tensor("blk.0.ffn_down.weight")
    assert qtype == "Q4_1" and raw.shape == (576, 1536 // 32 * 20) and raw.dtype == np.uint8


@pytest.mark.parametrize("gguf_name, hf_name", [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("blk.12.attn_output.weight", "model.layers.12.self_attn.o_proj.weight"),
    ("blk.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight"),
    ("blk.29.ffn_gate.weight", "model.layers.29.mlp.gate_proj.weight"),
])
def test_names(gguf_name, hf_name):
    assert hf_parameter_name(gguf_name) == hf_name


@pytest.mark.parametrize("n_head", [1, 3, 9])
def test_unpermute_inverts_llama_cpp(n_head):
    w = torch.randn(n_head * 8, 5)
    assert torch.equal(unpermute_rows(llama_cpp_permute(w, n_head), n_head), w)
    assert not torch.equal(llama_cpp_permute(w, n_head), w)


@pytest.mark.slow
def test_every_decoded_tensor_is_the_loaded_model():
    from llmlab.models import load_model

    model, _ = load_model(device="cpu")
    for t in gguf_tensors():
        assert torch.equal(gguf_weight(t.name), model.get_parameter(hf_parameter_name(t.name)).detach()), t.name


@pytest.mark.slow
def test_our_header_parser_agrees_with_gguf_reader(tmp_path):
    """The peer: the gguf package's GGUFReader (slow on a 49k-token vocabulary, hence our own parser)."""
    from gguf import GGUFReader

    from llmlab.models import default_gguf_path

    reader = GGUFReader(str(default_gguf_path()))
    assert [(t.name, t.qtype, t.shape, t.n_bytes) for t in gguf_tensors()] == [
        (t.name, t.tensor_type.name, tuple(int(d) for d in reversed(t.shape)), int(t.n_bytes)) for t in reader.tensors]
    for t in reader.tensors[:12] + reader.tensors[-3:]:  # F32 norms, Q8_0 embedding, Q4_1 matrices
        raw, qtype = read_gguf_tensor(t.name)
        assert qtype == t.tensor_type.name and raw.dtype == t.data.dtype and np.array_equal(raw, t.data), t.name
    skipped = ("tokens", "scores", "token_type", "merges")
    assert gguf_metadata() == {k: f.contents() for k, f in reader.fields.items()
                               if not (k.startswith("tokenizer.ggml.") and k.split(".")[-1] in skipped)}
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGML" + bytes(60))
    with pytest.raises(ValueError, match="not a GGUF file"):
        gguf_tensors(junk)

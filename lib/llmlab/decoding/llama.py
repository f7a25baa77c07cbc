"""The Llama decoder written out from a model's weights: RMSNorm, RoPE, grouped-query attention, SwiGLU MLP.

:class:`LlamaWeights` reads the tensors of a Hugging Face Llama-family model once (SmolLM2 is one)
and runs its layers in plain PyTorch with the attention itself left to the caller: a layer hands
``attend(q, k, v)`` the rotated queries, keys and values of the new tokens, so each decoder keeps
its keys and values where it likes. :class:`~llmlab.decoding.StaticDecoder` writes them into a
preallocated cache of fixed shape; :mod:`llmlab.serving` into the blocks of a paged cache.
Computed as ``transformers``' ``LlamaForCausalLM`` computes (RMSNorm in float32, RoPE angles in
float32), so the logits agree with the model's own forward to rounding.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .._checks import check_module
from .._torch import model_device

__all__ = ["LlamaWeights"]


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in float32, as Llama does: w * x / sqrt(mean(x^2) + eps)."""
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding: x * cos + rotate_half(x) * sin (cos, sin broadcast over heads)."""
    return x * cos + _rotate_half(x) * sin


class LlamaWeights:
    """The tensors of a Llama-family model, read once, and its decoder layer written out.

    ``LlamaWeights(model)`` keeps references (no copies) to the embedding, the LM head (tied or
    not), the final norm and, per layer, the two RMSNorm weights and (weight, bias) of the seven
    projections. Other architectures, RoPE scalings other than the default and MLPs other than
    SiLU raise ``ValueError``. Shapes: hidden states ``x`` are ``(batch, n, d_model)``.
    """

    SUPPORTED = ("llama",)

    def __init__(self, model, *, who: str = "this decoder"):
        check_module("model", model)
        config = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None)
        if model_type not in self.SUPPORTED:
            raise ValueError(
                f"{who} supports the Llama family (model_type in {self.SUPPORTED}, e.g. SmolLM2), "
                f"got model_type={model_type!r}; use llmlab.decoding.greedy for other models"
            )
        rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
        if rope_type != "default":
            raise ValueError(f"{who} supports plain RoPE only, got rope_type={rope_type!r}; use greedy")
        if getattr(config, "hidden_act", "silu") != "silu":
            raise ValueError(f"{who} supports the SiLU MLP only, got hidden_act={config.hidden_act!r}")
        inner = model.model
        self.embed = inner.embed_tokens.weight  # (vocab, d_model)
        self.lm_head = model.get_output_embeddings().weight  # (vocab, d_model), tied to embed in SmolLM2
        self.final_norm = inner.norm.weight
        self.eps = float(config.rms_norm_eps)
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        wb = lambda linear: (linear.weight, linear.bias)  # noqa: E731
        self.layers = [
            dict(
                ln1=layer.input_layernorm.weight, ln2=layer.post_attention_layernorm.weight,
                q=wb(layer.self_attn.q_proj), k=wb(layer.self_attn.k_proj), v=wb(layer.self_attn.v_proj),
                o=wb(layer.self_attn.o_proj), gate=wb(layer.mlp.gate_proj), up=wb(layer.mlp.up_proj),
                down=wb(layer.mlp.down_proj),
            )
            for layer in inner.layers
        ]
        self.device = model_device(model)
        self.dtype = self.embed.dtype
        rotary = inner.rotary_emb
        self.inv_freq = rotary.inv_freq.to(device=self.device, dtype=torch.float32)  # (head_dim / 2,)
        self.rope_scaling = float(getattr(rotary, "attention_scaling", 1.0))

    def rope_tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for integer ``positions`` (any shape) -> (``*positions.shape``, head_dim), as Llama
        computes them: angle = position * inv_freq in float32, then cast to the model's dtype."""
        angles = positions.to(torch.float32)[..., None] * self.inv_freq
        emb = torch.cat((angles, angles), dim=-1)
        return (emb.cos() * self.rope_scaling).to(self.dtype), (emb.sin() * self.rope_scaling).to(self.dtype)

    def block(self, layer: dict, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """One decoder layer on x (b, n, d); cos/sin broadcast against (b, heads, n, head_dim).

        ``attend(q, k, v)`` gets q (b, n_heads, n, head_dim) and the new tokens' k, v (b,
        n_kv_heads, n, head_dim), after RoPE, and returns the attention output (b, n_heads, n,
        head_dim): it is where a cache stores the new keys and values and reads the old ones.
        """
        b, n, _ = x.shape
        h = _rms_norm(x, layer["ln1"], self.eps)
        q = F.linear(h, *layer["q"]).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = F.linear(h, *layer["k"]).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = F.linear(h, *layer["v"]).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        a = attend(q, k, v)
        x = x + F.linear(a.transpose(1, 2).reshape(b, n, self.n_heads * self.head_dim), *layer["o"])
        h = _rms_norm(x, layer["ln2"], self.eps)  # SwiGLU MLP: down(silu(gate h) * up h)
        return x + F.linear(F.silu(F.linear(h, *layer["gate"])) * F.linear(h, *layer["up"]), *layer["down"])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head: hidden states (..., d_model) -> logits (..., vocab) in the model's dtype."""
        return F.linear(_rms_norm(x, self.final_norm, self.eps), self.lm_head)

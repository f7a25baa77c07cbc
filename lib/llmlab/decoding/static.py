"""StaticDecoder: greedy decoding for the Llama family written for speed.

A preallocated KV cache and a decode step with fixed shapes and fixed memory addresses, written
in plain PyTorch from the model's weights (RMSNorm, RoPE, grouped-query attention, SiLU MLP), so
that a GPU can capture one step as a CUDA graph and replay it with one launch per token.
Token-identical to :func:`llmlab.decoding.greedy` and to ``model.generate(do_sample=False)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_int, check_module
from ..modelinfo import check_fits_model, context_size
from .limits import _check_request
from .llama import LlamaWeights

__all__ = ["StaticDecoder"]


class StaticDecoder:
    """Greedy decoding for a Llama-family model with a preallocated KV cache and a static decode step.

    ``StaticDecoder(model, max_len)`` reads the model's weights directly (embedding, RMSNorm, RoPE,
    grouped-query attention, SiLU MLP, tied or untied LM head) and preallocates, per layer, keys and
    values of shape (1, n_kv_heads, max_len, head_dim). Every decode step then has the same shapes
    and the same memory addresses: it writes the new key/value at position ``pos`` (a tensor, not a
    Python int) and attends to positions <= pos through a mask. That is what lets a GPU capture one
    step as a CUDA graph and replay it with a single launch instead of one small kernel launch per
    operator from Python (:func:`llmlab.decoding.count_step_ops` counts the HF model's cached step:
    over a thousand ATen operators for SmolLM2-135M on the CPU, about as many launches on a GPU). On the CPU (or MPS) the same static step runs eagerly, without graphs.

    ``.greedy(input_ids, max_new_tokens, *, eos_token_id=None)`` returns the same as
    :func:`llmlab.decoding.greedy`. ``compile=True`` (CUDA only) wraps the step in
    ``torch.compile`` before the graph is captured, fusing small element-wise kernels; it costs a
    minute of compilation. Other architectures raise ``ValueError`` (use
    :func:`llmlab.decoding.greedy` for them).

    Why it is fast: batch-1 decoding reads every weight once per token and does ~2 FLOPs per
    weight, so its floor is (weight bytes + KV bytes) / memory bandwidth; HF ``generate`` is far
    above that floor because of per-kernel launch and Python overhead, which the graph removes.
    """

    SUPPORTED = LlamaWeights.SUPPORTED

    def __init__(self, model, max_len: int, *, compile: bool = False, use_cuda_graph: bool | None = None):
        check_module("model", model)
        weights = LlamaWeights(model, who="StaticDecoder")
        # The RoPE tables below would extrapolate past the model's trained positions: refuse.
        max_len = check_int("max_len", max_len, low=2, high=context_size(model))

        self.model = model
        self.max_len = max_len
        self.weights = weights
        self.n_heads, self.n_kv_heads, self.head_dim = weights.n_heads, weights.n_kv_heads, weights.head_dim
        self.layers, self.embed = weights.layers, weights.embed
        self.device, self.dtype = weights.device, weights.dtype
        # RoPE tables for every position (angle = pos * inv_freq in float32, as Llama computes it).
        self.cos, self.sin = weights.rope_tables(torch.arange(max_len, device=self.device))  # (max_len, head_dim)

        # Static state: the KV cache, the current input token and its position, the output tokens.
        shape = (1, self.n_kv_heads, max_len, self.head_dim)
        self.k_cache = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.v_cache = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.token = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self.pos = torch.zeros((1,), dtype=torch.long, device=self.device)
        self.out = torch.zeros((max_len,), dtype=torch.long, device=self.device)
        self.key_positions = torch.arange(max_len, device=self.device)

        on_cuda = self.device.type == "cuda"
        self.use_cuda_graph = on_cuda if use_cuda_graph is None else use_cuda_graph
        if self.use_cuda_graph and not on_cuda:
            raise ValueError("use_cuda_graph=True needs the model on a CUDA device")
        if compile and not on_cuda:
            raise ValueError("compile=True is for CUDA; on this device the eager static step is used")
        self._step_fn = self._decode_step
        if compile:
            self._step_fn = torch.compile(self._decode_step, fullgraph=True)  # default mode: fuses, no own graphs
        self._graph = None

    # -- the model, written out -----------------------------------------------------------------

    def _attention_block(self, layer, x, cos, sin, attend):
        """x (1, n, d) at positions given by cos/sin (n, head_dim); ``attend(q, k, v)`` does the attention."""
        return self.weights.block(layer, x, cos, sin, attend)

    def _logits(self, x_last: torch.Tensor) -> torch.Tensor:
        return self.weights.logits(x_last).float()  # argmax in float32, as greedy and generate take it

    @torch.no_grad()
    def _prefill(self, prompt: torch.Tensor) -> None:
        """Run the prompt (1, L) with causal attention, fill cache[:, :, :L], set token/pos/out for decoding."""
        L = prompt.shape[1]
        n_rep = self.n_heads // self.n_kv_heads
        x = F.embedding(prompt, self.embed)
        cos, sin = self.cos[:L], self.sin[:L]
        for i, layer in enumerate(self.layers):

            def attend(q, k, v, i=i):
                self.k_cache[i][:, :, :L].copy_(k)
                self.v_cache[i][:, :, :L].copy_(v)
                k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

            x = self._attention_block(layer, x, cos, sin, attend)
        first = self._logits(x[:, -1]).argmax(dim=-1)  # (1,)
        self.out[:L].copy_(prompt[0])
        self.out[L : L + 1].copy_(first)
        self.token.copy_(first.view(1, 1))
        self.pos.fill_(L)

    def _decode_step(self) -> None:
        """One token, shapes fixed: read ``token`` at ``pos``, write K/V at pos, append argmax to ``out``, pos += 1."""
        n_rep = self.n_heads // self.n_kv_heads
        x = F.embedding(self.token, self.embed)  # (1, 1, d)
        cos, sin = self.cos.index_select(0, self.pos), self.sin.index_select(0, self.pos)  # (1, head_dim)
        visible = (self.key_positions <= self.pos).view(1, 1, 1, self.max_len)  # keys 0..pos
        for i, layer in enumerate(self.layers):

            def attend(q, k, v, i=i):
                self.k_cache[i].index_copy_(2, self.pos, k)
                self.v_cache[i].index_copy_(2, self.pos, v)
                # Grouped-query attention without copying K/V: the n_rep query heads of a KV head
                # become n_rep "query positions" of that head.
                q = q.reshape(1, self.n_kv_heads, n_rep, self.head_dim)
                a = F.scaled_dot_product_attention(q, self.k_cache[i], self.v_cache[i], attn_mask=visible)
                return a.reshape(1, self.n_heads, 1, self.head_dim)

            x = self._attention_block(layer, x, cos, sin, attend)
        next_token = self._logits(x[:, -1]).argmax(dim=-1)  # (1,)
        self.out.index_copy_(0, self.pos + 1, next_token)
        self.token.copy_(next_token.view(1, 1))
        self.pos.add_(1)

    # -- CUDA graph ---------------------------------------------------------------------------------

    def _capture(self) -> None:
        """Warm up on a side stream, then record one decode step into a CUDA graph (once per decoder)."""
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(3):  # warm-up runs allocate workspaces, pick kernels (and compile)
                self.pos.zero_()
                self._step_fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.pos.zero_()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            self._step_fn()
        self._graph = graph

    def _run_step(self) -> None:
        if self._graph is not None:
            self._graph.replay()
        else:
            self._step_fn()

    # -- public API -------------------------------------------------------------------------------

    @torch.no_grad()
    def greedy(self, input_ids: torch.Tensor, max_new_tokens: int, *, eos_token_id: int | None = None) -> torch.Tensor:
        """Greedy decoding, (1, prompt_len) -> (1, prompt_len + n_new), on ``input_ids``' device;
        the same tokens as :func:`llmlab.decoding.greedy`.

        ``prompt_len + max_new_tokens`` must fit in ``max_len``. The cache is reused across calls:
        a call overwrites positions 0..pos before reading them and masks everything after pos.
        """
        # The model's context bounds max_len; prompt_len + max_new_tokens is held to max_len below.
        max_new_tokens, eos_token_id = _check_request(self.model, input_ids, max_new_tokens, eos_token_id, fits=False)
        check_fits_model(self.model, input_ids, eos_token_id=eos_token_id)
        L = input_ids.shape[1]
        if L + max_new_tokens > self.max_len:
            raise ValueError(f"prompt_len + max_new_tokens = {L} + {max_new_tokens} exceeds max_len={self.max_len}; "
                             f"build StaticDecoder(model, max_len>={L + max_new_tokens})")
        prompt = input_ids.to(self.device)
        if max_new_tokens == 0:
            return prompt.clone().to(input_ids.device)
        if self.use_cuda_graph and self._graph is None:
            self._capture()
        self._prefill(prompt)
        n_new = 1
        # The first new token came from the prefill; each replay adds one more. EOS is checked in
        # chunks so the GPU runs ahead of the host instead of synchronising after every token.
        chunk = 16 if self.device.type == "cuda" else 1
        while n_new < max_new_tokens:
            if eos_token_id is not None and bool((self.out[L : L + n_new] == eos_token_id).any()):  # host sync: EOS
                break
            for _ in range(min(chunk, max_new_tokens - n_new)):
                self._run_step()
                n_new += 1
        generated = self.out[L : L + n_new]
        if eos_token_id is not None:
            hits = (generated == eos_token_id).nonzero()
            if len(hits):
                generated = generated[: int(hits[0]) + 1]
        return torch.cat([prompt[0], generated]).view(1, -1).to(input_ids.device)



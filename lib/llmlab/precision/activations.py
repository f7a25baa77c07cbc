"""Where mixed precision saves memory, measured: the bytes a forward pass saves for backward, in
fp32, under ``torch.autocast`` and in a pure half-precision copy, against tokens per step.

Two setups are called "mixed precision" and they save different bytes:

* an explicit **half model with an fp32 master copy** (:func:`llmlab.precision.mixed_precision_setup`,
  Apex O2 / DeepSpeed style): weights, grads and activations are half precision, so the saved
  activations are about half of fp32's from the first token on (``"bf16"`` below: the model cast);
* **``torch.autocast``** (what PyTorch users run): the weights and their gradients stay fp32 (they
  *are* the master copy), and every autocast matmul casts its fp32 weight to half and saves that
  copy for backward (autocast caches one copy per weight per forward). So the saved bytes are
  ``2 B × (matmul parameters)`` *plus* half-precision activations: at few tokens per step they
  exceed fp32's, and the saving starts only past a crossover number of tokens.

:func:`saved_bytes_curve` measures the three on one model for several token counts;
:class:`SavedBytesCurve` fits each as a line (bytes = intercept + slope × tokens: the weight copies
and the per-token activations) and finds where autocast's line crosses fp32's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_choice, check_int, check_module, check_sequence
from .._torch import model_device
from ..memory import saved_activation_bytes
from ..modelinfo import vocab_size

__all__ = ["SAVED_BYTES_MODES", "SavedBytesCurve", "saved_bytes_curve"]

#: fp32 model; the fp32 model under ``torch.autocast(dtype=bfloat16)``; a bf16 copy of the model.
SAVED_BYTES_MODES = ("fp32", "autocast", "bf16")


@dataclass(frozen=True)
class SavedBytesCurve:
    """Saved-for-backward bytes of one forward pass per mode, at each token count.

    ``tokens``: tokens per step (batch × sequence); ``saved``: mode -> bytes at each token count.
    """

    tokens: tuple[int, ...]
    saved: dict[str, tuple[int, ...]]

    def line(self, mode: str) -> tuple[float, float]:
        """Least-squares ``(intercept_bytes, bytes_per_token)`` of ``mode``'s measurements (at least two
        different token counts)."""
        check_choice("mode", mode, tuple(self.saved))
        if len(set(self.tokens)) < 2:
            raise ValueError(f"tokens: a line needs at least two different token counts, got {self.tokens}")
        t = torch.tensor(self.tokens, dtype=torch.float64)
        b = torch.tensor(self.saved[mode], dtype=torch.float64)
        slope = ((t - t.mean()) * (b - b.mean())).sum() / ((t - t.mean()) ** 2).sum()
        return float(b.mean() - slope * t.mean()), float(slope)

    def crossover(self, mode: str = "autocast", reference: str = "fp32") -> float:
        """Tokens per step where ``mode``'s line falls below ``reference``'s (inf if it never does)."""
        (a0, a1), (r0, r1) = self.line(mode), self.line(reference)
        if a1 >= r1:
            return float("inf") if a0 > r0 else 0.0
        return max(0.0, (a0 - r0) / (r1 - a1))


def saved_bytes_curve(model: nn.Module, tokens, *, batch: int = 2, modes=SAVED_BYTES_MODES,
                      seed: int = 0) -> SavedBytesCurve:
    """Measure :func:`llmlab.memory.saved_activation_bytes` of an fp32 causal LM in each of ``modes``.

    ``tokens``: token counts per step (a list), each a multiple of ``batch`` (the sequence is
    ``tokens // batch`` random ids below the model's vocabulary size, drawn from ``seed``).
    ``"autocast"`` runs ``torch.autocast(device_type, dtype=torch.bfloat16)`` around the fp32
    model; ``"bf16"`` measures a bfloat16 copy. Saved views of the model's own parameters are not
    counted (they are model states); autocast's bf16 weight copies are new tensors and are.
    """
    check_module("model", model)
    if next(model.parameters()).dtype != torch.float32:
        raise ValueError("model must be in float32: the modes are measured against its fp32 weights")
    batch = check_int("batch", batch, low=1)
    tokens = [check_int(f"tokens[{i}]", t, low=batch) for i, t in enumerate(check_sequence("tokens", tokens))]
    if any(t % batch for t in tokens):
        raise ValueError(f"tokens must be multiples of batch={batch}, got {tokens}")
    modes = tuple(check_choice("modes", m, SAVED_BYTES_MODES) for m in check_sequence("modes", modes))
    vocab = vocab_size(model)
    if vocab is None:
        raise TypeError("model must be a causal LM with a token embedding (e.g. LlamaForCausalLM)")
    device = model_device(model)
    half = copy.deepcopy(model).to(torch.bfloat16) if "bf16" in modes else None
    generator = torch.Generator().manual_seed(check_int("seed", seed, low=0))
    saved: dict[str, list[int]] = {m: [] for m in modes}
    for t in tokens:
        ids = torch.randint(0, vocab, (batch, t // batch), generator=generator).to(device)
        for m in modes:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=m == "autocast"):
                saved[m].append(saved_activation_bytes(half if m == "bf16" else model, {"input_ids": ids}))
    return SavedBytesCurve(tokens=tuple(tokens), saved={m: tuple(v) for m, v in saved.items()})

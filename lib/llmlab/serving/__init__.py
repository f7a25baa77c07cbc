"""Serving many users: continuous batching, a paged KV cache, speculative decoding (notebook 15).

* ``paged``: :class:`PagedKVCache` — blocks, a free list, block tables, reference counts,
  shared prompt prefixes and copy-on-write (vLLM's PagedAttention, Kwon et al. 2023);
* ``engine``: :class:`PagedLlama` — a Llama-family model whose attention reads and writes the
  paged cache;
* ``scheduler``: :func:`serve` — static or continuous batching (Orca, Yu et al. 2022) of many
  requests, token-identical per request to :func:`llmlab.decoding.greedy`; :func:`simulate` — the
  same schedule timed by a :class:`StepCosts` model fitted to measured forwards;
* ``trace``: :func:`make_trace` — a seeded trace of chat requests with arrival times;
* ``speculative``: :func:`speculative_generate` — a draft model, the target's own first layers
  (:func:`early_exit_draft`) or prompt lookup proposes, the target verifies (Leviathan et al. 2023;
  Chen et al. 2023); ``rule``: the accept/reject rule;
  ``exact``: its output distribution enumerated on a small vocabulary.
"""

from .engine import PagedLlama
from .exact import autoregressive_distribution, next_token_distribution, speculative_distribution
from .paged import CacheUsage, PagedKVCache
from .rule import acceptance_probabilities, residual_distribution, verify
from .scheduler import POLICIES, RequestStats, ServeResult, StepCosts, serve, simulate
from .speculative import (PROMPT_LOOKUP, SpeculativeResult, early_exit_draft, expected_tokens_per_forward,
                          speculative_generate)
from .trace import QUESTIONS, SPECULATIVE_PROMPTS, SYSTEM_PROMPT, Request, Trace, make_trace

__all__ = [
    "PagedKVCache", "CacheUsage", "PagedLlama",
    "serve", "simulate", "ServeResult", "RequestStats", "StepCosts", "POLICIES",
    "make_trace", "Trace", "Request", "SYSTEM_PROMPT", "QUESTIONS", "SPECULATIVE_PROMPTS",
    "speculative_generate", "SpeculativeResult", "expected_tokens_per_forward",
    "early_exit_draft",
    "PROMPT_LOOKUP", "acceptance_probabilities", "residual_distribution", "verify",
    "next_token_distribution", "autoregressive_distribution", "speculative_distribution",
]

"""A seeded request trace: chat prompts of varied length, varied output lengths, Poisson arrivals.

Real serving traces are skewed: most answers are short and a few are long (the ShareGPT
conversations vLLM and Orca were measured on have a long tail of output lengths). The trace draws
each request's number of new tokens log-uniformly between two bounds, which gives that shape,
and its arrival times from a Poisson process (exponential gaps at ``rate`` requests per second).
Every prompt starts with the same system prompt, as requests to one deployed assistant do.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from .._checks import check_float, check_int, check_str

__all__ = ["Request", "Trace", "make_trace", "SYSTEM_PROMPT", "QUESTIONS", "SPECULATIVE_PROMPTS"]

#: What every request of the trace starts with (the shared prefix).
SYSTEM_PROMPT = ("You are a helpful assistant for a university course on machine-learning systems. Answer "
                 "clearly and briefly, give one concrete example where it helps, and say when you are not sure.")

#: User questions of varied length, drawn with replacement.
QUESTIONS = (
    "What is a GPU?",
    "Why is the sky blue?",
    "What does a compiler do?",
    "Explain what a hash table is.",
    "What is the difference between RAM and a hard disk?",
    "How does a neural network learn from data?",
    "Name three sorting algorithms and say which one is fastest on average.",
    "What is overfitting, and how can a validation set help you notice it?",
    "Write a short poem about the ocean at night.",
    "Why do large language models need so much memory when they generate long answers?",
    "Summarise the causes of the French Revolution in a few sentences for a high-school student.",
    "I have a Python list of numbers. How do I compute its mean and standard deviation without any library?",
    "Describe what happens, step by step, when you type a web address into a browser and press enter.",
    "Compare batch gradient descent, stochastic gradient descent and mini-batch gradient descent: what does each "
    "one cost per step, and when would you use which?",
    "My laptop has 8 GB of memory and a 4-core CPU. Can it run a language model with 7 billion parameters? "
    "Explain what limits it and what I could do about it.",
    "Give me a plan for learning linear algebra in four weeks, with one topic per week and an exercise for each.",
)

#: Two tasks for speculative decoding (user messages for the chat template): one whose answer copies the
#: prompt (editing: prompt lookup drafts well), one whose answer is new text (prompt lookup has little to find).
SPECULATIVE_PROMPTS = {
    "editing": (
        "Correct the spelling mistakes in this text and write the corrected text:\n\n"
        "The final reprot for the serving project is due on Friday, March 14, at 5 pm, and it must include the "
        "latency measurments. Please send your sections to Maria by Wednesday so that she can merge them."
    ),
    "open-ended": "Write a short story about a robot who learns to paint.",
}


@dataclass(frozen=True)
class Request:
    """One request: ``prompt`` (1, prompt_len) token ids, ``max_new_tokens``, ``arrival`` (seconds)."""

    prompt: torch.Tensor
    max_new_tokens: int
    arrival: float


@dataclass(frozen=True)
class Trace:
    """A list of :class:`Request` in arrival order, with the columns :func:`llmlab.serving.serve` takes."""

    requests: tuple[Request, ...]
    prefix_len: int  # tokens of the shared system prompt at the start of every prompt

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def prompts(self) -> list[torch.Tensor]:
        return [r.prompt for r in self.requests]

    @property
    def max_new_tokens(self) -> list[int]:
        return [r.max_new_tokens for r in self.requests]

    @property
    def arrival_times(self) -> list[float]:
        return [r.arrival for r in self.requests]


def _encode(tokenizer, system: str, question: str) -> list[int]:
    """Token ids of one chat prompt: the tokenizer's chat template when it has one, else plain text."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return list(tokenizer(f"{system}\n\nUser: {question}\nAssistant:")["input_ids"])


def make_trace(tokenizer, n_requests: int, *, seed: int = 0, rate: float = 4.0, min_new_tokens: int = 4,
               max_new_tokens: int = 64, system_prompt: str = SYSTEM_PROMPT) -> Trace:
    """``n_requests`` chat requests to one assistant, seeded.

    Questions come from :data:`QUESTIONS`; new tokens are drawn log-uniformly in
    [``min_new_tokens``, ``max_new_tokens``] (many short answers, a few long ones); arrivals are a
    Poisson process of ``rate`` requests per second starting at 0. ``tokenizer``: a Hugging Face
    tokenizer (its chat template is used when it has one).
    """
    n_requests = check_int("n_requests", n_requests, low=1, high=100_000)
    seed = check_int("seed", seed, low=0)
    rate = check_float("rate", rate, low=0.0, low_open=True)
    min_new_tokens = check_int("min_new_tokens", min_new_tokens, low=1)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=min_new_tokens)
    system_prompt = check_str("system_prompt", system_prompt)
    if not callable(tokenizer):
        raise TypeError(f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
    rng = random.Random(seed)
    encoded = [_encode(tokenizer, system_prompt, q) for q in QUESTIONS]
    prefix_len = min(sum(1 for _ in _common(encoded[0], e)) for e in encoded[1:])
    requests, t = [], 0.0
    lo, hi = math.log(min_new_tokens), math.log(max_new_tokens + 1)
    for _ in range(n_requests):
        ids = encoded[rng.randrange(len(encoded))]
        n_new = min(max_new_tokens, int(math.exp(rng.uniform(lo, hi))))
        requests.append(Request(torch.tensor([ids]), n_new, round(t, 6)))
        t += rng.expovariate(rate)
    return Trace(tuple(requests), prefix_len)


def _common(a: list[int], b: list[int]):
    """Yield the leading tokens ``a`` and ``b`` share."""
    for x, y in zip(a, b):
        if x != y:
            return
        yield x

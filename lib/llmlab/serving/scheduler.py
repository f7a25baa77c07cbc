"""Serving many requests on one model: static batching and continuous batching over a paged KV cache.

Static (request-level) batching takes up to ``max_batch`` waiting requests, runs them as one batch
until the longest is done — a finished request stays in the batch as padding, computed and thrown
away, as ``generate`` does with a batch — and only then admits the next ones. Continuous
(iteration-level) batching (Orca, Yu et al., OSDI 2022) decides at every decode step: a finished
request leaves at once and a waiting one takes its place, so the batch stays full.

Both run on the same engine (:class:`~llmlab.serving.engine.PagedLlama`: the paged cache, one
prefill forward per admitted request, one batched forward per decode step), so a comparison
between them measures the scheduling and nothing else. Time is the wall clock of the forwards;
while no request has arrived the clock jumps to the next arrival instead of sleeping.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from ..modelinfo import check_fits_model
from .._checks import check_bool, check_choice, check_eos_token_id, check_int, check_prompt_ids, check_sequence
from .engine import PagedLlama
from .paged import CacheUsage, PagedKVCache

__all__ = ["POLICIES", "serve", "simulate", "ServeResult", "RequestStats", "StepCosts"]

#: The scheduling policies :func:`serve` knows.
POLICIES = ("continuous", "static")


@dataclass(frozen=True)
class RequestStats:
    """When one request arrived, got its first token and finished (seconds on the serving clock)."""

    arrival: float
    first_token: float
    finish: float
    prompt_len: int
    n_new: int

    @property
    def ttft(self) -> float:
        """Time to first token: queueing plus prefill."""
        return self.first_token - self.arrival

    @property
    def latency(self) -> float:
        """Arrival to last token."""
        return self.finish - self.arrival


@dataclass(frozen=True)
class ServeResult:
    """What :func:`serve` returns. ``sequences[i]`` is request i's prompt followed by its new tokens,
    (1, prompt_len + n_new), as :func:`llmlab.decoding.greedy` returns it; ``result[i]`` is the same.

    ``requests``: each request's :class:`RequestStats`; ``usage``: the cache's
    :class:`~llmlab.serving.CacheUsage` at every decode step; ``decode_steps`` (batched forwards)
    and ``slot_steps`` (rows computed over all decode steps, padding rows included);
    ``seconds`` from the first arrival to the last token; ``bytes_per_token`` of the KV cache;
    ``reused_blocks`` (prompt blocks shared instead of computed) and ``copies`` (copy-on-write);
    ``forwards``: every forward pass as (kind, size, seconds), kind ``"prefill"`` (size: tokens run)
    or ``"decode"`` (size: rows in the batch). :meth:`reserved_slots` gives what a cache that
    reserves a fixed region per request would hold instead.
    """

    sequences: tuple[torch.Tensor, ...]
    requests: tuple[RequestStats, ...]
    usage: tuple[CacheUsage, ...]
    policy: str
    max_batch: int
    block_size: int
    decode_steps: int
    slot_steps: int
    seconds: float
    bytes_per_token: int
    reused_blocks: int
    copies: int
    forwards: tuple[tuple[str, int, float], ...]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.sequences[i]

    def __len__(self) -> int:
        return len(self.sequences)

    def reserved_slots(self, context: int) -> tuple[int, ...]:
        """Token slots held at every decode step by a contiguous cache that reserves ``context`` slots per
        running request, as a server must when it cannot know how long a request will grow: at least
        the longest prompt + max_new_tokens it accepts (2048 in the systems vLLM was compared with)."""
        context = check_int("context", context, low=1)
        return tuple(u.sequences * context for u in self.usage)

    @property
    def new_tokens(self) -> int:
        """Tokens generated for all requests (padding rows not counted)."""
        return sum(r.n_new for r in self.requests)

    @property
    def tokens_per_s(self) -> float:
        """Throughput: new tokens / seconds from the first arrival to the last token."""
        return self.new_tokens / self.seconds

    @property
    def useful_fraction(self) -> float:
        """Share of the computed decode rows that produced a token someone asked for."""
        return (self.new_tokens - len(self.requests)) / self.slot_steps if self.slot_steps else 1.0


@dataclass(frozen=True)
class StepCosts:
    """A linear cost model of the engine's forwards, seconds: ``decode(b) = decode_base + decode_per_row * b``
    for a decode step of b rows, ``prefill(n) = prefill_base + prefill_per_token * n`` for n prompt tokens.

    :meth:`fit` reads it off the ``forwards`` that :func:`serve` timed (a least-squares line through the
    median time at each size); :func:`simulate` replays a schedule with it instead of running the model.
    """

    decode_base: float
    decode_per_row: float
    prefill_base: float
    prefill_per_token: float

    def seconds(self, kind: str, size: int) -> float:
        if kind == "decode":
            return self.decode_base + self.decode_per_row * size
        return self.prefill_base + self.prefill_per_token * size

    @classmethod
    def fit(cls, *results: "ServeResult") -> "StepCosts":
        """Least-squares lines through the timed forwards of one or more :class:`ServeResult` s: one point per
        size, its median time, so that a few slow forwards (the first at a new shape, a busy machine) do not
        tilt the line, and every size counts once however many forwards it had."""
        if not results or not all(isinstance(r, ServeResult) for r in results):
            raise TypeError("results must be one or more ServeResult from serve()")
        lines = []
        for kind in ("decode", "prefill"):
            points = [(size, sec) for r in results for k, size, sec in r.forwards if k == kind]
            if len({size for size, _ in points}) < 2:
                raise ValueError(f"results must hold {kind} forwards of at least two sizes to fit a line "
                                 f"(serve at two batch sizes, or prompts of two lengths)")
            sizes = sorted({size for size, _ in points})
            x = torch.tensor([[1.0, size] for size in sizes], dtype=torch.float64)
            y = torch.tensor([[statistics.median(sec for n, sec in points if n == size)] for size in sizes],
                             dtype=torch.float64)
            base, slope = torch.linalg.lstsq(x, y).solution[:, 0].tolist()
            lines += [base, slope]
        return cls(*lines)


class _Running:
    """One admitted request: its tokens so far and how many it may still produce."""

    __slots__ = ("index", "tokens", "remaining", "done", "first_token")

    def __init__(self, index: int, tokens: list[int], remaining: int):
        self.index, self.tokens, self.remaining = index, tokens, remaining
        self.done, self.first_token = remaining == 0, None


def _check_requests(prompts, max_new_tokens) -> tuple[list[torch.Tensor], list[int]]:
    """The prompts, each ``(1, prompt_len)`` (a 1-D one lifted), and one new-token limit per prompt: the
    checks :func:`serve` and :func:`simulate` share."""
    prompts = check_sequence("prompts", prompts, what="token-id tensors of shape (1, prompt_len)")
    checked = []
    for i, p in enumerate(prompts):
        if isinstance(p, torch.Tensor) and p.dim() == 1:
            p = p[None]
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"prompts[{i}] must be a tensor of token ids of shape (1, prompt_len), got {type(p).__name__}")
        checked.append(check_prompt_ids("input_ids", p))
    if isinstance(max_new_tokens, (list, tuple)):
        if len(max_new_tokens) != len(checked):
            raise ValueError(f"max_new_tokens must be an int or one int per prompt: got {len(max_new_tokens)} "
                             f"for {len(checked)} prompts")
        limits = [check_int("max_new_tokens", n, low=0) for n in max_new_tokens]
    else:
        limits = [check_int("max_new_tokens", max_new_tokens, low=0)] * len(checked)
    return checked, limits


def _check_prompts(model, prompts, max_new_tokens, eos_token_id) -> tuple[list[torch.Tensor], list[int]]:
    """:func:`_check_requests`, and every request within ``model``'s vocabulary and context."""
    checked, limits = _check_requests(prompts, max_new_tokens)
    for p, n in zip(checked, limits):
        check_fits_model(model, p, max_new_tokens=n, eos_token_id=eos_token_id)
    return checked, limits


def _check_arrivals(arrival_times, n: int) -> list[float]:
    if arrival_times is None:
        return [0.0] * n
    arrivals = [float(a) for a in check_sequence("arrival_times", arrival_times, what="seconds")]
    if len(arrivals) != n or any(not (a >= 0) for a in arrivals) or arrivals != sorted(arrivals):
        raise ValueError(f"arrival_times must be {n} non-decreasing seconds >= 0 (one per prompt), got {arrival_times!r:.80}")
    return arrivals


def _check_options(max_batch, block_size, policy, share_prefix):
    """The scheduling options :func:`serve` and :func:`simulate` share."""
    return (check_int("max_batch", max_batch, low=1, high=4096), check_int("block_size", block_size, low=1, high=65536),
            check_choice("policy", policy, POLICIES), check_bool("share_prefix", share_prefix))


@torch.no_grad()
def serve(model, prompts, max_new_tokens, *, max_batch: int = 8, block_size: int = 16,
          eos_token_id: int | None = None, arrival_times=None, policy: str = "continuous",
          share_prefix: bool = True) -> ServeResult:
    """Greedy-decode every prompt, many at once, over a paged KV cache; per request the same tokens as
    :func:`llmlab.decoding.greedy` on that prompt alone.

    ``prompts``: a list of (1, prompt_len) token-id tensors; ``max_new_tokens``: an int or one per
    prompt; ``arrival_times``: seconds, non-decreasing (default: all at 0). ``policy``:
    ``"continuous"`` admits and retires requests at every decode step (Orca), ``"static"`` runs
    batches of up to ``max_batch`` requests to the end of their longest member. ``block_size``:
    token slots per KV block (vLLM's default is 16); ``share_prefix``: requests whose prompts start
    with the same full blocks share them (the first computes them). Llama-family models only
    (``ValueError`` otherwise). Returns a :class:`ServeResult`.
    """
    eos_token_id = check_eos_token_id(eos_token_id)
    prompts, limits = _check_prompts(model, prompts, max_new_tokens, eos_token_id)
    arrivals = _check_arrivals(arrival_times, len(prompts))
    max_batch, block_size, policy, share_prefix = _check_options(max_batch, block_size, policy, share_prefix)
    engine = PagedLlama(model, num_blocks=_pool_blocks(prompts, limits, max_batch, block_size), block_size=block_size)
    return _Scheduler(engine, prompts, limits, arrivals, max_batch, eos_token_id, policy, share_prefix).run()


def _pool_blocks(prompts, limits, max_batch: int, block_size: int) -> int:
    """Enough blocks that admission never waits for memory: every slot of the batch at the longest
    length any request can reach (a static batch's padding rows grow to its longest member's end)."""
    longest = max(p.shape[1] for p in prompts) + max(limits)
    return max_batch * -(-longest // block_size) + max_batch


class _Bookkeeping:
    """An engine that does the cache's book-keeping and no arithmetic (for :func:`simulate`)."""

    def __init__(self, num_blocks: int, block_size: int):
        self.cache = PagedKVCache(1, 1, 1, num_blocks=num_blocks, block_size=block_size)

    def forward(self, seq_ids, new_tokens):
        for s, t in zip(seq_ids, new_tokens):
            self.cache.allocate(s, len(t))
        return torch.zeros(len(seq_ids), 1)


def simulate(prompts, max_new_tokens, *, costs: StepCosts, max_batch: int = 8, block_size: int = 16,
             arrival_times=None, policy: str = "continuous", share_prefix: bool = True) -> ServeResult:
    """The schedule :func:`serve` would run, with every forward's time taken from ``costs`` instead of
    running a model: the same admissions, steps, padding rows and cache blocks (the tokens are
    placeholders). Arguments as :func:`serve`, without EOS (lengths are ``max_new_tokens``)."""
    if not isinstance(costs, StepCosts):
        raise TypeError(f"costs must be a StepCosts (StepCosts.fit(serve(...))), got {type(costs).__name__}")
    prompts, limits = _check_requests(prompts, max_new_tokens)
    arrivals = _check_arrivals(arrival_times, len(prompts))
    max_batch, block_size, policy, share_prefix = _check_options(max_batch, block_size, policy, share_prefix)
    engine = _Bookkeeping(_pool_blocks(prompts, limits, max_batch, block_size), block_size)
    return _Scheduler(engine, prompts, limits, arrivals, max_batch, None, policy, share_prefix, costs).run()


class _Scheduler:
    def __init__(self, engine, prompts, limits, arrivals, max_batch, eos, policy, share_prefix, costs=None):
        self.engine, self.cache, self.costs = engine, engine.cache, costs
        self.forwards: list[tuple[str, int, float]] = []
        self.prompts = [p[0].tolist() for p in prompts]
        self.devices = [p.device for p in prompts]
        self.limits, self.arrivals, self.max_batch, self.eos = limits, arrivals, max_batch, eos
        self.policy, self.share_prefix = policy, share_prefix
        self.clock = arrivals[0] if arrivals else 0.0
        self.stats: dict[int, RequestStats] = {}
        self.outputs: dict[int, list[int]] = {}
        self.usage: list[CacheUsage] = []
        self.decode_steps = self.slot_steps = 0

    def _forward(self, kind: str, seq_ids: list[int], new_tokens: list[list[int]]) -> torch.Tensor:
        """Run the engine and advance the clock by its wall time (or by the cost model's)."""
        t0 = time.perf_counter()
        logits = self.engine.forward(seq_ids, new_tokens)
        size = len(new_tokens[0]) if kind == "prefill" else len(seq_ids)
        seconds = time.perf_counter() - t0 if self.costs is None else self.costs.seconds(kind, size)
        self.clock += seconds
        self.forwards.append((kind, size, seconds))
        return logits

    def _emit(self, req: _Running, token: int) -> None:
        """Append a generated token; mark the request done at its limit or at EOS."""
        if req.done:  # a padding row of a static batch: computed, thrown away
            return
        req.tokens.append(token)
        req.remaining -= 1
        if req.first_token is None:
            req.first_token = self.clock
        if req.remaining == 0 or token == self.eos:
            req.done = True
            self._finish(req)

    def _finish(self, req: _Running) -> None:
        i = req.index
        self.outputs[i] = list(req.tokens)  # a static batch keeps appending padding to req.tokens
        first = req.first_token if req.first_token is not None else self.clock
        self.stats[i] = RequestStats(self.arrivals[i], first, self.clock, len(self.prompts[i]),
                                     len(req.tokens) - len(self.prompts[i]))

    def _admit(self, i: int) -> _Running | None:
        """Add request i to the cache (sharing its cached prefix blocks), prefill the rest, emit its first
        token; None for a request that asks for no token (it finishes at once)."""
        prompt = self.prompts[i]
        req = _Running(i, list(prompt), self.limits[i])
        if req.done:  # max_new_tokens = 0: nothing to compute
            self._finish(req)
            return None
        cached = self.cache.add(i, prompt if self.share_prefix else None)
        logits = self._forward("prefill", [i], [prompt[cached:]])
        if self.share_prefix:
            self.cache.publish(i, prompt)
        self._emit(req, int(logits[0].float().argmax()))  # argmax in float32, as decoding.greedy takes it
        return req

    def _decode(self, batch: list[_Running]) -> None:
        """One decode step for every request of ``batch``: feed its last token, emit the argmax."""
        logits = self._forward("decode", [r.index for r in batch], [[r.tokens[-1]] for r in batch])
        # The scheduler must read the tokens to see EOS and lengths: one host sync per step.
        next_tokens = logits.float().argmax(dim=-1).tolist()
        self.decode_steps += 1
        self.slot_steps += len(batch)
        self.usage.append(self.cache.usage())
        for req, token in zip(batch, next_tokens):
            if req.done:  # padding: still computed, its KV still grows, as in a padded batch
                req.tokens.append(token)
            else:
                self._emit(req, token)

    def _retire(self, running: list[_Running]) -> list[_Running]:
        """Free the cache of finished requests: continuous batching lets each one leave as soon as it is
        done; a static batch leaves only as a whole, when its longest member is done."""
        if self.policy == "continuous" or all(r.done for r in running):
            for r in running:
                if r.done:
                    self.cache.free(r.index)
            return [r for r in running if not r.done]
        return running

    def run(self) -> ServeResult:
        waiting = list(range(len(self.prompts)))  # in arrival order
        running: list[_Running] = []
        while waiting or running:
            running = self._retire(running)  # finished requests leave before waiting ones join
            if not running and waiting and self.arrivals[waiting[0]] > self.clock:
                self.clock = self.arrivals[waiting[0]]  # idle: jump to the next arrival
            # Continuous: admit whenever a slot is free. Static: only into an empty batch.
            if self.policy == "continuous" or not running:
                while waiting and len(running) < self.max_batch and self.arrivals[waiting[0]] <= self.clock:
                    req = self._admit(waiting.pop(0))
                    if req is not None:
                        running.append(req)
            running = self._retire(running)  # a request can finish at its prefill (one new token, or EOS)
            if running:
                self._decode(running)
        n = len(self.prompts)
        sequences = tuple(torch.tensor([self.outputs[i]], device=self.devices[i]) for i in range(n))
        requests = tuple(self.stats[i] for i in range(n))
        seconds = max(r.finish for r in requests) - min(self.arrivals)
        return ServeResult(sequences, requests, tuple(self.usage), self.policy, self.max_batch, self.cache.block_size,
                           self.decode_steps, self.slot_steps, seconds, self.cache.bytes_per_token,
                           self.cache.reused_blocks, self.cache.copies, tuple(self.forwards))

"""llmlab.serving against its peers: Hugging Face's forward and `generate`, vLLM's block-table tests.

Identity tests run on tiny random Llamas in float64 with a large initialisation (``initializer_range
0.5``: the default 0.02 makes a random model repeat one token forever, which would let a broken
scheduler pass), where rounding cannot flip an argmax. The default model is loaded by the two
``slow`` tests at the end.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.candidate_generator import PromptLookupCandidateGenerator
from transformers.generation.utils import _speculative_sampling

from conftest import CharTokenizer, hf_generate
from llmlab.decoding import greedy
from llmlab.models import LLAMA_PRESETS
from llmlab.serving.speculative import _lookup
from llmlab.serving import (PagedKVCache, PagedLlama, StepCosts, acceptance_probabilities, autoregressive_distribution,
                            early_exit_draft, expected_tokens_per_forward, make_trace, next_token_distribution,
                            residual_distribution, serve, simulate, speculative_distribution,
                            speculative_generate, verify)


def llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A tiny float64 Llama (vocab 97, 2 layers, 4 heads / 2 KV heads) with diverse greedy output."""
    settings = dict(LLAMA_PRESETS["tiny"], max_position_embeddings=512, initializer_range=0.5,
                    bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**settings, **overrides})).double().eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run thousands of microsecond-sized ops: on a busy machine, waking a second thread
    for each costs far more than it saves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def target():
    return llama(0)


@pytest.fixture(scope="module")
def noisy_draft(target):
    """The target with noise on every weight: accepts some of its guesses, not all."""
    draft = copy.deepcopy(target)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(0.02 * p.std() * torch.randn(p.shape, generator=g, dtype=p.dtype))  # accepts ~60 %
    return draft


def prompt(seed: int, length: int = 8, repeat: int = 0) -> torch.Tensor:
    """Random ids (1, length) in [3, 97); ``repeat`` > 0 appends the first ``repeat`` again (for prompt lookup)."""
    ids = torch.randint(3, 97, (1, length), generator=torch.Generator().manual_seed(seed))
    return torch.cat([ids, ids[:, :repeat]], dim=1)


# ---------------------------------------------------------------------------------------------
# The paged cache's book-keeping. Ported from vLLM tests/core/block/test_block_table.py
# (test_allocate_free, test_append_token_ids_allocation, test_fork, test_cow,
# test_allocate_prefix_caching), re-derived for this cache's API.
# ---------------------------------------------------------------------------------------------


def cache(num_blocks=1024, block_size=16, n_layers=2):
    return PagedKVCache(n_layers, 2, 4, num_blocks=num_blocks, block_size=block_size, dtype=torch.float64)


def blocks(n_tokens, block_size):
    return -(-n_tokens // block_size)


@pytest.mark.parametrize("sequence_len", [1, 16, 129])
def test_allocate_free(sequence_len):
    c = cache()
    for _ in range(5):
        c.add("a")
        c.allocate("a", sequence_len)
        assert len(c.free_blocks) == 1024 - blocks(sequence_len, 16)
        c.free("a")
        assert len(c.free_blocks) == 1024 and sorted(c.free_blocks) == list(range(1024))


@pytest.mark.parametrize("block_size", [1, 8])
@pytest.mark.parametrize("sequence_len, append_len", [(1, 1), (1, 129), (16, 16), (129, 1), (129, 129)])
def test_append_allocates_only_the_blocks_needed(block_size, sequence_len, append_len):
    c = cache(block_size=block_size)
    c.add("a")
    c.allocate("a", sequence_len)
    assert len(c.block_tables["a"]) == blocks(sequence_len, block_size)
    for _ in range(append_len):  # one token at a time, as decoding appends
        c.allocate("a", 1)
    assert len(c.block_tables["a"]) == blocks(sequence_len + append_len, block_size)
    # Waste: fewer than block_size slots, in the last block only.
    assert 0 <= c.usage().slots - c.usage().tokens < block_size


def test_slots_follow_the_block_table():
    c = cache(num_blocks=8, block_size=4)
    c.free_blocks = [3, 6, 1, 7]  # hand out 7, 1, 6, 3: scattered blocks
    c.add("a")
    slots = c.allocate("a", 10)
    table = c.block_tables["a"]
    assert table == [7, 1, 6]
    assert slots == [table[t // 4] * 4 + t % 4 for t in range(10)]
    assert c.slot_table(["a"]).tolist() == [slots]


@pytest.mark.parametrize("seq_len", [1, 9, 129])
@pytest.mark.parametrize("block_size", [1, 8])
def test_fork_shares_every_block_until_both_are_freed(seq_len, block_size):
    c = cache(block_size=block_size)
    c.add("a")
    c.allocate("a", seq_len)
    free_before = len(c.free_blocks)
    c.fork("a", "b")
    assert c.block_tables["a"] == c.block_tables["b"] and len(c.free_blocks) == free_before
    c.free("a")
    assert len(c.free_blocks) == free_before
    c.free("b")
    assert len(c.free_blocks) == 1024


@pytest.mark.parametrize("sequence_len", [1, 16, 129])
@pytest.mark.parametrize("append_len", [1, 16, 129])
@pytest.mark.parametrize("appender", ["forked", "original"])
def test_copy_on_write(sequence_len, append_len, appender):
    bs = 8
    c = cache(block_size=bs)
    c.add("orig")
    slots = c.allocate("orig", sequence_len)
    c.keys[:, slots] = torch.arange(1.0, sequence_len + 1, dtype=torch.float64)[:, None, None]  # recognisable data
    original_ids = list(c.block_tables["orig"])
    c.fork("orig", "fork")
    assert len(c.free_blocks) == 1024 - blocks(sequence_len, bs)  # nothing copied at fork time
    writer, reader = ("fork", "orig") if appender == "forked" else ("orig", "fork")
    c.allocate(writer, append_len)
    assert c.block_tables[reader] == original_ids and c.block_tables[writer] != original_ids
    expected_new = blocks(sequence_len + append_len, bs) - sequence_len // bs
    assert len(c.free_blocks) == 1024 - (blocks(sequence_len, bs) + expected_new)
    assert c.copies == (1 if sequence_len % bs else 0)  # only a partly filled last block is copied
    # The copy holds the shared tokens: both sequences read the same keys for them.
    read = lambda s: c.keys[0][c.slot_table([s])[0, :sequence_len]]  # noqa: E731
    assert torch.equal(read(writer), read(reader))
    c.free(reader)
    c.free(writer)
    assert len(c.free_blocks) == 1024


@pytest.mark.parametrize("sequence_len", [1, 16, 17, 129])
def test_prompts_share_their_full_prefix_blocks(sequence_len):
    """vLLM's test_allocate_prefix_caching: every sequence after the first adds only its own last
    block. Here a prompt shares at most (len - 1) // block_size blocks, because its last token must
    still run to give the first logits (a 16-token prompt shares nothing with 16-token blocks)."""
    bs, tokens = 16, list(range(sequence_len))
    c = cache(block_size=bs)
    shared = (sequence_len - 1) // bs
    for i in range(5):
        cached = c.add(i, tokens)
        assert cached == (shared * bs if i else 0)
        c.allocate(i, sequence_len - cached)
        c.publish(i, tokens)
        assert c.num_blocks - len(c.free_blocks) == shared + (blocks(sequence_len, bs) - shared) * (i + 1)
    assert c.reused_blocks == 4 * shared
    for i in range(5):
        c.free(i)
    assert len(c.free_blocks) == c.num_blocks and not c._prefix_index  # nothing kept after the last user


def test_truncate_frees_whole_blocks():
    c = cache(block_size=4)
    c.add("a")
    c.allocate("a", 11)
    c.truncate("a", 5)
    assert c.lengths["a"] == 5 and len(c.block_tables["a"]) == 2 and len(c.free_blocks) == 1022


# ---------------------------------------------------------------------------------------------
# Paged attention: logits equal to the model's own forward with its contiguous cache
# ---------------------------------------------------------------------------------------------


def test_paged_forward_matches_the_contiguous_cache(target):
    """A ragged batch prefilled and decoded through scattered blocks of 3 slots gives the logits of
    HF's forward with its contiguous DynamicCache (float64, to 1e-12), and exactly (bitwise) those of
    the same engine with one contiguous block per sequence."""
    prompts = [prompt(s, n)[0].tolist() for s, n in ((1, 5), (2, 11), (3, 1))]
    paged = PagedLlama(target, num_blocks=40, block_size=3)
    paged.cache.free_blocks.reverse()  # hand out the highest block ids first: not in order
    contiguous = PagedLlama(target, num_blocks=3, block_size=64)
    seqs = [list(p) for p in prompts]
    new = [list(p) for p in prompts]
    for step in range(6):
        for engine in (paged, contiguous):
            if step == 0:
                for i in range(3):
                    engine.cache.add(i)
        got = paged.forward([0, 1, 2], new, all_logits=True)
        same = contiguous.forward([0, 1, 2], new, all_logits=True)
        assert torch.equal(got, same)
        for i, seq in enumerate(seqs):
            hf = target(torch.tensor([seq])).logits[0, -len(new[i]):]  # float64, not rounded
            torch.testing.assert_close(got[i, : len(new[i])], hf, rtol=0, atol=1e-12)
        tokens = got[torch.arange(3), torch.tensor([len(t) - 1 for t in new])].argmax(-1).tolist()
        for seq, t in zip(seqs, tokens):
            seq.append(t)
        new = [[t] for t in tokens]
    assert len(set(paged.cache.block_tables[1])) == len(paged.cache.block_tables[1]) == 6  # 16 tokens / 3 slots


# ---------------------------------------------------------------------------------------------
# serve: continuous and static batching, each request token-identical to greedy on its own
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trace():
    return make_trace(CharTokenizer(), 10, seed=0, min_new_tokens=2, max_new_tokens=24, rate=200.0,
                      system_prompt="Answer briefly and kindly, please.")


@pytest.fixture(scope="module")
def reference(target, trace):
    return [greedy(target, p, n) for p, n in zip(trace.prompts, trace.max_new_tokens)]


@pytest.mark.parametrize("policy, max_batch, block_size", [
    ("continuous", 1, 16), ("continuous", 3, 1), ("continuous", 8, 16), ("static", 3, 5), ("static", 8, 16)])
def test_serve_is_greedy_per_request(target, trace, reference, policy, max_batch, block_size):
    res = serve(target, trace.prompts, trace.max_new_tokens, max_batch=max_batch, block_size=block_size,
                arrival_times=trace.arrival_times, policy=policy)
    assert len(res) == len(trace)
    for i, ref in enumerate(reference):
        assert torch.equal(res[i], ref), f"request {i}"
    assert res.new_tokens == sum(trace.max_new_tokens)
    assert max(u.sequences for u in res.usage) <= max_batch
    for u in res.usage:  # paging wastes less than one block per sequence (static padding rows included)
        assert u.slots - u.tokens < u.sequences * block_size
    for r in res.requests:
        assert r.arrival <= r.first_token <= r.finish
    if policy == "continuous":
        assert res.slot_steps == res.new_tokens - len(trace)  # every decode row is a token someone asked for
    else:
        assert res.slot_steps > res.new_tokens - len(trace)  # padding rows


def test_static_batches_wait_for_their_longest_member(target):
    """Two batches of 2: static runs max(8, 2) + max(2, 2) - 2 decode steps (the prefill gives the first
    token); continuous refills the short request's slot and needs max(8 - 1, (2 - 1) * 3) steps."""
    prompts = [prompt(s, 6) for s in range(4)]
    lengths = [8, 2, 2, 2]
    static = serve(target, prompts, lengths, max_batch=2, policy="static")
    cont = serve(target, prompts, lengths, max_batch=2)
    assert static.decode_steps == 7 + 1 and static.slot_steps == 2 * 7 + 2 * 1
    assert cont.decode_steps == 7 and cont.slot_steps == sum(lengths) - 4
    assert all(torch.equal(a, b) for a, b in zip(static.sequences, cont.sequences))


def test_a_finished_request_frees_its_slot_before_the_next_step(target):
    """Everything arrives at once: a request that finishes leaves before the next step, so a waiting one
    takes its slot and every step runs full until the queue is empty (lengths 2, 3, 3, 3; batch 2)."""
    prompts = [prompt(s, 5) for s in range(4)]
    res = serve(target, prompts, [2, 3, 3, 3], max_batch=2)
    assert [size for kind, size, _ in res.forwards if kind == "decode"] == [2, 2, 2, 1]
    assert res.decode_steps == 4 and res.slot_steps == sum([2, 3, 3, 3]) - 4


def test_serve_stops_at_eos_and_handles_zero_tokens(target):
    prompts = [prompt(s, 7) for s in range(5)]
    eos = int(greedy(target, prompts[0], 4)[0, -1])  # the 4th token of request 0
    res = serve(target, prompts, [12, 12, 0, 12, 12], max_batch=2, eos_token_id=eos)
    for i, p in enumerate(prompts):
        assert torch.equal(res[i], greedy(target, p, [12, 12, 0, 12, 12][i], eos_token_id=eos))
    assert res.requests[0].n_new == 4 and res.requests[2].n_new == 0


def test_shared_prefix_saves_blocks_without_changing_tokens(target, trace, reference):
    shared = serve(target, trace.prompts, trace.max_new_tokens, max_batch=8, block_size=4)
    alone = serve(target, trace.prompts, trace.max_new_tokens, max_batch=8, block_size=4, share_prefix=False)
    assert all(torch.equal(a, r) for a, r in zip(shared.sequences, reference))
    assert all(torch.equal(a, r) for a, r in zip(alone.sequences, reference))
    assert shared.reused_blocks >= 7 * (trace.prefix_len // 4) and alone.reused_blocks == 0
    assert max(u.blocks for u in shared.usage) < max(u.blocks for u in alone.usage)


def test_simulate_replays_the_schedule(target, trace):
    """With a cost model in place of the model, the same steps, padding rows and blocks as serve (all
    requests waiting at 0: with arrivals spread out, which step admits whom depends on the clock)."""
    for policy, max_batch in (("continuous", 3), ("static", 4)):
        real = serve(target, trace.prompts, trace.max_new_tokens, max_batch=max_batch, block_size=4, policy=policy)
        costs = StepCosts(1e-3, 1e-4, 2e-3, 1e-5)
        sim = simulate(trace.prompts, trace.max_new_tokens, costs=costs, max_batch=max_batch, block_size=4,
                       policy=policy)
        assert (sim.decode_steps, sim.slot_steps, sim.usage) == (real.decode_steps, real.slot_steps, real.usage)
        assert [r.n_new for r in sim.requests] == [r.n_new for r in real.requests]
        assert all(sec == costs.seconds(k, n) for k, n, sec in sim.forwards)
    assert sim.reserved_slots(100) == tuple(u.sequences * 100 for u in sim.usage)
    # A cost model fitted to exact lines gives them back.
    fitted = StepCosts.fit(sim)
    assert fitted.decode_per_row == pytest.approx(1e-4) and fitted.prefill_base == pytest.approx(2e-3)


def test_fit_goes_through_the_median_of_each_size():
    """One slow forward (the first at a new shape) does not tilt the line: each size counts once, at its
    median time; with two sizes the line passes exactly through the two medians."""
    prompts = [torch.tensor([[1, 5, 7, 9, 11]]), torch.tensor([[1, 5, 7, 9, 11, 13, 15]])]
    costs = StepCosts(0.05, 0.01, 0.02, 0.002)
    res = simulate(prompts, 6, costs=costs, max_batch=2)
    sizes = sorted({n for k, n, _ in res.forwards if k == "decode"})
    assert sizes == [2] and sum(k == "decode" for k, _, _ in res.forwards) == 5
    one = simulate(prompts[:1], 6, costs=costs, max_batch=1)
    forwards = list(one.forwards) + list(res.forwards)
    first_two_row = next(i for i, (k, n, _) in enumerate(forwards) if k == "decode" and n == 2)
    forwards[first_two_row] = ("decode", 2, 10.0)          # an outlier 140x the others
    slow = dataclasses.replace(res, forwards=tuple(forwards))
    fitted = StepCosts.fit(slow)
    assert fitted.decode_base == pytest.approx(0.05) and fitted.decode_per_row == pytest.approx(0.01)
    # (Least squares over the raw points would put the 2-row step at about 2 s and the slope at about 2 s per row.)
    assert fitted.seconds("decode", 2) / fitted.seconds("decode", 1) == pytest.approx(0.07 / 0.06)


def test_arrivals_are_respected(target):
    prompts = [prompt(s, 5) for s in range(3)]
    res = serve(target, prompts, 3, max_batch=4, arrival_times=[0.0, 100.0, 100.0])
    first, second, third = res.requests
    assert first.finish < 100.0 <= second.first_token and third.first_token >= 100.0
    assert res.seconds >= 100.0


# ---------------------------------------------------------------------------------------------
# Speculative decoding: greedy identity with decoding.greedy and HF assisted generation
# ---------------------------------------------------------------------------------------------


def test_prompt_lookup_candidates_match_hf():
    """The same candidates as transformers' PromptLookupCandidateGenerator on random repetitive sequences."""
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        seq = torch.randint(3, 9, (1, int(torch.randint(2, 30, (1,), generator=g))), generator=g)
        k, ngram = trial % 5 + 1, trial % 3 + 1
        eos = 5 if trial % 4 == 0 else None
        hf = PromptLookupCandidateGenerator(eos_token_id=None if eos is None else torch.tensor([eos]),
                                            num_output_tokens=k, max_matching_ngram_size=ngram, max_length=10**6)
        out, _ = hf.get_candidates(seq)
        expected = out[0, seq.shape[1]:].tolist()
        assert _lookup(seq[0].tolist(), k, ngram, eos) == expected


@pytest.mark.parametrize("gamma", [1, 3, 6])
def test_speculative_greedy_is_greedy_and_hf(target, noisy_draft, gamma):
    """HF tests/generation/test_utils.py: test_assisted_decoding_matches_greedy_search and
    test_prompt_lookup_decoding_matches_greedy_search, on a draft that is right only part of the time."""
    for seed in range(3):
        ids = prompt(seed, 10, repeat=6)
        ref = greedy(target, ids, 24)
        for draft in ("prompt_lookup", noisy_draft):
            res = speculative_generate(target, ids, 24, draft=draft, num_draft_tokens=gamma, return_stats=True)
            assert torch.equal(res.sequences, ref)
            if isinstance(draft, str):
                hf = hf_generate(target, ids, 24, None, prompt_lookup_num_tokens=gamma, do_sample=False)
            else:
                hf = hf_generate(target, ids, 24, None, assistant_model=noisy_draft, num_assistant_tokens=gamma,
                                 num_assistant_tokens_schedule="constant", do_sample=False)
            assert torch.equal(hf, ref)
            assert res.rounds + res.accepted == 23  # each round: its accepted drafts + one token of the target
    # The noisy draft is right part of the time: neither all nor none.
    stats = speculative_generate(target, prompt(0, 10), 24, draft=noisy_draft, num_draft_tokens=gamma, return_stats=True)
    assert 0 < stats.alpha < 1 and 0 < stats.draft_acceptance_rate <= stats.alpha


def test_speculative_alpha_is_the_per_position_rate_of_the_formula():
    """A target and a draft whose next-token distributions p and q are the same at every position (all tokens
    embed alike and the blocks add nothing): each draft token is accepted independently with probability
    Σ min(p, q), the assumption of (1 - α^(γ+1)) / (1 - α) (Leviathan et al. 2023, eq. 1). ``alpha`` must
    estimate it and the tokens per round must match the formula at it, within sampling noise; vLLM's draft
    acceptance rate (accepted / drafted) is biased low at γ = 4 (untested tokens count)."""
    target = llama(0, tie_word_embeddings=False)
    with torch.no_grad():
        target.model.embed_tokens.weight[:] = target.model.embed_tokens.weight[3]
        for layer in target.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    draft = copy.deepcopy(target)
    with torch.no_grad():
        draft.lm_head.weight.add_(0.06 * torch.randn(draft.lm_head.weight.shape, generator=torch.Generator().manual_seed(1),
                                                     dtype=torch.float64))
    ids = torch.tensor([[1, 5, 7]])
    p, q = (torch.softmax(m(ids).logits[0].detach(), -1) for m in (target, draft))
    assert torch.allclose(p[0], p[-1], atol=0, rtol=0) and torch.allclose(q[0], q[-1], atol=0, rtol=0)
    alpha = torch.minimum(p[0], q[0]).sum().item()   # 0.81
    gamma = 4
    res = speculative_generate(target, ids, 240, draft=draft, num_draft_tokens=gamma, do_sample=True,
                               generator=torch.Generator().manual_seed(gamma), return_stats=True)
    tested = res.accepted + res.rejections
    assert abs(res.alpha - alpha) < 4 * (alpha * (1 - alpha) / tested) ** 0.5
    yields = torch.tensor([a + 1 for a in res.accepted_per_round], dtype=torch.float64)
    assert abs(res.tokens_per_round - expected_tokens_per_forward(res.alpha, gamma)) < 4 * yields.std().item() / len(yields) ** 0.5
    assert res.draft_acceptance_rate < res.alpha - 0.1
    assert res.draft_acceptance_rate == res.accepted / res.drafted


@pytest.mark.parametrize("num_layers", [1, 3])
def test_early_exit_draft_is_greedy_and_hf(num_layers):
    """The target's first layers as the draft: the same tokens as greedy and as HF's
    generate(assistant_early_exit=...) (tests/generation/test_utils.py runs it on LayerSkip models)."""
    deep = llama(0, num_hidden_layers=4)
    draft = early_exit_draft(deep, num_layers)
    assert sum(p.numel() for p in draft.parameters()) == sum(p.numel() for p in deep.parameters())  # shared, not copied
    for seed in range(2):
        ids = prompt(seed, 10)
        ref = greedy(deep, ids, 16)
        assert torch.equal(speculative_generate(deep, ids, 16, draft=draft, num_draft_tokens=3), ref)
        assert torch.equal(hf_generate(deep, ids, 16, None, assistant_early_exit=num_layers, do_sample=False), ref)
    assert deep.config.num_hidden_layers == 4  # restored after every draft call


def test_speculative_greedy_stops_at_eos(target, noisy_draft):
    ids = prompt(4, 10, repeat=6)
    eos = int(greedy(target, ids, 6)[0, -1])
    for draft in ("prompt_lookup", noisy_draft):
        out = speculative_generate(target, ids, 20, draft=draft, num_draft_tokens=4, eos_token_id=eos)
        assert torch.equal(out, greedy(target, ids, 20, eos_token_id=eos))
    assert torch.equal(speculative_generate(target, ids, 0, draft="prompt_lookup"), ids)


# ---------------------------------------------------------------------------------------------
# Speculative sampling: the rule against HF, the exact distribution, sampling
# ---------------------------------------------------------------------------------------------


def test_rule_on_a_worked_example():
    p, q = torch.tensor([[0.6, 0.3, 0.1]]), torch.tensor([[0.2, 0.3, 0.5]])
    acc = torch.stack([acceptance_probabilities(p, q, torch.tensor([x])) for x in range(3)])[:, 0]
    torch.testing.assert_close(acc, torch.tensor([1.0, 1.0, 0.2]))
    torch.testing.assert_close(residual_distribution(p[0], q[0]), torch.tensor([1.0, 0.0, 0.0]))
    # q x accept + P(reject) x residual = p
    torch.testing.assert_close(q[0] * acc + (1 - (q[0] * acc).sum()) * residual_distribution(p[0], q[0]), p[0])
    assert torch.equal(residual_distribution(p[0], p[0]), p[0])  # nothing to correct: no 0 / 0


def test_verify_draws_as_hf_speculative_sampling():
    """Same generator state, same tokens as transformers' _speculative_sampling (Algorithm 1)."""
    g = torch.Generator().manual_seed(1)
    for trial in range(200):
        gamma, vocab = trial % 5 + 1, 6
        p_logits = 2 * torch.randn(1, gamma + 1, vocab, generator=g)
        q_logits = p_logits[:, :gamma] + torch.randn(1, gamma, vocab, generator=g)
        tokens = torch.multinomial(q_logits[0].softmax(-1), 1, generator=g)[:, 0]
        torch.manual_seed(trial)
        hf_tokens, hf_n = _speculative_sampling(torch.cat([torch.tensor([[4, 4]]), tokens[None]], 1), q_logits, gamma,
                                                p_logits)
        torch.manual_seed(trial)
        n, nxt = verify(p_logits[0].softmax(-1), q_logits[0].softmax(-1), tokens)
        assert (n, tokens[:n].tolist() + [nxt]) == (int(hf_n), hf_tokens[0].tolist())


@pytest.fixture(scope="module")
def small_vocab():
    """Target and draft over 4 tokens (id 1 is the prompt), at temperature 1."""
    t, d = llama(0, vocab_size=4), llama(1, vocab_size=4)
    return t, d, next_token_distribution(t), next_token_distribution(d)


@pytest.mark.parametrize("gamma", [1, 2, 3])
def test_speculative_distribution_is_the_targets_exactly(small_vocab, gamma):
    _, _, P, Q = small_vocab
    exact = autoregressive_distribution(P, (1,), 3)
    spec = speculative_distribution(P, Q, (1,), 3, num_draft_tokens=gamma)
    assert set(spec) == set(exact) and len(exact) == 4**3
    assert max(abs(spec[k] - exact[k]) for k in exact) < 1e-15
    # Negative control: accepting every draft token gives the draft's distribution, far from the target's.
    draft_dist = autoregressive_distribution(Q, (1,), 3)
    assert max(abs(draft_dist[k] - exact[k]) for k in exact) > 0.05


def test_speculative_sampling_frequencies_match_the_target(small_vocab):
    """600 runs of speculative_generate with a model draft and with prompt lookup: the frequencies of the
    first three tokens agree with the exact target distribution (chi-square, cells with fewer than 5
    expected merged, p > 0.001). The first token comes from the prefill; the second goes through
    accept/reject (one draft token fits before the limit), the third through the residual or the bonus."""
    from scipy.stats import chisquare  # why: the test's statistics, not the library's

    t, d, P, _ = small_vocab
    exact = autoregressive_distribution(P, (1,), 3)
    keys = sorted(exact, key=exact.get, reverse=True)
    n_runs = 600
    big = [k for k in keys if n_runs * exact[k] >= 5]
    for draft in (d, "prompt_lookup"):
        g = torch.Generator().manual_seed(0)
        counts = dict.fromkeys(keys, 0)
        for _ in range(n_runs):
            out = speculative_generate(t, torch.tensor([[1]]), 3, draft=draft, num_draft_tokens=2, do_sample=True,
                                       generator=g)
            counts[tuple(out[0, 1:].tolist())] += 1
        observed = [counts[k] for k in big] + [n_runs - sum(counts[k] for k in big)]
        expected = [n_runs * exact[k] for k in big] + [n_runs * (1 - sum(exact[k] for k in big))]
        assert chisquare(observed, expected).pvalue > 1e-3


def test_expected_tokens_per_forward():
    assert expected_tokens_per_forward(0.0, 4) == 1.0
    assert expected_tokens_per_forward(1.0, 4) == 5.0
    assert expected_tokens_per_forward(0.5, 2) == pytest.approx(1 + 0.5 + 0.25)


# ---------------------------------------------------------------------------------------------
# The default model (SmolLM2-135M-Instruct, float32)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_model_serve_and_prompt_lookup(default_lm):
    model, tokenizer = default_lm
    trace = make_trace(tokenizer, 4, seed=1, max_new_tokens=12)
    res = serve(model, trace.prompts, trace.max_new_tokens, max_batch=4, block_size=16)
    for p, n, out in zip(trace.prompts, trace.max_new_tokens, res.sequences):
        assert torch.equal(out, greedy(model, p, n))
    text = ("Extract the e-mail address from this message and repeat the sentence it is in.\n\nMessage: Hello team, "
            "the report is ready. Please send questions to maria.lopez@example.org before Friday. Thanks!\n\nAnswer:")
    ids = tokenizer(text, return_tensors="pt").input_ids
    res = speculative_generate(model, ids, 24, draft="prompt_lookup", num_draft_tokens=4, return_stats=True)
    assert torch.equal(res.sequences, greedy(model, ids, 24))
    assert res.accepted > 0

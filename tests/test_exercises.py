"""llmlab.exercises: every exercise accepts its solution, gives a typical wrong answer its hint,
raises ValueError only for an unknown id or a wrong kind of answer, and the ids used in the
notebooks are exactly the registered ones."""

import json
import math
import re
from pathlib import Path

import pytest
import torch

from llmlab.exercises import EXERCISES, check, exercise_ids, grade

ROOT = Path(__file__).resolve().parents[1]
CHECK_CALL = re.compile(r"""check\(\s*["'](\d\d\.\d+)["']""")


# ---------------------------------------------------------------- right answers (the solutions' core)

def bpb(ppl, n_tokens, n_bytes):
    return n_tokens * math.log2(ppl) / n_bytes


def banned(token_ids, n):
    prefix = token_ids[len(token_ids) - (n - 1):] if n > 1 else []
    return {token_ids[i + n - 1] for i in range(len(token_ids) - n + 1) if token_ids[i:i + n - 1] == prefix}


def linear_decay(step, *, base_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    return base_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def restart_step(i, t_0, t_mult):
    return sum(t_0 * t_mult ** j for j in range(i))


def accumulate(model, loss_fn, x, y, steps):
    for xb, yb in zip(x.chunk(steps), y.chunk(steps)):
        (loss_fn(model(xb), yb) / steps).backward()


def merge(W0, A, B, alpha, r):
    return W0 + (alpha / r) * (B @ A)


def cut(word, vocab):
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:
            return ["[UNK]"]
    return pieces


def prefix_mask(n, n_prefix):
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    return (j < n_prefix) | (j <= i)


def rouge2(reference, candidate):
    from collections import Counter

    from llmlab.anatomy import rouge_tokens

    def bigrams(text):
        tokens = rouge_tokens(text)
        return Counter(zip(tokens, tokens[1:]))
    ref, cand = bigrams(reference), bigrams(candidate)
    overlap = sum((ref & cand).values())
    p, r = overlap / max(sum(cand.values()), 1), overlap / max(sum(ref.values()), 1)
    return p, r, (2 * p * r / (p + r) if overlap else 0.0)


def dpo(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta):
    return torch.nn.functional.softplus(-beta * ((pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)))


def min_p_filter(logits, min_p):
    probs = logits.softmax(-1)
    return logits.masked_fill(probs < min_p * probs.max(), float("-inf"))


def merge_states(m_a, l_a, m_b, l_b):
    m = torch.maximum(m_a, m_b)
    return m, l_a * torch.exp(m_a - m) + l_b * torch.exp(m_b - m)


def right_answer(exercise_id):
    """The solution of each exercise, computed with llmlab (as the solution notebooks do)."""
    from llmlab import svd
    from llmlab.accumulation import make_token_batch, micro_batch_token_counts
    from llmlab.checkpointing import theory_forward_calls, theory_saved_activations
    from llmlab.distributed import sharded_ledger, step_estimate
    from llmlab.perplexity import forward_tokens
    from llmlab.schedules import torch_trace
    from llmlab.tokenization import load_corpus, load_parallel, train_bpe

    if exercise_id == "01.1":
        return forward_tokens(1000, max_length=256, stride=64)
    if exercise_id == "02.2":
        kv_per_token = 2 * 30 * 3 * 64 * 2
        weights = 2 * (49152 * 576 + 30 * (576 * 576 * 2 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576) + 576)
        return math.ceil(weights / kv_per_token)
    if exercise_id == "03.2":
        return torch_trace(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=1000), 10, base_lr=0.1)[-1]
    if exercise_id == "04.2":
        counts = micro_batch_token_counts(make_token_batch(32, seed=0)[1], 4)
        return sum(counts) / (4 * min(counts))
    if exercise_id == "05.1":
        return {s: (theory_saved_activations(100, "sqrt", s), theory_forward_calls(100, "sqrt", s)) for s in (5, 10, 20)}
    if exercise_id == "05.6":
        fits = [s for s in range(1, 101) if theory_saved_activations(100, "sqrt", s) <= 25]
        s = min(fits, key=lambda s: theory_forward_calls(100, "sqrt", s))
        return (s, theory_forward_calls(100, "sqrt", s))
    if exercise_id == "06.1":
        camera = svd.demo_images(256)["camera"]
        return tuple(svd.k_for_error(svd.factorize(h), 0.1) for h in (camera[:, :128], camera[:, 128:]))
    if exercise_id == "06.2":
        return {a: svd.k_for_error(svd.factorize(svd.checkerboard(256, 8, angle=a)), 0.1) for a in (0, 5, 15, 45)}
    if exercise_id == "07.2":
        d, kv, ff = 576, 192, 1536
        return 30 * 8 * ((d + d) * 2 + (d + kv) * 2 + (d + ff) * 3)
    if exercise_id == "08.1":
        return {"adamw": 16 * 7, "sgd_momentum": 12 * 7}
    if exercise_id == "08.2":
        return 1.0 + 2.0 ** -10
    if exercise_id == "10.1":
        french = load_parallel()["French"]
        return len(train_bpe(load_corpus() + [french] * 20, 256 + 500).encode(french))
    if exercise_id == "12.1":
        one = step_estimate(70e9, 64, tokens_per_rank=1)
        return 9 * one.comm_seconds / one.compute_seconds
    if exercise_id == "12.2":
        return {key: next(n for n in range(1, 1000)
                          if sharded_ledger(p, n, stage, precision="mixed").total <= 60e9)
                for key, (p, stage) in {"70B zero3": (70 * 10**9, "zero3"), "13B zero2": (13 * 10**9, "zero2")}.items()}
    if exercise_id == "11.2":
        z, p, n = 1.959963984540054, 20 / 32, 32
        centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return (centre - half, centre + half)
    if exercise_id == "11.4":
        w = 0.2 * math.exp(1 / 0.5)
        return w / (w + 0.8)
    if exercise_id == "12.6":
        n, losses = (120, 40, 200, 80), (2.0, 3.0, 1.5, 2.5)
        return {"loss": sum(a * b for a, b in zip(n, losses)) / sum(n), "rank1_factor": len(n) / sum(n)}
    if exercise_id == "14.1":
        from llmlab.decoding import kv_cache_bytes
        from llmlab.exercises.base import smollm2_skeleton
        return 2_000_000_000 // kv_cache_bytes(smollm2_skeleton().config, 1, batch=16, dtype="bf16")
    if exercise_id == "16.1":
        return next(m for m in range(1, 10**4) if 7 / (m + 7) < 0.05)
    if exercise_id == "16.2":
        return 2 * (2 * 3 / 4) * (8 * 2048 * 4096 * 2)
    if exercise_id == "16.3":
        from llmlab.distributed import MODEL_PRESETS, ClusterConfig, plan_parallelism
        return next(g for g in (8, 16, 32, 64, 128, 256, 512) if any(
            e.fits for e in plan_parallelism(MODEL_PRESETS["GPT 1T (Megatron 2021)"], ClusterConfig("h100", gpus=g),
                                             micro_batches=(1, 2))))
    if exercise_id == "09.2":
        d, L, H, H_kv, ff, V = 8192, 80, 64, 8, 28672, 32000
        block = d * d + 2 * d * H_kv * (d // H) + d * d + 3 * d * ff + 2 * d
        return {"total": 2 * V * d + L * block + d, "gqa_saving": 2 * L * d * (H - H_kv) * (d // H)}
    if exercise_id == "13.2":
        return 100e9 / (7e9 * 4.5 / 8)
    if exercise_id == "13.1":
        from llmlab.quantization import quantize_gguf
        return lambda x: quantize_gguf(x, "Q4_0")
    if exercise_id == "15.1":
        return (1 - 0.8 ** 5) / (1 - 0.8)
    if exercise_id == "15.2":
        lengths = (37, 16, 90, 5)
        blocks = sum(math.ceil(n / 16) for n in lengths)
        return {"blocks": blocks, "paged_waste": 16 * blocks - sum(lengths), "reserved_waste": 4 * 512 - sum(lengths)}
    if exercise_id == "15.3":
        return max(range(1, 100), key=lambda g: (1 - 0.7 ** (g + 1)) / (0.3 * (1 + 0.1 * g)))
    return {"01.2": bpb, "02.1": banned, "02.4": min_p_filter, "03.1": linear_decay, "03.3": restart_step, "04.1": accumulate,
            "07.1": merge, "09.1": prefix_mask, "14.2": merge_states, "09.3": rouge2, "10.2": cut, "11.1": dpo}[exercise_id]


# ---------------------------------------------------------------- typical wrong answers and their hints

def q4_0_round_to_even(x):
    """Q4_0 with torch.round (halves to even) instead of ggml's trunc(v + 8.5): wrong only on exact halves."""
    import numpy as np
    d = x[x.abs().argmax()] / -8
    inv = 0.0 if d == 0 else 1 / d
    q = (torch.round(x * inv) + 8).clamp(0, 15).to(torch.uint8)
    return np.concatenate([d.reshape(1).half().numpy().view(np.uint8), (q[:16] | (q[16:] << 4)).numpy()])


def wrong_answers():
    """exercise id -> (a typical wrong answer, a phrase its hint must contain)."""
    def banned_last_n(token_ids, n):
        return banned(token_ids, n + 1)

    def decay_negative(step, *, base_lr, warmup_steps, total_steps):
        if step < warmup_steps:
            return base_lr * step / warmup_steps
        return base_lr * (total_steps - step) / (total_steps - warmup_steps)

    def accumulate_unscaled(model, loss_fn, x, y, steps):
        for xb, yb in zip(x.chunk(steps), y.chunk(steps)):
            loss_fn(model(xb), yb).backward()

    def shortest_match(word, vocab):
        pieces, start = [], 0
        while start < len(word):
            for end in range(start + 1, len(word) + 1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    pieces.append(piece)
                    start = end
                    break
            else:
                return ["[UNK]"]
        return pieces

    return {
        "01.1": (1000, "scored"),
        "01.2": (lambda ppl, n_tokens, n_bytes: n_tokens * math.log(ppl) / n_bytes, "nats per byte"),
        "02.1": (banned_last_n, "last n − 1"),
        "02.2": (lambda: right_answer("02.2") * 3 // 9, "KV"),
        "02.4": (lambda logits, min_p: logits.masked_fill(logits.softmax(-1) < min_p, float("-inf")), "top"),
        "03.1": (decay_negative, "never negative"),
        "03.2": (0.1 * (1 + math.cos(math.pi * 900 / 1000)) / 2, "should"),
        "03.3": (lambda i, t_0, t_mult: t_0 * t_mult ** (i - 1), "length"),
        "04.1": (accumulate_unscaled, "divided by the number of micro-batches"),
        "04.2": (lambda: 1 / right_answer("04.2"), "inverted"),
        "05.1": (lambda: {s: (m, 200) for s, (m, _) in right_answer("05.1").items()}, "not recomputed"),
        "05.6": ((10, 190), "longest last segment"),
        "06.1": (lambda: tuple(reversed(right_answer("06.1"))), "swapped"),
        "06.2": (lambda: {**right_answer("06.2"), 0: 256}, "rank 2"),
        "07.1": (lambda W0, A, B, alpha, r: W0 + B @ A, "α/r"),
        "07.2": (lambda: right_answer("07.2") // 30, "one block"),
        "08.1": (lambda: {"adamw": 12 * 7, "sgd_momentum": 8 * 7}, "master"),
        "08.2": (1.0, "even"),
        "09.1": (lambda n, n_prefix: prefix_mask(n, n_prefix).T, "transposed"),
        "09.2": (lambda: {**right_answer("09.2"), "gqa_saving": right_answer("09.2")["gqa_saving"] // 2}, "both"),
        "09.3": (lambda reference, candidate: tuple(rouge2(reference, candidate)[i] for i in (1, 0, 2)), "swapped"),
        "11.1": (lambda pc, pr, rc, rr, beta: -torch.log(torch.sigmoid(beta * ((pc - rc) - (pr - rr)))), "softplus"),
        "10.1": (lambda: len(__import__("llmlab.tokenization", fromlist=["x"]).train_bpe(
            __import__("llmlab.tokenization", fromlist=["x"]).load_corpus(), 256 + 500).encode(
            __import__("llmlab.tokenization", fromlist=["x"]).load_parallel()["French"])), "without"),
        "10.2": (shortest_match, "longest"),
        "12.1": (lambda: right_answer("12.1") / 9, "equals"),
        "12.2": (lambda: {**right_answer("12.2"), "13B zero2": right_answer("12.2")["13B zero2"] - 1}, "one GPU short"),
        "11.2": ((20 / 32 - 1.96 * math.sqrt(20 / 32 * 12 / 32 / 32), 20 / 32 + 1.96 * math.sqrt(20 / 32 * 12 / 32 / 32)),
                 "textbook"),
        "11.4": (0.2 * math.exp(1.0 * 0.5) / (0.2 * math.exp(1.0 * 0.5) + 0.8), "divides"),
        "12.6": ({"loss": 2.25, "rank1_factor": 4 / 440}, "mean of the ranks' means"),
        "13.1": (q4_0_round_to_even, "halves"),
        "13.2": (100e9 / (7e9 * 4 / 8), "scales"),
        "14.1": (lambda: right_answer("14.1") // 3, "9 K/V heads"),
        "14.2": (lambda m_a, l_a, m_b, l_b: (torch.maximum(m_a, m_b), l_a + l_b), "rescale"),
        "15.1": ((1 - 0.8 ** 4) / (1 - 0.8), "γ + 1"),
        "15.2": (lambda: {**right_answer("15.2"), "blocks": 8}, "round up"),
        "15.3": (32, "1 + γc"),
        "16.1": (141, "approximation"),
        "16.2": (lambda: right_answer("16.2") / 2, "one all-reduce"),
        "16.3": (lambda: right_answer("16.3") // 2, "one halving too few"),
    }


def _materialize(exercise_id, value):
    """Wrong answers that must be computed are zero-argument lambdas; functions answers take arguments."""
    if callable(value) and value.__code__.co_argcount == 0:
        return value()
    return value


@pytest.mark.parametrize("exercise_id", exercise_ids())
def test_right_answer_passes(exercise_id, capsys):
    assert check(exercise_id, right_answer(exercise_id)) is True
    assert capsys.readouterr().out.startswith(f"✓ {exercise_id}")


@pytest.mark.parametrize("exercise_id", exercise_ids())
def test_typical_wrong_answer_gets_its_hint(exercise_id, capsys):
    answer, phrase = wrong_answers()[exercise_id]
    answer = _materialize(exercise_id, answer)
    assert check(exercise_id, answer) is False
    out = capsys.readouterr().out
    title = EXERCISES[exercise_id].title
    assert out.startswith(f"✗ {exercise_id} {title}: "), out
    assert phrase in out.split(f"{title}: ", 1)[1], out


def test_every_exercise_has_a_wrong_answer_case():
    assert set(wrong_answers()) == set(EXERCISES)


@pytest.mark.parametrize("exercise_id", exercise_ids())
def test_none_means_no_answer_yet(exercise_id, capsys):
    assert check(exercise_id, None) is False
    assert "no answer yet" in capsys.readouterr().out


def test_a_crashing_function_is_a_hint_not_an_exception(capsys):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("oops")
    assert check("03.1", broken) is False
    assert "ZeroDivisionError" in capsys.readouterr().out


@pytest.mark.parametrize("exercise_id", ["01.1", "02.2", "04.2", "07.2", "10.1", "12.1", "13.2", "14.1"])
def test_the_hint_never_prints_the_solution(exercise_id, capsys):
    truth = right_answer(exercise_id)
    for wrong in (truth * 1.5, truth / 1.5, truth * 1.1):
        wrong = int(wrong) if isinstance(truth, int) else wrong
        assert check(exercise_id, wrong) is False
        out = capsys.readouterr().out.replace(",", "")
        shown = {f"{truth:.3g}", f"{truth:.2f}"} | ({f"{truth:.0f}"} if truth >= 100 else set())
        assert not any(s in out for s in shown), out


@pytest.mark.parametrize("answer, phrase", [
    (13 * 256, "number of windows is right"),          # 13 windows, all counted full length
    (math.ceil(1000 / 64) * 256, "too many windows"),  # a window every 64 tokens to the end of the text
])
def test_01_1_near_misses_get_their_own_hint(answer, phrase, capsys):
    from llmlab.perplexity import sliding_windows
    assert len(sliding_windows(1000, max_length=256, stride=64)) == 13
    assert check("01.1", answer) is False
    assert phrase in capsys.readouterr().out


def test_15_3_reason_is_the_marginal_yield_against_the_speed_up_reached(capsys):
    """The best γ is not where a draft token stops paying for itself (α^(γ+1) < c, γ = 6 here) but where its yield
    per unit cost falls below the speed-up already reached: S(γ+1) > S(γ) ⇔ α^(γ+1)/c > S(γ)."""
    alpha, c = 0.7, 0.1
    s = {g: (1 - alpha ** (g + 1)) / ((1 - alpha) * (1 + g * c)) for g in range(1, 40)}
    assert all((s[g + 1] > s[g]) == (alpha ** (g + 1) / c > s[g]) for g in range(1, 39))
    best = max(s, key=s.get)
    assert best == 4 and alpha ** (best + 1) > c              # the next token would pay for itself, yet S falls
    assert check("15.3", best) is True
    out = capsys.readouterr().out
    assert f"{alpha ** (best + 1) / c:.2f} tokens per unit cost" in out and f"{s[best]:.2f} already reached" in out
    assert "costs more than" not in out


@pytest.mark.parametrize("bad_id", ["99.1", "6.2", 6.2, None, "06.9"])
def test_unknown_id_raises(bad_id):
    with pytest.raises(ValueError, match="exercise_id .* is not a known exercise id"):
        check(bad_id, 1)


@pytest.mark.parametrize("exercise_id, answer, kind", [
    ("01.1", "1000", "int"), ("01.1", 3.5, "int"), ("01.1", True, "int"),
    ("01.2", 1.5, "function"), ("06.1", 12, "pair"), ("06.2", {0: 1}, "dict"),
    ("08.1", {"adamw": 1}, "dict"), ("05.1", {5: (1, 2), 10: (1, 2), 20: (1, "x")}, "dict"),
])
def test_wrong_kind_raises_and_says_what_is_expected(exercise_id, answer, kind):
    with pytest.raises(ValueError, match=f"expects .*{kind}"):
        grade(exercise_id, answer)


def _check_ids(folder):
    ids = {}
    for path in sorted((ROOT / folder).glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                for found in CHECK_CALL.findall("".join(cell["source"])):
                    ids.setdefault(found, []).append(path.name)
    return ids


def test_notebook_ids_and_registry_agree():
    used = _check_ids("notebooks")
    assert set(used) == set(EXERCISES), (sorted(set(used) - set(EXERCISES)), sorted(set(EXERCISES) - set(used)))
    for exercise_id, names in used.items():
        assert len(names) == 1 and names[0].startswith(exercise_id.split(".")[0] + "_"), (exercise_id, names)


def test_every_exercise_has_a_solution():
    used = _check_ids("solutions")
    assert set(used) == set(EXERCISES)


def test_notebook_scaffolds_leave_the_answer_to_the_learner():
    """A scaffold in notebooks/ starts from `answer = None` (nbval runs it: check says "no answer yet")."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and CHECK_CALL.search(source):
                assert "answer = None" in source and source.count("check(") == 1, (path.name, source)


def test_solutions_assert_their_check():
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and CHECK_CALL.search(source):
                assert re.search(r"assert check\(", source), (path.name, source)

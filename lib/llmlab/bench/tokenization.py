"""Bench section ``tokenization`` (topic 10): BPE training and encoding against ``tokenizers``, and
the incremental pair counts against recounting every pair after each merge."""

from __future__ import annotations

import statistics
from collections import Counter

import torch

from ..timing import Stopwatch, interleaved
from ..tokenization import (ALPHABET, BPETokenizer, load_corpus, load_samples, pretokenize, reference_bpe,
                            train_bpe)
from ..widgets import bpe_merges_widget
from .report import Row, section, timed_row

__all__ = ["bench_tokenization", "naive_bpe_merges"]


def naive_bpe_merges(texts: list[str], n_merges: int) -> list[tuple[str, str]]:
    """The textbook trainer, as a contender: after every merge, count all pairs of all pieces again.

    Same rule and tie-break as :func:`llmlab.tokenization.train_bpe` (most frequent pair, then the
    smaller pair of ids), so the same merges: only the bookkeeping differs.
    """
    words = Counter(p for t in texts for p in pretokenize(t))
    ids = {c: i for i, c in enumerate(ALPHABET)}  # the byte characters, in code-point order
    seg = {w: list(w) for w in words}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, n in words.items():
            for pair in zip(seg[w], seg[w][1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], ids[p[0]], ids[p[1]]))
        ids.setdefault(best[0] + best[1], len(ids))
        merges.append(best)
        for s in seg.values():
            i = 0
            while i < len(s) - 1:
                if (s[i], s[i + 1]) == best:
                    s[i:i + 2] = [best[0] + best[1]]
                i += 1
    return merges


@section("tokenization")
def bench_tokenization(device: torch.device, size: str = "full") -> list[Row]:
    """Topic 10 on our 27 kB corpus: train (vs tokenizers, vs naive recounting), encode, widget step."""
    corpus = load_corpus()
    n_merges, n_naive, rounds = (2000, 200, 5) if size == "full" else (100, 20, 2)
    t = interleaved({"ours": lambda: train_bpe(corpus, 256 + n_merges),
                     "tokenizers": lambda: reference_bpe(corpus, 256 + n_merges)}, rounds=rounds)
    rows = [timed_row("tokenization", f"train_bpe, {n_merges} merges on the 27 kB corpus", t["ours"], t["tokenizers"],
                      peer_name="tokenizers BpeTrainer (Rust)", note="pure Python vs Rust; the same merges (tests)")]

    t = interleaved({"ours": lambda: train_bpe(corpus, 256 + n_naive),
                     "naive": lambda: naive_bpe_merges(corpus, n_naive)}, rounds=max(2, rounds - 2))
    rows.append(timed_row("tokenization", f"train_bpe, {n_naive} merges: incremental pair counts", t["ours"],
                          t["naive"], peer_name="recount every pair after each merge",
                          note="same merges; the gap grows with the number of merges"))

    tok = train_bpe(corpus, 256 + n_merges)
    twin = tok.to_tokenizers()
    text = "\n\n".join(corpus)
    # A fresh BPETokenizer per run: its per-piece cache would otherwise make every run after the first free.
    t = interleaved({"ours": lambda: BPETokenizer(tok.merges, tok.vocab).encode(text),
                     "tokenizers": lambda: twin.encode(text)}, rounds=rounds)
    n_bytes = len(text.encode("utf-8"))
    rows.append(timed_row("tokenization", f"encode the corpus ({n_bytes // 1000} kB), cold cache", t["ours"],
                          t["tokenizers"], per_second=n_bytes / 1e6, unit="MB/s", peer_name="tokenizers (Rust)"))

    widget = bpe_merges_widget(tok, load_samples()["English prose"], curve_points=11 if size == "tiny" else 41)
    steps = []
    for k in [n_merges // 4, n_merges // 2, n_merges, 0, n_merges // 3]:
        with Stopwatch(None) as watch:
            widget.merges.value = k
        steps.append(watch.seconds)
    rows.append(Row("tokenization", "widget slider step (truncate, encode, redraw)", statistics.median(steps) * 1e3,
                    None, "ms", note=f"max {max(steps) * 1e3:.0f} ms over {len(steps)} steps; mostly the figure"))
    return rows

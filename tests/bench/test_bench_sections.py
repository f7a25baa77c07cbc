"""Every bench section runs at the tiny size and gives well-formed rows; the command line works.

Speed is never asserted here (the bench's numbers are read off its table): these tests check
that each section runs end to end and that the rows that compare against a formula agree.
"""

import math

import pytest
import torch

from llmlab import bench
from llmlab.bench import SECTIONS, Row

CPU = torch.device("cpu")


def test_sections_in_notebook_order():
    assert list(SECTIONS) == ["svd", "perplexity", "decoding", "checkpointing", "precision", "lora", "tokenization",
                              "quantization", "attention", "serving"]


@pytest.mark.parametrize("name", list(SECTIONS))
def test_section_runs_at_tiny_size(name):
    rows = SECTIONS[name](CPU, "tiny")
    assert rows and all(isinstance(r, Row) for r in rows)
    for r in rows:
        assert r.topic == name and r.metric and r.unit
        assert math.isfinite(r.ours) and r.ours >= 0
        assert r.peer is None or (math.isfinite(r.peer) and r.peer >= 0)
        assert r.better in ("lower", "higher")


def test_the_sampling_row_draws_the_same_tokens_as_generate():
    """The sampling row times llmlab's sample against generate with the same settings and seed: the
    ratio is only meaningful if both drew the same tokens (the row's note says which)."""
    rows = [r for r in SECTIONS["decoding"](CPU, "tiny") if r.metric.startswith("sampling tok/s")]
    assert len(rows) == 1 and rows[0].note.endswith("identical tokens") and rows[0].spread_ours is not None


def test_checkpointing_saved_bytes_equal_the_formula():
    rows = {r.metric.split(" (")[0]: r for r in SECTIONS["checkpointing"](CPU, "tiny")}
    for s in ("store_all", "recompute_all", "sqrt"):
        row = rows[f"peak saved activations, {s}"]
        assert row.ours == pytest.approx(row.peer)


def test_lora_training_memory_is_below_full_fine_tuning():
    rows = {r.metric: r for r in SECTIONS["lora"](CPU, "tiny")}
    row = rows["training memory, LoRA vs full fine-tuning"]
    assert row.ours < row.peer and "train step, LoRA vs full fine-tuning" in rows


def test_naive_bpe_contender_learns_the_same_merges():
    from llmlab.bench.tokenization import naive_bpe_merges
    from llmlab.tokenization import load_corpus, train_bpe

    corpus = load_corpus()
    assert naive_bpe_merges(corpus, 60) == train_bpe(corpus, 256 + 60).merges


def test_command_line(tmp_path, capsys):
    out = tmp_path / "table.md"
    assert bench.main(["--only", "checkpointing", "--size", "tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == out.read_text().strip()
    assert "| checkpointing |" in printed
    with pytest.raises(SystemExit):
        bench.main(["--only", "nope"])
    with pytest.raises(SystemExit):
        bench.main(["--size", "huge"])


def test_quantization_rows_are_byte_identical():
    rows = SECTIONS["quantization"](CPU, "tiny")
    assert [r.note for r in rows if r.metric.startswith("quantize_gguf")] == ["byte-identical; torch on cpu"] * 2
    kernels = [r.metric.split(", ")[2] for r in rows if r.metric.startswith("y = W x")]
    assert kernels[0] == "int8 kernel vs float32 F.linear" and "bf16 kernel vs float32 F.linear" in kernels
def test_attention_saved_bytes_are_the_formulas():
    rows = [r for r in SECTIONS["attention"](CPU, "tiny") if r.metric.startswith("saved for backward")]
    n, d = 256, 64
    flash, plain = (4 * n * d + n) * 4, (3 * n * d + n * n) * 4   # q, k, v, out, lse | q, k, v, P
    by_peer = {r.peer_name.split(" ")[0]: r for r in rows}
    assert by_peer["plain"].ours == pytest.approx(flash / 2**20) and by_peer["plain"].peer == pytest.approx(plain / 2**20)
    assert by_peer["torch"].peer == pytest.approx(flash / 2**20)   # SDPA's CPU kernel saves the same tensors


def test_serving_rows_compare_identical_tokens():
    rows = {r.metric: r for r in SECTIONS["serving"](CPU, "tiny")}
    assert "identical tokens" in rows["tok/s, continuous vs static batching"].note
    assert "identical tokens" in rows["tok/s, speculative (prompt lookup, γ=4) vs greedy"].note
    kv = rows["peak KV bytes, paged (block 16) vs reserved"]
    assert 0 < kv.ours <= kv.peer  # paging never holds more than reserving

"""llmlab.bench.report: rows, ratios, noise flags and the Markdown table."""

import pytest
import torch

from llmlab.bench.report import NOISE_LIMIT, Row, format_table, timed_row
from llmlab.timing import Timing


def test_ratio_is_how_many_times_better_llmlab_is():
    assert Row("t", "time", 2.0, 4.0, "ms").ratio == 2.0  # lower is better: peer / ours
    assert Row("t", "tok/s", 30.0, 10.0, "tok/s", better="higher").ratio == 3.0
    assert Row("t", "no peer", 1.0, None, "ms").ratio is None
    assert Row("t", "zero", 0.0, 1.0, "ms").ratio is None


def test_timed_row_uses_medians_and_records_spreads():
    ours, peer = Timing((0.010, 0.011, 0.012)), Timing((0.020, 0.021, 0.050))
    row = timed_row("t", "m", ours, peer)
    assert row.ours == pytest.approx(11.0) and row.peer == pytest.approx(21.0) and row.unit == "ms"
    assert row.spread_ours == pytest.approx(1.1) and row.spread_peer == pytest.approx(1.05)
    assert row.spread == pytest.approx(1.1) and not row.noisy
    tput = timed_row("t", "m", ours, peer, per_second=100, unit="tok/s")
    assert tput.better == "higher" and tput.ours == pytest.approx(100 / 0.011) and tput.ratio == pytest.approx(21 / 11)


def test_a_noisy_row_withholds_its_ratio():
    steady, noisy = Timing((1.0, 1.0, 1.01)), Timing((1.0, 2.0, 3.0))
    row = timed_row("t", "m", steady, noisy)
    assert row.spread == 2.0 > NOISE_LIMIT and row.noisy
    table = format_table([row, timed_row("t", "ok", steady, steady)], torch.device("cpu"))
    lines = [line for line in table.splitlines() if line.startswith("| t |")]
    assert "too noisy" in lines[0] and "too noisy" not in lines[1]
    assert "| 1.000 |" in lines[1]  # the steady row's ratio


def test_table_header_names_the_machine_and_the_columns():
    table = format_table([Row("svd", "x", 1.0, 2.0, "ms", peer_name="numpy")], torch.device("cpu"))
    assert table.startswith("# llmlab bench") and f"torch {torch.__version__}" in table
    assert "| topic | metric | llmlab | peer | unit | ratio (x better) | spread (llmlab / peer) |" in table
    assert "| svd | x | 1.000 | 2.000 | ms | 2.000 |" in table

"""llmlab.widgets.attention: the notebook-14 block-size slider over the traffic model."""

from __future__ import annotations

import pytest

from llmlab.attention import L2_CACHE_BYTES, SHARED_MEMORY_PER_BLOCK, attention_traffic
from llmlab.widgets import AttentionBlockWidget, attention_block_widget


def test_refresh_follows_the_controls():
    w = attention_block_widget(n=4096, d=64, block_size=64)
    assert isinstance(w, AttentionBlockWidget)
    assert w.last["traffic"] == attention_traffic(4096, 64, 64)
    before, picture = w.readout.value, w.plot.value
    assert picture[:4] == b"\x89PNG" and "<b>B = 64, n = 4,096, d = 64</b>" in before and "K, V read 64×" in before
    w.block.value = 128                      # bigger blocks: fewer K/V re-reads, more on-chip memory
    t = w.last["traffic"]
    assert t.block_size == 128 and t.kv_read_bytes * 2 == attention_traffic(4096, 64, 64).kv_read_bytes
    assert w.readout.value != before and w.plot.value != picture and "K, V read 32×" in w.readout.value
    w.block.value = 256                      # 256 × 256 scores do not fit a thread block any more
    assert w.last["fits"] == {"A100": False, "H100": False}
    assert w.last["traffic"].sram_bytes > max(SHARED_MEMORY_PER_BLOCK.values())
    w.block.value = 64
    assert w.last["fits"] == {"A100": True, "H100": True}
    w.log2_n.value = 13
    assert w.last["traffic"].n == 8192 and "n = 8,192" in w.readout.value
    w.head_dim.value = 128
    assert w.last["traffic"].d == 128


def test_n_moves_the_megabytes_and_k_v_against_l2_not_the_ratio():
    w = attention_block_widget(n=4096, d=64, block_size=64)
    ratio = w.last["traffic"].ratio
    assert "2B/d = 2.0" in w.readout.value and "1.00 MiB" in w.readout.value and "they fit" in w.readout.value
    w.log2_n.value = 16
    t = w.last["traffic"]
    assert t.ratio == pytest.approx(ratio, rel=0.01) and t.plain_bytes > 200 * attention_traffic(4096, 64, 64).plain_bytes
    assert "16.00 MiB" in w.readout.value and "they fit" in w.readout.value
    w.head_dim.value, w.log2_n.value = 128, 17            # one head's K and V: 64 MiB, more than either L2
    assert w.last["traffic"].kv_bytes == 64 * 2**20 > max(L2_CACHE_BYTES.values())
    assert "larger than L2" in w.readout.value and "upper bound" in w.readout.value
    w.head_dim.value, w.log2_n.value = 64, 18             # d = 64 flips too: 64 MiB at n = 262,144
    assert w.last["traffic"].kv_bytes == 64 * 2**20 and "larger than L2" in w.readout.value
    w.log2_n.value = 19
    assert w.last["traffic"].n == 2**19


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n": 1000}, ValueError, "n must be a power of two"),
    ({"n": 128}, ValueError, r"n must be an int in \[256"),
    ({"n": 2**20}, ValueError, r"n must be an int in \[256"),
    ({"d": 48}, ValueError, "d must be one of"),
    ({"block_size": 50}, ValueError, "block_size must be one of"),
    ({"block_size": 64.0}, TypeError, "block_size must be an int"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        attention_block_widget(**kwargs)

"""The bench's table: one :class:`Row` per comparison, the section registry, and the Markdown output.

A row compares llmlab with the library a user would otherwise pick (or with a formula), measured
side by side in the same run. Timed rows carry the :class:`llmlab.timing.Timing` of both
contenders; the table prints the spread (median / min) of each next to the ratio, and when the
runs were too noisy to support a ratio (a busy machine), it says so instead of printing one.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..timing import NOISE_LIMIT, Timing

__all__ = ["Row", "NOISE_LIMIT", "SECTIONS", "SIZES", "section", "timed_row", "format_table"]

#: ``"full"``: the sizes the saved tables use; ``"tiny"``: seconds in all, for tests.
SIZES = ("full", "tiny")

SECTIONS: dict[str, Callable[..., list["Row"]]] = {}


@dataclass(frozen=True)
class Row:
    """One comparison. ``ours`` and ``peer`` are in ``unit``; ``better`` says which way is good.

    ``ratio`` is always "how many times better llmlab is than the peer" (> 1: llmlab wins), so
    a time row gives peer/ours and a throughput row ours/peer. ``peer`` may be None for a row
    without a peer (no ratio then). ``spread`` (timed rows): the larger median/min of the two
    contenders' runs; above :data:`NOISE_LIMIT` the row is ``noisy`` and its ratio is withheld.
    """

    topic: str
    metric: str
    ours: float
    peer: float | None
    unit: str
    better: str = "lower"  # "lower" (times, bytes) or "higher" (throughput)
    peer_name: str = ""
    note: str = ""
    spread_ours: float | None = None
    spread_peer: float | None = None

    @property
    def spread(self) -> float | None:
        spreads = [s for s in (self.spread_ours, self.spread_peer) if s is not None]
        return max(spreads) if spreads else None

    @property
    def noisy(self) -> bool:
        return self.spread is not None and self.spread > NOISE_LIMIT

    @property
    def ratio(self) -> float | None:
        if self.peer is None or self.ours == 0 or self.peer == 0:
            return None
        return self.peer / self.ours if self.better == "lower" else self.ours / self.peer


def timed_row(topic: str, metric: str, ours: Timing, peer: Timing, *, scale: float = 1e3, unit: str = "ms",
              per_second: float | None = None, **kwargs) -> Row:
    """A row from two :class:`Timing` s measured side by side (medians shown, spreads recorded).

    ``scale``/``unit`` convert seconds (default: milliseconds, lower is better). With
    ``per_second=n`` the row shows a throughput ``n / seconds`` instead (higher is better).
    """
    if per_second is not None:
        values = (per_second / ours.median, per_second / peer.median)
        kwargs.setdefault("better", "higher")
    else:
        values = (ours.median * scale, peer.median * scale)
    return Row(topic, metric, values[0], values[1], unit, spread_ours=ours.spread, spread_peer=peer.spread, **kwargs)


def section(name: str):
    """Register a bench section ``fn(device, size="full") -> list[Row]`` under ``name``."""

    def register(fn):
        SECTIONS[name] = fn
        return fn

    return register


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 1000 or abs(x) < 0.01:
        return f"{x:.3g}"
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def _ratio_cell(row: Row) -> str:
    if row.ratio is None:
        return "-"
    if row.noisy:
        return f"too noisy (spread {row.spread:.2f} > {NOISE_LIMIT})"
    return _fmt(row.ratio)


def _spread_cell(row: Row) -> str:
    if row.spread is None:
        return ""
    return f"{_fmt(row.spread_ours)} / {_fmt(row.spread_peer)}"


def format_table(rows: list[Row], device: torch.device) -> str:
    """A Markdown table of ``rows`` with a header naming the machine."""
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    head = [
        f"# llmlab bench — {time.strftime('%Y-%m-%d')} — device {device} ({dev_name}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads",
        "",
        f"Timed rows: contenders interleaved round by round; values are medians; spread = median / min of "
        f"each contender's runs (1.00 = steady); a ratio is withheld when a spread exceeds {NOISE_LIMIT}.",
        "",
        "| topic | metric | llmlab | peer | unit | ratio (x better) | spread (llmlab / peer) | peer is | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    body = [
        f"| {r.topic} | {r.metric} | {_fmt(r.ours)} | {_fmt(r.peer)} | {r.unit} | {_ratio_cell(r)} | "
        f"{_spread_cell(r)} | {r.peer_name} | {r.note} |"
        for r in rows
    ]
    return "\n".join(head + body)

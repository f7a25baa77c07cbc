"""``python -m llmlab.bench``: llmlab against the library a user would otherwise pick.

Every row is measured side by side in one run, on the same inputs and device, and printed with
the ratio. Targets (e.g. "slider step <= 30 ms") are read off this table, never asserted as
timings in tests. Options: ``--device cuda``, ``--only svd,decoding``, ``--out FILE.md``.

Each topic adds one function decorated with ``@section("name")`` that returns a list of
:class:`Row`; the sections below are in notebook order.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

SECTIONS: dict[str, Callable[[torch.device], list["Row"]]] = {}


@dataclass
class Row:
    """One comparison. ``ours`` and ``peer`` are in ``unit``; ``better`` says which way is good.

    ``ratio`` is always "how many times better llmlab is than the peer" (> 1: llmlab wins), so
    a time row gives peer/ours and a throughput row ours/peer. ``peer`` may be None for rows
    that have no peer (the ratio is then left blank).
    """

    topic: str
    metric: str
    ours: float
    peer: float | None
    unit: str
    better: str = "lower"  # "lower" (times, bytes) or "higher" (throughput)
    peer_name: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.peer is None or self.ours == 0 or self.peer == 0:
            return None
        return self.peer / self.ours if self.better == "lower" else self.ours / self.peer


def section(name: str):
    """Register a bench section ``fn(device) -> list[Row]`` under ``name``."""

    def register(fn):
        SECTIONS[name] = fn
        return fn

    return register


def timeit(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1, device=None) -> float:
    """Median wall time of ``fn()`` in seconds (synchronising CUDA around each call)."""
    sync = torch.cuda.synchronize if (device is not None and torch.device(device).type == "cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 1000 or abs(x) < 0.01:
        return f"{x:.3g}"
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def format_table(rows: list[Row], device: torch.device) -> str:
    """A Markdown table of ``rows`` with a header naming the machine."""
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    head = [
        f"# llmlab bench — {time.strftime('%Y-%m-%d')} — device {device} ({dev_name}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads",
        "",
        "| topic | metric | llmlab | peer | unit | ratio (x better) | peer is | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    body = [
        f"| {r.topic} | {r.metric} | {_fmt(r.ours)} | {_fmt(r.peer)} | {r.unit} | {_fmt(r.ratio)} | {r.peer_name} | {r.note} |"
        for r in rows
    ]
    return "\n".join(head + body)


# ---------------------------------------------------------------------------------------------
# Sections, one per topic. Each helper edits only its own block.
# ---------------------------------------------------------------------------------------------

# === section: svd ===
# === end: svd ===

# === section: perplexity ===
# === end: perplexity ===

# === section: decoding ===
# === end: decoding ===

# === section: checkpointing ===
# === end: checkpointing ===

# === section: precision ===
# === end: precision ===

# === section: lora ===
# === end: lora ===


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmlab.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--only", default="", help=f"comma-separated sections out of: {', '.join(SECTIONS)}")
    parser.add_argument("--out", default="", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available here")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    rows: list[Row] = []
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        rows += SECTIONS[name](device)
    table = format_table(rows, device)
    print(table)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

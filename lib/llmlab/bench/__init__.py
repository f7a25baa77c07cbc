"""``python -m llmlab.bench``: llmlab against the library a user would otherwise pick.

Every row is measured side by side in one run, on the same inputs and device, and printed with
the ratio. Targets (e.g. "slider step <= 30 ms") are read off this table, never asserted as
timings in tests. Options: ``--device cuda``, ``--only svd,decoding``, ``--size tiny``,
``--out FILE.md``.

One module per section (in notebook order: ``svd``, ``perplexity``, ``decoding``,
``checkpointing``, ``precision``, ``lora``, ``tokenization``, ``quantization``, ``attention``, ``serving``), each registering
``fn(device, size)`` with
``@section("name")``; ``report`` holds the table. This package is a leaf: nothing in the
library imports it.
"""

from __future__ import annotations

import argparse
import sys

import torch

# Importing the section modules registers them.
from . import attention, checkpointing, decoding, lora, perplexity, precision, quantization, serving, svd  # noqa: F401
from . import tokenization  # noqa: F401
from .report import NOISE_LIMIT, SECTIONS, SIZES, Row, format_table, section, timed_row

#: The sections in notebook order (the table's order).
ORDER = ("svd", "perplexity", "decoding", "checkpointing", "precision", "lora", "tokenization", "quantization",
         "attention", "serving")
for _name in ORDER:  # registration followed the import order: put the registry in notebook order
    SECTIONS[_name] = SECTIONS.pop(_name)

__all__ = ["Row", "NOISE_LIMIT", "SECTIONS", "SIZES", "section", "timed_row", "format_table", "run_sections", "main"]


def run_sections(names=None, *, device, size: str = "full", progress=None) -> list[Row]:
    """Run the sections ``names`` (default: all, in order) on ``device``; return their rows."""
    rows: list[Row] = []
    for name in names or list(SECTIONS):
        if progress is not None:
            progress(name)
        rows += SECTIONS[name](device, size)
    return rows


def main(argv: list[str] | None = None) -> int:
    """The command line: parse the options, run the sections, print (and optionally save) the table."""
    parser = argparse.ArgumentParser(prog="python -m llmlab.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--only", default="", help=f"comma-separated sections out of: {', '.join(SECTIONS)}")
    parser.add_argument("--size", default="full", choices=SIZES, help="full (default) or tiny (seconds, for tests)")
    parser.add_argument("--out", default="", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available here")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    rows = run_sections(names, device=device, size=args.size,
               progress=lambda name: print(f"[bench] {name} ...", file=sys.stderr, flush=True))
    table = format_table(rows, device)
    print(table)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(table + "\n")
    return 0

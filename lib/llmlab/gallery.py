"""``python -m llmlab.gallery`` (``make gallery``): every notebook executed and rendered to HTML.

Writes ``gallery/NN_topic.html`` (outputs, figures and widget state embedded) and
``gallery/index.html`` listing the notebooks with one line each, so a reader can browse the
results without a kernel. ``gallery/`` is gitignored.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def describe(notebook: Path) -> tuple[str, str]:
    """(title, one-line summary) from the notebook's first Markdown cell: its heading and first sentence."""
    nb = json.loads(notebook.read_text())
    md = next(("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"), "")
    lines = [l.strip() for l in md.splitlines()]
    title = next((l.lstrip("#").strip() for l in lines if l.startswith("#")), notebook.stem)
    body = " ".join(l for l in lines if l and not l.startswith("#"))
    summary = body.split(". ")[0].rstrip(".") + "." if body else ""
    return title, summary


def render(notebook: Path, out_dir: Path, *, timeout: int = 600) -> Path:
    """Execute ``notebook`` (in its own folder) and write ``out_dir/<stem>.html``; returns that path."""
    # nbconvert is a development dependency (make gallery), not needed to use the library.
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExecutePreprocessor

    nb = nbformat.read(notebook, as_version=4)
    # The kernel inherits our environment: a non-inline MPLBACKEND (e.g. Agg) would drop the figures.
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        ExecutePreprocessor(timeout=timeout, kernel_name="python3", store_widget_state=True).preprocess(
            nb, {"metadata": {"path": str(notebook.parent)}}
        )
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved
    body, _ = HTMLExporter().from_notebook_node(nb)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{notebook.stem}.html"
    target.write_text(body, encoding="utf-8")
    return target


def write_index(notebooks: list[Path], out_dir: Path) -> Path:
    """``out_dir/index.html``: one line per notebook, linking its rendered page."""
    items = []
    for nb in notebooks:
        title, summary = describe(nb)
        items.append(
            f'<li><a href="{html.escape(nb.stem)}.html">{html.escape(nb.name)}</a> — '
            f"<b>{html.escape(title)}</b>. {html.escape(summary)}</li>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>llmlab gallery</title></head>"
        "<body style='font-family:sans-serif;max-width:60em;margin:2em auto'>"
        "<h1>llmlab gallery</h1><p>Every notebook executed, with its outputs. "
        "Open a notebook in JupyterLab (<code>make lab</code>) to move the sliders.</p>"
        f"<ul>{''.join(items)}</ul></body></html>"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def build(notebooks: list[Path] | None = None, out_dir: Path | None = None) -> Path:
    """Render ``notebooks`` (default: all of notebooks/) into ``out_dir`` (default gallery/)."""
    notebooks = sorted(notebooks or (ROOT / "notebooks").glob("*.ipynb"))
    out_dir = out_dir or ROOT / "gallery"
    for nb in notebooks:
        print(f"[gallery] {nb.name}", file=sys.stderr, flush=True)
        render(nb, out_dir)
    return write_index(notebooks, out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmlab.gallery", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: gallery/)")
    args = parser.parse_args(argv)
    print(build(args.notebooks or None, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

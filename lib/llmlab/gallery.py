"""``python -m llmlab.gallery`` (``make gallery``): every notebook executed and rendered to HTML that reads offline.

Writes ``gallery/NN_topic.html`` and ``gallery/index.html`` listing the notebooks with one line
each, so a reader can browse the results without a kernel — and without a network:

* **Formulas.** nbconvert's pages load MathJax from a CDN; these load the copy in
  ``gallery/mathjax/``, taken from the installed ``jupyter-server-mathjax`` package (MathJax 2.7
  with its STIX web fonts), so ``$...$`` is typeset from ``file://`` too.
* **Widgets.** A live widget needs a kernel, and nbconvert's static stand-in loads its renderer
  from a CDN. Each widget output is replaced by static HTML of the widget's *last* state, read
  from the state the execution saved: the sliders' values, the readout, the picture; progress
  bars as a bar and their final text. A caption says how to get the live widget (``make lab``).
* **No other script.** nbconvert's template also loads require.js (for JavaScript outputs and widget
  renderers) and mermaid with its ELK layout (for ``text/vnd.mermaid`` diagrams) from a CDN. The
  pages leave both out (:data:`TEMPLATE`): widgets are static HTML here and the notebooks have no
  JavaScript outputs and no diagrams; a mermaid output would show as its source text.

``gallery/`` is gitignored. ``--no-execute`` renders notebooks that are already executed.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import jinja2  # nbconvert's templates are jinja2's (torch requires it too)

ROOT = Path(__file__).resolve().parents[2]

#: MathJax 2.7's combined TeX + HTML-CSS configuration, made safe, then ours (:data:`MATHJAX_LOCAL_CONFIG`).
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe,llmlab"
#: Where the pages load MathJax from, relative to the page.
MATHJAX_URL = f"mathjax/MathJax.js?config={MATHJAX_CONFIG}"
#: ``mathjax/config/llmlab.js``: typeset with the STIX web fonts shipped next to the pages (the
#: package has no TeX fonts, which MathJax would otherwise ask for) and never with image fonts.
MATHJAX_LOCAL_CONFIG = """\
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}});
MathJax.Ajax.loadComplete("[MathJax]/config/llmlab.js");
"""
#: Parts of the package's MathJax that a page never loads: the SVG output's fonts (the package ships
#: no SVG output) and the accessibility explorer (only switched on from MathJax's menu, and 3.7 MB).
MATHJAX_SKIP = ("jax/output/SVG", "extensions/a11y")
MATHJAX_PACKAGE = "jupyter_server_mathjax"

#: nbconvert's "lab" page without the two scripts it loads from a CDN: require.js and mermaid (+ ELK).
TEMPLATE = "llmlab_gallery.html.j2"
TEMPLATE_SOURCE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
#: The CSS class every :class:`llmlab.widgets.LabWidget` box carries (``LabWidget.CSS_CLASS``; a test
#: keeps the two equal: importing the widgets here would load torch to read one string).
LAB_WIDGET_CLASS = "llmlab-widget"
LAB_WIDGET_CAPTION = ("Interactive widget, shown as it was at the end of the run. Open the notebook in JupyterLab "
                      "(<code>make lab</code>) to move its controls.")
STATIC_CSS = """<style>
.llmlab-static { display: flex; gap: 0.4em 1.2em; margin: 0.2em 0; }
.llmlab-static-vbox { flex-direction: column; }
.llmlab-static-hbox { flex-direction: row; flex-wrap: wrap; align-items: center; }
.llmlab-static-control { font-family: var(--jp-ui-font-family, sans-serif); }
.llmlab-static-control b { font-family: var(--jp-code-font-family, monospace); }
.llmlab-static-widget { border: 1px solid #ccc; border-radius: 4px; padding: 0.5em 0.8em; }
.llmlab-static-caption { color: #666; font-size: 0.85em; font-style: italic; }
</style>"""

__all__ = ["describe", "copy_mathjax", "static_widgets", "widget_html", "render", "write_index", "build", "main"]


def describe(notebook: Path) -> tuple[str, str]:
    """(title, one-line summary) from the notebook's first Markdown cell: its heading and first sentence."""
    nb = json.loads(Path(notebook).read_text())
    md = next(("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"), "")
    lines = [l.strip() for l in md.splitlines()]
    title = next((l.lstrip("#").strip() for l in lines if l.startswith("#")), Path(notebook).stem)
    body = " ".join(l for l in lines if l and not l.startswith("#"))
    summary = body.split(". ")[0].rstrip(".") + "." if body else ""
    return title, summary


def mathjax_source() -> Path:
    """The MathJax files of the installed ``jupyter-server-mathjax`` package (a ``make lab`` dependency)."""
    spec = importlib.util.find_spec(MATHJAX_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError("jupyter-server-mathjax is not installed: `pip install jupyter-server-mathjax` "
                                "(part of llmlab's dev extra, which `make gallery` installs)")
    return Path(spec.origin).parent / "static"


def copy_mathjax(out_dir: Path) -> Path:
    """Copy the MathJax files the pages load to ``out_dir/mathjax`` (skipped when already there); returns it."""
    source, target = mathjax_source(), Path(out_dir) / "mathjax"
    stamp = target / ".copied-from"
    if stamp.exists() and stamp.read_text() == str(source):
        return target
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source).as_posix()
        if path.is_file() and not rel.startswith(MATHJAX_SKIP):
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / rel)
    (target / "config" / "llmlab.js").write_text(MATHJAX_LOCAL_CONFIG)
    stamp.write_text(str(source))
    return target


# ---------------------------------------------------------------- widgets as static HTML

def _label(state: dict) -> str:
    text = state.get("description") or ""
    return text if state.get("description_allow_html") else html.escape(text)


def _formatted(value, spec: str | None) -> str:
    """A slider's value as its readout shows it (ipywidgets' formats are d3's, Python's for the common ones)."""
    if spec:
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            pass
    return str(value)


def _control(label: str, value: str) -> str:
    return f'<span class="llmlab-static-control">{label + ": " if label else ""}<b>{html.escape(value)}</b></span>'


def _image(model: dict) -> str:
    """An ``ipywidgets.Image`` as an ``<img>`` holding its bytes (saved base64-encoded in the state's buffers)."""
    state = model["state"]
    buffer = next((b for b in model.get("buffers", []) if b.get("path") == ["value"]), None)
    if buffer is None or buffer.get("encoding") != "base64":
        return ""
    size = "".join(f' {k}="{html.escape(str(state[k]))}"' for k in ("width", "height") if state.get(k))
    alt = "the widget's picture at the end of the run"
    return f'<img alt="{alt}" src="data:image/{html.escape(state.get("format", "png"))};base64,{buffer["data"]}"{size}>'


def _output_html(outputs: list) -> str:
    """The outputs an ``ipywidgets.Output`` captured: text, HTML and pictures."""
    parts = []
    for out in outputs:
        if out.get("output_type") == "stream":
            parts.append(f"<pre>{html.escape(out.get('text', ''))}</pre>")
        data = out.get("data", {})
        if "image/png" in data:
            parts.append(f'<img alt="a picture the widget showed" src="data:image/png;base64,{data["image/png"]}">')
        elif "text/html" in data:
            parts.append("".join(data["text/html"]))
        elif "text/plain" in data:
            parts.append(f"<pre>{html.escape(''.join(data['text/plain']))}</pre>")
    return "".join(parts)


def widget_html(state: dict, model_id: str) -> str | None:
    """Static HTML of widget ``model_id`` as the saved ``state`` holds it (``nb.metadata.widgets``); None if unknown."""
    model = state.get(model_id)
    if model is None:
        return None
    name, s = model.get("model_name", ""), model.get("state", {})
    classes = " ".join(html.escape(c) for c in s.get("_dom_classes", []))
    if "children" in s and name.endswith("BoxModel"):
        kind = "hbox" if name == "HBoxModel" else "vbox"
        children = [widget_html(state, c.removeprefix("IPY_MODEL_")) for c in s["children"]]
        inner = "".join(c for c in children if c)
        if LAB_WIDGET_CLASS in s.get("_dom_classes", []):
            return (f'<div class="llmlab-static-widget {classes}"><div class="llmlab-static llmlab-static-{kind}">'
                    f'{inner}</div><div class="llmlab-static-caption">{LAB_WIDGET_CAPTION}</div></div>')
        return f'<div class="llmlab-static llmlab-static-{kind} {classes}">{inner}</div>'
    if name in ("HTMLModel", "HTMLMathModel"):
        label = _label(s)
        return f'<div class="{classes}">{label + " " if label else ""}{s.get("value", "")}</div>'
    if name == "LabelModel":
        return f'<span class="{classes}">{html.escape(s.get("value", ""))}</span>'
    if name == "ImageModel":
        return _image(model)
    if name in ("FloatProgressModel", "IntProgressModel"):
        return (f'<span class="llmlab-static-control">{_label(s)} <progress value="{s.get("value", 0)}" '
                f'max="{s.get("max", 100)}"></progress></span>')
    if name == "OutputModel":
        return f'<div class="{classes}">{_output_html(s.get("outputs", []))}</div>'
    if name == "ButtonModel":
        return f'<button disabled>{html.escape(s.get("description", ""))}</button>'
    if "_options_labels" in s:  # Dropdown, SelectionSlider, ToggleButtons, RadioButtons, Select
        index = s.get("index")
        labels = s["_options_labels"]
        value = ", ".join(labels[i] for i in index) if isinstance(index, (list, tuple)) else (
            labels[index] if isinstance(index, int) and 0 <= index < len(labels) else "")
        return _control(_label(s), value)
    if name in ("CheckboxModel", "ToggleButtonModel"):
        return _control(_label(s), "yes" if s.get("value") else "no")
    if "value" in s:  # sliders and text boxes
        value = s["value"]
        if isinstance(value, list):
            return _control(_label(s), " – ".join(_formatted(v, s.get("readout_format")) for v in value))
        return _control(_label(s), _formatted(value, s.get("readout_format")))
    return None


def static_widgets(nb) -> int:
    """Replace each widget output of the executed notebook ``nb`` by static HTML of its last state
    (from ``nb.metadata.widgets``), then drop the saved state, so the page loads no widget renderer
    from a CDN. Returns how many outputs were replaced; a widget the state lacks keeps its text form."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    replaced = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                continue
            static = widget_html(state, view.get("model_id", ""))
            out["data"].pop(WIDGET_VIEW)
            if static is not None:
                out["data"]["text/html"] = STATIC_CSS + static
                replaced += 1
    nb.metadata.pop("widgets", None)
    return replaced


# ---------------------------------------------------------------- pages

def render(notebook: Path, out_dir: Path, *, execute: bool = True, timeout: int = 600) -> Path:
    """Execute ``notebook`` (in its own folder; ``execute=False`` takes its saved outputs) and write
    ``out_dir/<stem>.html`` with MathJax and widgets that work offline; returns that path."""
    # nbconvert is a development dependency (make gallery), not needed to use the library.
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExecutePreprocessor

    notebook, out_dir = Path(notebook), Path(out_dir)
    nb = nbformat.read(notebook, as_version=4)
    if execute:
        # The kernel inherits our environment: a non-inline MPLBACKEND (e.g. Agg) would drop the figures.
        saved = os.environ.pop("MPLBACKEND", None)
        try:
            ExecutePreprocessor(timeout=timeout, kernel_name="python3", store_widget_state=True).preprocess(
                nb, {"metadata": {"path": str(notebook.parent)}}
            )
        finally:
            if saved is not None:
                os.environ["MPLBACKEND"] = saved
    static_widgets(nb)
    title = describe(notebook)[0]
    exporter = HTMLExporter(mathjax_url=MATHJAX_URL, template_file=TEMPLATE,
                            extra_loaders=[jinja2.DictLoader({TEMPLATE: TEMPLATE_SOURCE})])
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_mathjax(out_dir)
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
        "<h1>llmlab gallery</h1><p>Every notebook executed, with its outputs; each widget is shown as it was "
        "at the end of the run. Open a notebook in JupyterLab (<code>make lab</code>) to move the sliders.</p>"
        f"<ul>{''.join(items)}</ul></body></html>"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def build(notebooks: list[Path] | None = None, out_dir: Path | None = None, *, execute: bool = True) -> Path:
    """Render ``notebooks`` (default: all of notebooks/) into ``out_dir`` (default gallery/); returns the index."""
    notebooks = sorted(notebooks or (ROOT / "notebooks").glob("*.ipynb"))
    out_dir = out_dir or ROOT / "gallery"
    for nb in notebooks:
        print(f"[gallery] {nb.name}", file=sys.stderr, flush=True)
        render(nb, out_dir, execute=execute)
    return write_index(notebooks, out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmlab.gallery", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: gallery/)")
    parser.add_argument("--no-execute", action="store_true",
                        help="render the notebooks' saved outputs instead of executing them")
    args = parser.parse_args(argv)
    print(build(args.notebooks or None, args.out, execute=not args.no_execute))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

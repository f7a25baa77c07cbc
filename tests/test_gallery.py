"""`make gallery` renders executed notebooks to static HTML that reads offline: figures, formulas
(MathJax served from next to the pages) and each widget's last state."""

import base64
import io
import re
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from PIL import Image

from llmlab import gallery
from llmlab.widgets import LabWidget

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


class _Loads(HTMLParser):
    """Every resource a page loads by itself: the src/href of each script, link, img, iframe, ... tag,
    and what the text of its <script> and <style> elements imports or fetches."""

    ATTRS = {"script": ("src",), "link": ("href",), "img": ("src", "srcset"), "iframe": ("src",),
             "source": ("src", "srcset"), "video": ("src", "poster"), "audio": ("src",), "embed": ("src",),
             "object": ("data",), "track": ("src",), "input": ("src",)}

    def __init__(self):
        super().__init__()
        self.urls, self.inline, self._in = [], [], None

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in self.ATTRS.get(tag, ()) and value:
                self.urls.append(value)
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in:
            self.inline.append(data)


#: URLs inside <script> and <style> text: CSS url(...) and @import, JavaScript import(...) and `from "..."`.
INLINE_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)|\bimport\s*\(\s*['"]([^'"]+)"""
                        r"""|\bfrom\s+['"]([^'"]+)['"]""")


def web_loads(page: str, folder: Path | None = None) -> list[str]:
    """What ``page`` would load from anywhere but itself and the files next to it: every src/href of every
    script/link/img/... tag, and every URL its <script> and <style> text imports, must be a ``data:`` URL
    or a relative path (to a file in ``folder``, when given); and no script or style text names an
    http(s) URL outside a comment (a fetch, a dynamic import built from a string, ...)."""
    parser = _Loads()
    parser.feed(page)
    urls = list(parser.urls)
    bad = []
    for text in parser.inline:
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # block comments (licence headers cite URLs)
        urls += [next(u for u in m.groups() if u) for m in INLINE_URL.finditer(code)]
        bad += re.findall(r"""https?://[^\s"'<>)]+""", code)
    for url in urls:
        if url.startswith("data:"):
            continue
        target = urllib.parse.urlsplit(url)
        if target.scheme or target.netloc or url.startswith("/"):
            bad.append(url)  # http(s), protocol-relative, file: or absolute: not next to the page
        elif folder is not None and not (folder / urllib.parse.unquote(target.path)).is_file():
            bad.append(f"{url} (no such file next to the page)")
    return sorted(set(bad))


def test_web_loads_catches_every_way_a_page_fetches():
    ok = ('<script src="mathjax/MathJax.js?config=x"></script><link href="style.css" rel="stylesheet">'
          '<img src="data:image/png;base64,AAAA"><style>/* see https://example.org */ p { color: red }</style>'
          '<style>.x { background: url("data:image/svg+xml;utf8,<svg/>") }</style>')
    assert web_loads(ok) == []
    for bad in ('<script src="https://cdn.example/x.js"></script>', '<link rel="stylesheet" href="//cdn.example/a.css">',
                '<img src="/etc/x.png">', '<iframe src="file:///tmp/x.html"></iframe>',
                '<script type="module">const m = (await import("https://cdn.example/m.mjs")).default;</script>',
                "<script type=\"module\">import mermaid from 'https://cdn.example/m.mjs';</script>",
                '<style>@import url("https://fonts.example/f.css");</style>',
                '<style>body { background: url(https://x.example/a.png) }</style>'):
        assert web_loads(bad), bad


def test_describe_every_notebook():
    for nb in NOTEBOOKS:
        title, summary = gallery.describe(nb)
        assert title and title != nb.stem, f"{nb.name} needs a '# Title' in its first Markdown cell"
        assert len(summary) > 20, f"{nb.name} needs a first sentence saying what it teaches"


def test_mathjax_is_copied_next_to_the_pages(tmp_path):
    target = gallery.copy_mathjax(tmp_path)
    assert target == tmp_path / "mathjax" and (target / "MathJax.js").is_file()
    for name in gallery.MATHJAX_CONFIG.split(","):  # every configuration file the pages ask for
        assert (target / "config" / f"{name}.js").is_file(), name
    assert "STIX-Web" in (target / "config" / "llmlab.js").read_text()
    fonts = list((target / "fonts" / "HTML-CSS" / "STIX-Web" / "woff").glob("*.woff"))
    assert len(fonts) > 20 and (target / "jax/output/HTML-CSS/fonts/STIX-Web/fontdata.js").is_file()
    assert (target / "extensions" / "TeX" / "AMSmath.js").is_file()
    # Only what a page can load: no SVG fonts (no SVG output ships), no accessibility explorer.
    for skipped in gallery.MATHJAX_SKIP:
        assert not (target / skipped).exists(), skipped
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    assert 2e6 < size < 8e6, f"{size / 1e6:.1f} MB"
    # A second copy into the same folder is skipped.
    (target / "MathJax.js").write_text("// touched")
    gallery.copy_mathjax(tmp_path)
    assert (target / "MathJax.js").read_text() == "// touched"


def test_page_loads_mathjax_from_the_gallery_folder(tmp_path):
    nb = ROOT / "notebooks" / "01_perplexity.ipynb"
    page = gallery.render(nb, tmp_path, execute=False).read_text()
    assert f'<script src="{gallery.MATHJAX_URL}">' in page
    assert not web_loads(page, tmp_path), f"the page loads {web_loads(page, tmp_path)} from elsewhere"
    assert "mermaid" not in page and "require.js" not in page
    assert f"<title>{gallery.describe(nb)[0]}</title>" in page
    assert (tmp_path / "mathjax" / "MathJax.js").is_file()


def _state(model_id, model_name, buffers=None, **state):
    return model_id, {"model_name": model_name, "model_module": "@jupyter-widgets/controls",
                      "state": {"_model_name": model_name, **state}, **({"buffers": buffers} if buffers else {})}


def _widget_notebook(state_models, shown):
    nb = new_notebook(cells=[new_code_cell("w")])
    nb.cells[0].outputs = [nbformat.from_dict({
        "output_type": "display_data", "metadata": {},
        "data": {"text/plain": "VBox(children=...)", gallery.WIDGET_VIEW: {"version_major": 2, "version_minor": 0,
                                                                          "model_id": shown}}})]
    nb.metadata["widgets"] = {gallery.WIDGET_STATE: {"state": dict(state_models), "version_major": 2,
                                                     "version_minor": 0}}
    return nb


def test_static_widgets_show_every_control_kind():
    png = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(png, format="png")
    models = [
        _state("box", "VBoxModel", children=["IPY_MODEL_row", "IPY_MODEL_html", "IPY_MODEL_img", "IPY_MODEL_bar"],
               _dom_classes=[gallery.LAB_WIDGET_CLASS, "llmlab-x-widget"]),
        _state("row", "HBoxModel", children=["IPY_MODEL_k", "IPY_MODEL_u", "IPY_MODEL_menu", "IPY_MODEL_flag",
                                             "IPY_MODEL_sel", "IPY_MODEL_range", "IPY_MODEL_odd"]),
        _state("k", "IntSliderModel", description="k", value=60, readout_format="d"),
        _state("u", "FloatLogSliderModel", description="u / w", value=0.001, readout_format=".2e"),
        _state("menu", "DropdownModel", description="image", _options_labels=["astronaut", "noise"], index=1),
        _state("flag", "CheckboxModel", description="divide by K", value=True),
        _state("sel", "SelectionSliderModel", description="stride", _options_labels=["8", "16", "32"], index=2),
        _state("range", "IntRangeSliderModel", description="span", value=[2, 5], readout_format="d"),
        _state("odd", "SomeNewModel", description="ignored"),
        _state("html", "HTMLModel", value="<b>relative error = 0.0123</b>", _dom_classes=["llmlab-x-readout"]),
        _state("img", "ImageModel", format="png", width="200",
               buffers=[{"path": ["value"], "encoding": "base64", "data": base64.b64encode(png.getvalue()).decode()}]),
        _state("bar", "FloatProgressModel", value=3.0, max=3.0, description="steps"),
    ]
    nb = _widget_notebook(models, "box")
    assert gallery.static_widgets(nb) == 1
    assert "widgets" not in nb.metadata
    data = nb.cells[0].outputs[0]["data"]
    assert gallery.WIDGET_VIEW not in data and data["text/plain"] == "VBox(children=...)"
    page = data["text/html"]
    for text in ["k: <b>60</b>", "u / w: <b>1.00e-03</b>", "image: <b>noise</b>", "divide by K: <b>yes</b>",
                 "stride: <b>32</b>", "span: <b>2 – 5</b>", "<b>relative error = 0.0123</b>",
                 '<progress value="3.0" max="3.0">', "make lab", 'class="llmlab-static-widget ']:
        assert text in page, text
    assert "ignored" not in page  # an unknown kind of control is left out, not guessed at
    src = re.search(r'<img alt="[^"]+" src="data:image/png;base64,([^"]+)" width="200">', page)  # before nbconvert
    assert src and Image.open(io.BytesIO(base64.b64decode(src.group(1)))).size == (4, 3)


def test_static_widgets_without_saved_state_keep_the_text():
    nb = _widget_notebook([], "missing")
    assert gallery.static_widgets(nb) == 0
    assert nb.cells[0].outputs[0]["data"] == {"text/plain": "VBox(children=...)"}


def test_lab_widget_class_agrees():
    assert gallery.LAB_WIDGET_CLASS == LabWidget.CSS_CLASS


def test_gallery_shows_a_driven_widget_as_it_was_last(tmp_path):
    """A notebook that drives a real widget: the page shows the state after the drive, not before."""
    from llmlab.widgets import checkpointing_widget

    nb = new_notebook(cells=[
        new_markdown_cell("# A widget\n\nThe cost is $O(\\sqrt{n})$."),
        new_code_cell("from llmlab.widgets import checkpointing_widget\nfrom tqdm.auto import tqdm\n"
                      "for _ in tqdm(range(3), desc='steps'):\n    pass\n"
                      "w = checkpointing_widget(n_max=16, width=8, batch=2, n=8)\ndisplay(w.widget)"),
        new_code_cell("w.segments.value = 1"),
    ])
    path = tmp_path / "widget.ipynb"
    nbformat.write(nb, path)
    page = gallery.render(path, tmp_path / "out").read_text()
    expected = checkpointing_widget(n_max=16, width=8, batch=2, n=8)
    first = expected.readout.value
    expected.segments.value = 1
    assert expected.readout.value != first
    assert expected.readout.value in page and first not in page, "the page should show the driven state"
    assert "segments: <b>1</b>" in page and "layers n: <b>8</b>" in page
    assert page.count('class="llmlab-static-widget ') == 1
    widget = page[page.index('class="llmlab-static-widget '):]
    picture = re.search(r'<img [^>]*src="data:image/png;base64,([^"]+)"', widget)
    assert picture and Image.open(io.BytesIO(base64.b64decode(picture.group(1)))).size[0] > 100
    # tqdm's last state (nbconvert re-serialises the HTML: attributes in any order)
    assert re.search(r'<progress (?=[^>]*value="3.0")(?=[^>]*max="3.0")', page) and "3/3" in page
    assert gallery.WIDGET_VIEW not in page and not web_loads(page, tmp_path / "out")


def test_gallery_renders_one_notebook_with_figures(tmp_path):
    # The quickest notebook with figures keeps this test short; any would do.
    candidates = [ROOT / "notebooks" / n for n in ("03_cosine_lr.ipynb", "06_truncated_svd_images.ipynb")]
    nb = next((p for p in candidates if p.exists()), None)
    if nb is None:
        pytest.skip("no notebook with figures yet")
    index = gallery.build([nb], tmp_path)
    page = (tmp_path / f"{nb.stem}.html").read_text()
    figures = re.findall(r'<img[^>]+src="data:image/png;base64,', page)
    assert len(figures) >= 2, "the rendered page should embed the notebook's figures"
    assert "Traceback" not in page
    # Its widget is there as a picture of its last state, and nothing comes from a CDN.
    widget = page[page.index('class="llmlab-static-widget '):]
    assert re.search(r'<img [^>]*src="data:image/(png|bmp);base64,', widget)
    assert gallery.WIDGET_VIEW not in page and f'src="{gallery.MATHJAX_URL}"' in page and not web_loads(page, tmp_path)
    listing = index.read_text()
    assert f'href="{nb.stem}.html"' in listing and gallery.describe(nb)[0] in listing


def test_pages_load_no_mermaid_or_require_js_even_with_such_outputs(tmp_path):
    """nbconvert's template would fetch mermaid (+ ELK) for a diagram and require.js for JavaScript outputs."""
    nb = new_notebook(cells=[new_markdown_cell("# Diagrams\n\nA page with a diagram and a script output."),
                             new_code_cell("show()")])
    nb.cells[1].outputs = [
        nbformat.from_dict({"output_type": "display_data", "metadata": {},
                            "data": {"text/vnd.mermaid": "graph TD; A-->B", "text/plain": "<diagram>"}}),
        nbformat.from_dict({"output_type": "display_data", "metadata": {},
                            "data": {"application/javascript": "console.log(1)", "text/plain": "<script>"}}),
    ]
    path = tmp_path / "diagram.ipynb"
    nbformat.write(nb, path)
    page = gallery.render(path, tmp_path / "out", execute=False).read_text()
    assert "graph TD; A--&gt;B" in page or "graph TD; A-->B" in page  # the diagram's source, as text
    assert not web_loads(page, tmp_path / "out"), web_loads(page, tmp_path / "out")

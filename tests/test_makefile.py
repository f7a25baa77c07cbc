"""What the Makefile does for a first-time user, without installing anything.

- ``make setup`` installs ``jupyterlab/overrides.json`` into the venv's JupyterLab settings: no
  "get notified about Jupyter news?" toast, no update checks (the project runs offline). The same
  file configures the JupyterLab server of ``tests/test_browser.py``.
- Before the first install, on Linux without a visible NVIDIA GPU and without torch in the venv,
  ``make lab`` / ``make test`` say how to get PyTorch's CPU build (PyPI's default bundles CUDA).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ROOT / "jupyterlab" / "overrides.json"
NOTIFICATION = "@jupyterlab/apputils-extension:notification"
MAKE = shutil.which("make")

pytestmark = pytest.mark.skipif(MAKE is None, reason="needs make")


def _make(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **({"PATH": path} if path else {}))
    env.pop("MAKEFLAGS", None)
    return subprocess.run([MAKE, "-s", "--no-print-directory", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_overrides_turn_news_and_update_checks_off():
    overrides = json.loads(OVERRIDES.read_text())
    assert overrides[NOTIFICATION] == {"fetchNews": "false", "checkForUpdates": False}


def test_make_installs_the_overrides_where_jupyterlab_reads_them(tmp_path):
    venv = tmp_path / "venv"
    target = venv / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    proc = _make(f"VENV={venv}", str(target))
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == OVERRIDES.read_text()
    # JupyterLab's own settings code, given that folder, now defaults to no news and no update checks.
    from jupyterlab_server.settings_utils import get_settings

    schemas = Path(sys.prefix) / "share" / "jupyter" / "lab" / "schemas"
    if not (schemas / "@jupyterlab" / "apputils-extension" / "notification.json").exists():
        pytest.skip(f"JupyterLab's schemas are not in {schemas}")
    settings, _ = get_settings(str(target.parent), str(schemas), str(tmp_path / "user-settings"),
                               schema_name=NOTIFICATION)
    properties = settings["schema"]["properties"]
    assert properties["fetchNews"]["default"] == "false" and properties["checkForUpdates"]["default"] is False


def _fake(folder: Path, name: str, exit_code: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\nexit {exit_code}\n")
    (folder / name).chmod(0o755)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the hint is for Linux, where PyPI's torch bundles CUDA")
@pytest.mark.parametrize("gpu, torch_installed, hint", [(False, False, True), (True, False, False), (False, True, False)])
def test_cpu_hint_only_without_gpu_and_torch(tmp_path, gpu, torch_installed, hint):
    venv = tmp_path / "venv"
    _fake(venv / "bin", "python", 0 if torch_installed else 1)  # `python -c "import torch"` succeeds or not
    _fake(tmp_path / "tools", "nvidia-smi", 0 if gpu else 1)     # `nvidia-smi -L` finds a GPU or not
    proc = _make(f"VENV={venv}", "cpu-hint", path=f"{tmp_path / 'tools'}{os.pathsep}{os.environ['PATH']}")
    assert proc.returncode == 0, proc.stderr
    if hint:
        assert "download.pytorch.org/whl/cpu" in proc.stdout and f"{venv}/bin/python -m pip install torch" in proc.stdout
        assert "Continuing" not in proc.stdout  # no terminal: no pause
    else:
        assert proc.stdout == ""


def test_the_hint_comes_before_the_install_and_ci_skips_it():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(STAMP): $(BIN)/python pyproject.toml\n", 1)[1].split("\n\n", 1)[0]
    assert recipe.index("cpu-hint") < recipe.index("pip install"), "the hint must come before pip installs torch"
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index('pip install -q "torch==') < ci.index("make test"), "CI installs torch first, so it sees no hint"

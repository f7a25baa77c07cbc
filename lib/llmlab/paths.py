"""Where llmlab finds the data files it ships: one locator, one policy.

The texts we wrote (notebook 07's instruction set, notebook 09's animal corpus and labelled sets,
notebook 10's tokenization texts, notebook 11's prompting tasks and preference pairs) live inside
the package, in ``llmlab/datafiles/``, and are installed with it as package data. So they sit at
the same place next to the code however llmlab runs: from a clone (``PYTHONPATH=lib``), an
editable install (``make lab``) or a plain ``pip install`` of the repository (the Colab path).
Nothing searches the working directory and nothing is regenerated behind the reader's back: a
missing file is an error that names it and the script that writes it (``data/make_*.py``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DATA_FILES", "data_path"]

#: The package's data folder.
DATA_FILES = Path(__file__).resolve().parent / "datafiles"


def data_path(*parts: str) -> Path:
    """``DATA_FILES / parts...`` (a file or a folder), which must exist.

    ``FileNotFoundError`` names the missing path: the package was installed without its data (an
    old wheel), or a file was deleted; ``python data/make_<set>.py`` writes the generated sets again.
    """
    path = DATA_FILES.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: llmlab's data files ship inside the package "
                                f"(llmlab/datafiles); reinstall llmlab, or regenerate them with the scripts in data/")
    return path

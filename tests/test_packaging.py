"""Packaging contract: environment.yml lists the same dependencies as pyproject.toml, and the
README's first section gives exactly the two commands of the set-up contract."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge name where they differ
CONDA_NAMES = {"torch": "pytorch", "soundfile": "pysoundfile"}


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = project["optional-dependencies"].values()
    wanted = dict(_split(r) for r in project["dependencies"] + [r for g in groups for r in g if not r.startswith("mmkit[")])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    listed = {}
    for item in env["dependencies"]:
        if isinstance(item, dict):
            listed.update(_split(r) for r in item["pip"])
        else:
            name, spec = _split(item)
            if name not in ("python", "pip"):
                listed[name] = spec
    expected = {CONDA_NAMES.get(k, k): v for k, v in wanted.items()}
    pip_only = {k for k in expected if k not in listed and k in wanted}
    assert not pip_only, f"missing from environment.yml: {sorted(pip_only)}"
    assert set(listed) == set(expected), set(listed) ^ set(expected)
    for name, spec in expected.items():
        assert listed[name] == spec, f"{name}: pyproject '{spec}' vs environment.yml '{listed[name]}'"


def test_readme_first_section_has_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first = text.split("\n## ", 2)[1] if text.startswith("# ") else text.split("\n## ", 1)[0]
    commands = re.findall(r"^\s*(make \S+)\s*$", first, flags=re.M)
    assert commands == ["make reproduce", "make test"], commands


def test_no_deps_packages_are_installed_the_same_way_everywhere():
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mmkit"]["no-deps"]
    makefile = (ROOT / "Makefile").read_text()
    env = (ROOT / "environment.yml").read_text()
    for pin in pins:
        assert pin in makefile, f"Makefile does not install {pin}"
        assert pin in env, f"environment.yml does not mention {pin}"
    assert "--no-deps $(NO_DEPS)" in makefile

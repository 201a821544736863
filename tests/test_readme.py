"""The README in the order users come (issue 25, item 5): short, narrow lines, links that resolve,
a Python example that runs; LICENSE and CITATION.cff that say what pyproject says."""
import contextlib
import io
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    """The text of the README's ``## title`` section."""
    parts = re.split(r"^## ", README, flags=re.M)
    found = [p for p in parts if p.startswith(title + "\n")]
    assert len(found) == 1, f"README has no single section {title!r}"
    return found[0]


def test_readme_is_short_and_narrow():
    lines = README.split("\n")
    assert len(lines) < 150, len(lines)
    wide = [(i, len(line)) for i, line in enumerate(lines, 1) if len(line) > 120]
    assert not wide, f"lines over 120 characters (line, length): {wide}"


def test_readme_sections_come_in_the_order_users_need_them():
    titles = re.findall(r"^## (.+)$", README, flags=re.M)
    order = ["Quick start", "What mmkit is", "Install", "Use it interactively", "Python in ten lines", "Command line"]
    assert [t for t in titles if t in order] == order, titles
    assert titles[0] == "Quick start"
    about = [line for line in _section("What mmkit is").split("\n")[1:] if line and not line.startswith("![")]
    assert len(about) == 3, about
    assert "make lab" in _section("Use it interactively") and "00_start_here" in _section("Use it interactively")
    install = _section("Install")
    assert re.search(r"\d(\.\d)? GB", install) and re.search(r"\d(\.\d)? min", install), "install: disk and time"


def test_readme_links_and_figure_resolve():
    targets = re.findall(r"\]\(([^)#]+)\)", README)
    assert "docs/results.md" in targets and "docs/replication.md" in targets
    for target in ("docs/your_data.md", "docs/architecture.md", "docs/reliability.md", "LICENSE", "CITATION.cff"):
        assert target in targets, target
    for target in targets:
        assert (ROOT / target).exists(), target
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert len(figures) == 1 and figures[0].startswith("reports/figures/")


def test_license_is_the_mit_licence_pyproject_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 The mmkit authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text


def test_citation_cff_has_the_required_keys():
    """CFF 1.2.0: cff-version, message, title and authors are required; a reference needs type,
    title and authors. The paper mmkit reproduces is cited with its three authors."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title"):
        assert isinstance(cff[key], str) and cff[key].strip(), key
    assert cff["authors"] and all("name" in a or "family-names" in a for a in cff["authors"])
    assert cff["license"] == project["license"] and cff["version"] == project["version"]
    papers = [r for r in cff["references"] if "Harnessing the Power of Distributions" in r["title"]]
    assert len(papers) == 1
    paper = papers[0]
    assert paper["type"] == "conference-paper" and paper["year"] == 2024 and "ISMIR 2024" in paper["conference"]["name"]
    assert [a["family-names"] for a in paper["authors"]] == ["Nakatsuka", "Hamasaki", "Goto"]
    for ref in cff["references"]:
        assert {"type", "title", "authors"} <= set(ref)


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The ten lines, as printed, against a Proposed run trained (one epoch) on the synthetic bundle
    at the path the example names, inside a temporary folder."""
    from mmkit.__main__ import main

    blocks = re.findall(r"```python\n(.*?)```", _section("Python in ten lines"), flags=re.S)
    assert len(blocks) == 1
    code = blocks[0]
    assert len([line for line in code.split("\n") if line.strip()]) <= 10
    path = re.search(r'Run\("([^"]+)"\)', code).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMKIT_CACHE", str(tmp_path / "cache"))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--method", "proposed", "--epochs", "1", "--out", path, "--no-progress"]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue().split("\n")
    rank, n = map(int, re.fullmatch(r"true caption at rank (\d+) of (\d+)", printed[0]).groups())
    assert 1 <= rank <= n
    assert printed[1].startswith("['synthetic item") and "query audio kappa:" in printed[1]

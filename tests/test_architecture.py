"""The architecture checks of `make test` can fail: an upward import breaks the import-linter
layer contract, a training import in inference breaks the forbidden contract, an undeclared
third-party import fails deptry. Each check runs on a copy of the package with one injected line."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "mmkit", tmp_path / "mmkit", ignore=shutil.ignore_patterns("__pycache__", "notebooks"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _inject(root: Path, module: str, line: str) -> None:
    path = root / "mmkit" / module
    path.write_text(path.read_text() + f"\n{line}\n")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": str(BIN)}, timeout=300)


def test_the_contracts_hold_on_the_package(tmp_path):
    done = _lint(_copy(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:]
    assert "3 kept, 0 broken" in done.stdout


LAYERS = "Layers: each package imports only from the layers below it"
NO_TRAINING = "Inference, evaluation, figures and widgets never import the training loop"
DATA = "Data: format and cache know no builder; embedded never imports user"


@pytest.mark.parametrize("module,line,broken", [
    ("core/special.py", "import mmkit.model.run", LAYERS),                    # core reaching up to model
    ("data/bundle/format.py", "from mmkit.retrieval import score", LAYERS),   # data reaching up to retrieval
    ("data/embedded/build.py", "import mmkit.data.user.items", DATA),           # embedded build reaching users' data
    ("data/bundle/format.py", "from mmkit.data.embedded import build", DATA),  # the format reaching a builder
    ("data/cache.py", "import mmkit.data.resolve", DATA),                      # the old build <-> resolve circle
    ("model/run.py", "from mmkit.training.loop import fit", NO_TRAINING),
    ("app/widgets.py", "import mmkit.training", NO_TRAINING),                  # app sits beside training
])
def test_an_injected_upward_import_breaks_a_contract(tmp_path, module, line, broken):
    root = _copy(tmp_path)
    _inject(root, module, line)
    done = _lint(root)
    assert done.returncode != 0
    assert f"{broken} BROKEN" in done.stdout, done.stdout[-3000:]


def test_deptry_passes_and_fails_on_an_undeclared_import(tmp_path):
    root = _copy(tmp_path)
    deptry = [str(BIN / "deptry"), ".", "--no-ansi"]
    clean = subprocess.run(deptry, cwd=root, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]
    _inject(root, "viz/style.py", "import seaborn_is_not_declared")
    dirty = subprocess.run(deptry, cwd=root, capture_output=True, text=True, timeout=300)
    assert dirty.returncode != 0
    assert "DEP001 'seaborn_is_not_declared' imported but missing from the dependency definitions" in \
        dirty.stdout + dirty.stderr

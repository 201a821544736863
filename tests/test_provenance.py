"""Run provenance (issue 24, item 2): the code version is recorded when training starts, kept on
resume (a resuming process's differing version beside it), and stored by the study runner."""
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

import mmkit
from mmkit.data import load_bundle, make_synthetic_bundle
from mmkit.model import run as run_module
from mmkit.model.config import TrainConfig
from mmkit.model.run import Run, code_version
from mmkit.training.loop import fit

TINY = dict(method="baseline", epochs=2, batch_size=16, hidden=16, dim=8, n_samples=4, n_projections=8, layers=1)


def _package(root: Path) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("x = 1\n")
    (root / "pkg" / "sub" / "mod.py").write_bytes(b"def f():\n    return 2\n")
    (root / "pkg" / "notes.txt").write_text("not code")
    return root / "pkg"


def _expected_hash(files: dict[str, bytes]) -> str:
    """The documented recipe: per file in path order, path, NUL, 8-byte big-endian size, bytes."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + len(files[rel]).to_bytes(8, "big") + files[rel])
    return h.hexdigest()


def test_source_hash_follows_every_python_file_outside_git(tmp_path):
    pkg = _package(tmp_path)
    version = code_version(pkg)
    assert version == {"commit": None, "dirty": None, "recorded": "start",
                       "source_sha256": _expected_hash({"__init__.py": b"x = 1\n",
                                                        "sub/mod.py": b"def f():\n    return 2\n"}),
                       "training_sha256": _expected_hash({})}  # no training code in this package
    (pkg / "notes.txt").write_text("edited")  # not a source file
    assert code_version(pkg)["source_sha256"] == version["source_sha256"]
    (pkg / "sub" / "mod.py").write_bytes(b"def f():\n    return 3\n")  # one byte of code
    assert code_version(pkg)["source_sha256"] != version["source_sha256"]
    (pkg / "sub" / "mod.py").write_bytes(b"def f():\n    return 2\n")
    assert code_version(pkg)["source_sha256"] == version["source_sha256"]
    (pkg / "sub" / "mod.py").rename(pkg / "sub" / "other.py")  # same bytes, another path
    assert code_version(pkg)["source_sha256"] != version["source_sha256"]
    with pytest.raises(ValueError, match="not a directory"):
        code_version(tmp_path / "missing")


def test_training_hash_covers_only_the_code_that_determines_a_trained_model(tmp_path):
    """training_sha256 follows core/, data/, ..., pipeline/study.py and analysis/evaluate.py (the
    documented list) by the same recipe, and ignores the analysis of stored runs, figures, the CLI."""
    pkg = tmp_path / "pkg"
    files = {"core/ssw.py": b"a = 1\n", "data/x.py": b"b\n", "model/m.py": b"c\n", "training/loop.py": b"d\n",
             "retrieval/s.py": b"e\n", "vocab.py": b"f\n", "pipeline/study.py": b"g\n",
             "analysis/evaluate.py": b"h\n"}
    other = {"analysis/study.py": b"i\n", "viz/fig.py": b"j\n", "pipeline/reproduce.py": b"k\n",
             "__main__.py": b"l\n", "core_notes.py": b"m\n"}
    for rel, data in {**files, **other}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(data)
    version = code_version(pkg)
    assert version["training_sha256"] == _expected_hash(files)
    assert version["source_sha256"] == _expected_hash({**files, **other})
    for rel in other:  # analysis, figures, the CLI: the training hash stays
        (pkg / rel).write_bytes(b"changed\n")
    changed = code_version(pkg)
    assert changed["training_sha256"] == version["training_sha256"]
    assert changed["source_sha256"] != version["source_sha256"]
    for rel in files:  # any one byte of training code changes it
        (pkg / rel).write_bytes(files[rel] + b"#")
        assert code_version(pkg)["training_sha256"] != version["training_sha256"], rel
        (pkg / rel).write_bytes(files[rel])
    assert set(run_module.TRAINING_CODE) == {"core/", "data/", "model/", "training/", "retrieval/", "vocab.py",
                                             "pipeline/study.py", "analysis/evaluate.py"}
    real = code_version()  # the installed package: a hash of its own training code
    assert len(real["training_sha256"]) == 64 and real["training_sha256"] != real["source_sha256"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_commit_and_dirty_flag_in_a_work_tree(tmp_path):
    pkg = _package(tmp_path)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q"], check=True)
    assert code_version(pkg)["commit"] is None  # a work tree, but the package is not tracked
    subprocess.run(git + ["add", "pkg"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "c"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    clean = code_version(pkg)
    assert clean["commit"] == head and clean["dirty"] is False
    (tmp_path / "README").write_text("outside the package")  # neither tracked nor package code
    (pkg / "new.py").write_text("y = 2\n")  # untracked: the hash sees it, the dirty flag does not
    untracked = code_version(pkg)
    assert untracked["dirty"] is False and untracked["source_sha256"] != clean["source_sha256"]
    (pkg / "__init__.py").write_text("x = 2\n")  # a tracked file changed
    assert code_version(pkg)["dirty"] is True


def test_the_default_root_is_the_imported_package():
    version = code_version()
    assert version == code_version(Path(mmkit.__file__).parent)
    assert len(version["source_sha256"]) == 64 and version["recorded"] == "start"
    assert run_module.provenance()["git_commit"] == version["commit"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_bundle(make_synthetic_bundle(tmp_path_factory.mktemp("bundle") / "b", n_items=(48, 20, 20),
                                             dims={"audio": 12, "image": 10, "text": 8}, seed=2))


def test_manifest_records_the_start_version_and_resumes_keep_it(data, tmp_path, monkeypatch):
    config = TrainConfig(seed=0, **TINY)
    out = tmp_path / "run"
    assert fit(config, data, out, progress=False, stop_after_steps=1)["interrupted"]  # no epoch finished
    start = Run(out).manifest
    assert start["status"] == "running" and start["code_version"] == code_version()
    assert start["git_commit"] == start["code_version"]["commit"] and "resumed_code_versions" not in start
    # killed inside epoch 1 (after epoch 0's checkpoint; 3 steps an epoch), resumed by a process with other code
    assert fit(config, data, out, progress=False, stop_after_steps=4)["interrupted"]
    other = {**code_version(), "source_sha256": "0" * 64}
    monkeypatch.setattr(run_module, "code_version", lambda root=None: dict(other))
    assert fit(config, data, out, progress=False, stop_after_steps=1)["interrupted"]
    resumed = Run(out).manifest
    assert resumed["code_version"] == start["code_version"] and resumed["git_commit"] == start["git_commit"]
    assert resumed["resumed_code_versions"] == [{"commit": other["commit"], "dirty": other["dirty"],
                                                 "source_sha256": "0" * 64, "recorded": "resume", "resume": 1}]
    monkeypatch.undo()  # the start's code again: nothing new to record
    fit(config, data, out, progress=False)
    final = Run(out).manifest
    assert final["status"] == "finished" and final["resumes"] == 2
    assert final["code_version"] == start["code_version"] and len(final["resumed_code_versions"]) == 1


def test_study_stores_the_start_version_not_the_end_one(data, tmp_path, monkeypatch):
    """The training finishes with one code version; the study's store step runs under another:
    the stored JSON holds the start's (and lists the other as a resume)."""
    from mmkit.pipeline import study
    from mmkit.pipeline.study import grid, result_path, run_one

    monkeypatch.setitem(study.EVALUATION, "distances", ("cosine",))  # SSW's evaluation is not under test
    spec = grid(["E1"], data=str(data["train"].root), seeds=[0],
                overrides={k: v for k, v in TINY.items() if k != "method"})[0]
    fit(spec.config(), {"train": data["train"], "val": data["val"]}, tmp_path / "work" / "E1" / spec.name,
        progress=False)
    start = code_version()
    later = {**start, "commit": "f" * 40, "source_sha256": "1" * 64}
    monkeypatch.setattr(run_module, "code_version", lambda root=None: dict(later))
    assert run_one(spec, store=tmp_path / "store", work=tmp_path / "work")["status"] == "done"
    stored = json.loads(result_path(spec, tmp_path / "store").read_text())
    assert stored["code_version"] == start and stored["git_commit"] == start["commit"]
    assert stored["resumed_code_versions"][0]["source_sha256"] == "1" * 64
    assert stored["stopped_epoch"] == 1 and {"kappa_audio_cv", "kappa_text_q50"} <= set(stored["history"][-1])

"""The study runner (docs/study.md): the grid follows the protocol, every run's evaluation is stored
with what the analysis needs, stored runs are skipped, and the same grid runs through submitit."""
import json
from pathlib import Path

import numpy as np
import pytest

from mmkit.data.perturb import chosen, perturbation_order
from mmkit.pipeline.study import EXPERIMENTS, grid, load_results, missing_runs, result_path, run_grid

SMALL = {"epochs": 1, "batch_size": 16, "hidden": 16, "layers": 1, "n_samples": 4, "n_projections": 8}


def test_the_grid_follows_the_protocol():
    e1 = grid(["E1"])
    assert len(e1) == 40 and [s.seed for s in e1[:4]] == [0] * 4  # seeds outermost: a seed block is a paired set
    assert {s.variant for s in e1} == {"baseline", "proposed", "debiased", "proposed-0.1"}
    configs = {s.variant: s.config() for s in e1[:4]}
    assert configs["baseline"].lambda_s == 0 and configs["proposed"].lambda_s == 1
    assert configs["debiased"].debiased_ssw and configs["proposed-0.1"].lambda_s == 0.1
    assert all(c.epochs == 20 and c.batch_size == 128 and c.hidden == 256 and c.threads == 1 for c in configs.values())
    e2 = {s.level: s.config() for s in grid(["E2"], seeds=[0]) if s.variant == "baseline"}
    assert {n: (c.batch_size, c.steps_per_epoch) for n, c in e2.items()} == {
        100: (100, 12), 200: (128, 12), 400: (128, 12), 800: (128, 12)}
    e7 = {s.level: s.config() for s in grid(["E7"], seeds=[0]) if s.variant == "proposed"}
    assert {k: (c.contrastive, c.batch_size) for k, c in e7.items()} == {
        "pcme-b128": ("pcme", 128), "pcme-b32": ("pcme", 32), "infonce-b32": ("infonce", 32)}
    e8 = {s.variant: s.config() for s in grid(["E8"], seeds=[0])}
    assert set(e8) == {"baseline", "proposed"} and all(c.as_published for c in e8.values())
    assert not any(s.config().as_published for e in EXPERIMENTS if e != "E8" and EXPERIMENTS[e].round == 1
                   for s in grid([e], seeds=[0]))
    first = [e for e in EXPERIMENTS if EXPERIMENTS[e].round == 1]  # the second round: tests/test_study_round2.py
    assert first == [f"E{k}" for k in range(1, 10)]
    assert sum(len(grid([e])) for e in first) == 40 + 60 + 30 + 30 + 30 + 15 + 45 + 10 + 10
    with pytest.raises(ValueError, match="unknown experiment"):
        grid(["E42"])


def test_runs_are_stored_complete_and_skipped_once_done(tiny, tmp_path, capsys):
    data = str(tiny["data"]["train"].root)
    specs = [s for s in grid(["E3"], data=data, overrides=SMALL, seeds=[0]) if s.level == 0.4 and s.variant != "proposed"]
    lines = []
    results = run_grid(specs, store=tmp_path / "store", work=tmp_path / "work", jobs=2, log=lines.append)
    assert [r["status"] for r in results] == ["done", "done"]
    assert not any("test" in line.lower() for line in lines)  # the runner never reports test metrics
    stored = {r["variant"]: r for r in load_results("E3", tmp_path / "store")}
    assert set(stored) == {"baseline", "debiased"}
    train, test = tiny["data"]["train"], tiny["data"]["test"]
    rows = chosen(perturbation_order(len(train), 3, 0), 0.4)
    for variant, r in stored.items():
        assert r["config"]["debiased_ssw"] == (variant == "debiased") and r["config"]["epochs"] == 1
        assert r["perturbation"]["items"] == train.ids[rows].tolist()
        assert sorted(r["splits"]) == ["test", "train", "val"] and r["splits"]["test"]["ids"] == test.ids.tolist()
        for distance in ("ssw", "cosine"):
            tasks = r["splits"]["test"]["distances"][distance]
            assert len(tasks) == 9
            for metrics in tasks.values():  # the stored ranks reproduce the stored metrics
                ranks = np.array(metrics["ranks"])
                assert len(ranks) == len(test) and metrics["MRR"] == pytest.approx(np.mean(1 / ranks), rel=1e-5)
                assert metrics["R@10"] == pytest.approx(100 * np.mean(ranks <= 10), rel=1e-5)
        kappa = r["splits"]["train"]
        assert len(kappa["kappa_items"]["text"]) == len(train) and kappa["ids"] == train.ids.tolist()
        assert kappa["kappa"]["audio"]["q05"] <= kappa["kappa"]["audio"]["q50"] <= kappa["kappa"]["audio"]["q95"]
        assert "git_commit" in r and len(r["data_sha256"]) == 64 and r["train_sha256"] != r["data_sha256"]
    again = run_grid(specs, store=tmp_path / "store", work=tmp_path / "work", jobs=2, log=lines.append)
    assert again == [] and "2 stored, 0 to run" in lines[-1]
    # a run stored before a TrainConfig setting existed (at its default) is still the same run
    path = result_path(specs[0], tmp_path / "store")
    older = json.loads(path.read_text())
    del older["config"]["as_published"]
    path.write_text(json.dumps(older))
    assert run_grid(specs, store=tmp_path / "store", work=tmp_path / "work", jobs=2, log=lines.append) == []
    older["config"]["epochs"] = 2  # another setting: not the same run
    path.write_text(json.dumps(older))
    assert specs[0].name in missing_runs("E3", tmp_path / "store", data=data, overrides=SMALL, seeds=[0])
    assert [r["run"] for r in run_grid(specs[:1], store=tmp_path / "store", work=tmp_path / "work2", jobs=1,
                                       log=lines.append)] == [specs[0].name]
    e1 = grid(["E1"], data=data, overrides=SMALL, seeds=[0])[0]
    run_grid([e1], store=tmp_path / "store", work=tmp_path / "work", jobs=1, log=lines.append)
    clean = load_results("E1", tmp_path / "store")[0]["splits"]
    assert sorted(clean) == ["test", "train", "val"] and "kappa_items" not in clean["train"]  # κ summaries only
    assert set(clean["train"]["kappa"]) == {"audio", "image", "text"}
    assert missing_runs("E3", tmp_path / "store", data=data, overrides=SMALL, seeds=[0]) == \
        ["0.2-baseline-s0", "0.2-proposed-s0", "0.2-debiased-s0", "0.4-proposed-s0"]


def test_the_grid_runs_through_submitit(tiny, tmp_path):
    data = str(tiny["data"]["train"].root)
    spec = next(s for s in grid(["E5"], data=data, overrides=SMALL, seeds=[1]) if s.level == 0.6)
    results = run_grid([spec], store=tmp_path / "store", work=tmp_path / "work", executor="local", log=lambda _: None)
    assert results[0]["status"] == "done"
    stored = json.loads(Path(result_path(spec, tmp_path / "store")).read_text())
    dropped = stored["perturbation"]["dropped"]
    assert len(dropped) == round(0.6 * len(tiny["data"]["train"])) and set(dropped) <= {"audio", "image", "text"}
    present = stored["splits"]["train"]["present"]
    assert sum(len(p) - sum(p) for p in present.values()) == len(dropped)


def test_as_published_runs_store_the_descriptive_ranking(tiny, tmp_path):
    """E8 trains with the reference code's defects and stores, besides the two correct rankings, the
    descriptive one with the same defects (docs/study.md §5), from which the analysis reports rows
    without verdicts."""
    data = str(tiny["data"]["train"].root)
    spec = next(s for s in grid(["E8"], data=data, overrides=SMALL, seeds=[0]) if s.variant == "proposed")
    run_grid([spec], store=tmp_path / "store", work=tmp_path / "work", jobs=1, log=lambda _: None)
    stored = load_results("E8", tmp_path / "store")[0]
    assert stored["config"]["as_published"] is True
    for split in ("val", "test"):
        distances = stored["splits"][split]["distances"]
        assert sorted(distances) == ["cosine", "ssw", "ssw-as-published"] and len(distances["ssw-as-published"]) == 9
        assert distances["ssw-as-published"] != distances["ssw"]


def test_backbone_runs_go_through_the_same_runner(tiny, tmp_path):
    """E9 (CNN backbones over raw inputs, the paper's setting) runs and stores like the heads runs,
    so a later session (or a lent GPU) only has to run the grid."""
    data = str(tiny["data"]["train"].root)
    spec = next(s for s in grid(["E9"], data=data, overrides={**SMALL, "backbone_width": 4}, seeds=[0])
                if s.variant == "baseline")
    assert spec.config().encoder == "backbones"
    results = run_grid([spec], store=tmp_path / "store", work=tmp_path / "work", jobs=1, log=lambda _: None)
    assert results[0]["status"] == "done"
    stored = load_results("E9", tmp_path / "store")[0]
    assert stored["config"]["encoder"] == "backbones" and len(stored["splits"]["test"]["distances"]["ssw"]) == 9

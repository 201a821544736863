"""The reproduce pipeline: dependency order, skip-if-unchanged, tables written from the runs."""
import csv
import json
from pathlib import Path

import pytest

from mmkit.pipeline.reproduce import plan, run_plan, step_key


def test_plan_shape():
    steps = plan("quick")
    names = [s.name for s in steps]
    assert names[0] == "dataset" and names[-4:] == ["evaluate", "ablation", "sphere", "runtime"]
    trains = [s for s in steps if s.name.startswith("train-")]
    assert len(trains) == 3 * 10  # baseline, pcme, mpc, ls_only, proposed at 1e-12 and the five sweep values
    assert all(s.after == ("dataset",) for s in trains)
    by_name = {s.name: s for s in steps}
    main = json.loads(by_name["evaluate"].parameters["runs"])
    assert len(main) == 4 * 3 and all(any(m in r for m in ("baseline-", "pcme-", "mpc-", "proposed-l1-")) for r in main)
    assert len(json.loads(by_name["ablation"].parameters["runs"])) == 8 * 3  # proposed x 6, baseline, ls_only
    assert by_name["runtime"].exclusive and not any(s.exclusive for s in steps[:-1])
    assert set(by_name["runtime"].after) == {s.name for s in trains}


def test_paper_plan_and_backbone_encoder():
    """`paper`: full data, 5 seeds; `--encoder backbones` reaches every training step (and only those)."""
    steps = plan("paper", encoder="backbones")
    trains = [s for s in steps if s.name.startswith("train-")]
    assert steps[0].parameters["data"] == "full" and len(trains) == 5 * 10
    assert all(s.parameters["encoder"] == "backbones" and s.parameters["epochs"] == 40 for s in trains)
    assert not any("encoder" in s.parameters for s in steps if not s.name.startswith("train-"))
    assert "encoder" not in plan("paper")[1].parameters  # the notebook's default: heads
    with pytest.raises(ValueError, match="encoder"):
        plan("quick", encoder="resnet")


def test_smoke_pipeline_runs_then_skips(tiny, tmp_path):
    data = str(Path(tiny["data"]["train"].root))
    runs_dir, tables = tmp_path / "runs", tmp_path / "tables"
    figures = tmp_path / "figures"
    steps = plan("smoke", data=data, runs_dir=str(runs_dir), tables_dir=str(tables), figures_dir=str(figures))
    log = []
    status = run_plan(steps, runs_dir=runs_dir, jobs=2, log=log.append)
    assert set(status.values()) == {"ran"}
    assert log[-1].endswith("runtime: ran (alone)")
    for name in ("recall_image", "recall_text", "recall_audio", "lambda_sweep", "lambda_limits", "runtime"):
        assert (tables / f"{name}.md").is_file() and (tables / f"{name}.tex").is_file()
    assert "Proposed / Baseline" in (tables / "runtime.md").read_text()
    for name in ("lambda_sweep", "kappa_reliability", "runtime", "sphere_projection_print"):
        assert all((figures / f"{name}.{ext}").stat().st_size > 0 for ext in ("pdf", "svg", "png"))
    assert (figures / "sphere_projection.html").stat().st_size > 0
    with open(tables / "lambda_sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["lambda_s"] for r in rows} == {"1e-12", "0.01", "0.1", "1", "10", "100"}
    assert list(rows[0]) == ["dataset", "method", "task", "metric", "lambda_s", "distance", "mean", "std", "n_seeds"]
    again = run_plan(steps, runs_dir=runs_dir, jobs=2, log=lambda *_: None)
    assert set(again.values()) == {"skipped"}
    tweaked = steps[1].__class__(**{**steps[1].__dict__, "parameters": {**steps[1].parameters, "epochs": 3}})
    assert step_key(tweaked, ["x"]) != step_key(steps[1], ["x"])  # a changed parameter re-runs the step
    assert step_key(steps[1], ["y"]) != step_key(steps[1], ["x"])  # so does a changed dependency

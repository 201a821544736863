"""mmkit.pipeline.kappa_search: the runner on a synthetic bundle with views, the decision rule on hand-made numbers."""
import json

import pytest

from mmkit.__main__ import main
from mmkit.data.bundle import make_synthetic_bundle
from mmkit.pipeline import kappa_search as K


def test_the_declared_grid():
    specs = K.grid()
    assert len(K.SETTINGS) == 14 and len(specs) == 56  # reference + 12 log-head settings + softplus at lr x10
    config = K.SearchSpec("log-s0.5-lr10-k30", "proposed", 1).config()
    assert (config.kappa_head, config.kappa_scale, config.kappa_lr_scale, config.kappa_init) == ("log", 0.5, 10.0, 30.0)
    assert (config.method, config.lambda_s, config.seed, config.epochs, config.patience) == ("proposed", 1.0, 1, 60, 8)
    assert (config.hidden, config.layers, config.batch_size, config.train_views) == (256, 2, 128, "sample")
    reference = K.SearchSpec("reference", "baseline", 0).config()
    assert (reference.kappa_head, reference.kappa_init, reference.kappa_lr_scale, reference.lambda_s) == \
        ("softplus", 100.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="unknown setting"):
        K.grid(["nope"])


@pytest.mark.slow
def test_runner_writes_resumes_and_summarises(tmp_path, capsys):
    bundle = make_synthetic_bundle(tmp_path / "syn", n_items=(200, 60, 10), truth=True, views=3)
    out, runs = tmp_path / "out", tmp_path / "runs"
    specs = K.grid(["reference", "log-s1-lr10-k30"], ["baseline", "proposed"], [0], epochs=2)
    done = K.run_search(specs, str(bundle), out=out, runs_dir=runs, jobs=1, log=lambda *a: None)
    assert [d["status"] for d in done] == ["done"] * 4
    record = json.loads((out / "log-s1-lr10-k30-proposed-s0.json").read_text())
    assert record["split"] == "val" and record["config"]["kappa_head"] == "log" and record["stopped_epoch"] == 1
    assert set(record["code_version"]) >= {"commit", "source_sha256"}
    assert set(record["cv"]) == {"audio", "image", "text"} and set(record["rho_severity"]) == {"audio", "image"}
    assert -1 <= record["rho_generality"]["rho"] <= 1 and 0 <= record["auroc_severe"]["audio"] <= 1
    assert len(record["selective"]) == 6 and "combined_minus_margin" in record["selective"]["text->image"]
    assert record["val_score"] == pytest.approx(json.loads((runs / "log-s1-lr10-k30-proposed-s0" / "metrics.json")
                                                           .read_text())["val_score"])
    stamp = (out / "reference-baseline-s0.json").stat().st_mtime_ns
    assert K.run_search(specs, str(bundle), out=out, runs_dir=runs, jobs=1, log=lambda *a: None) == []
    assert (out / "reference-baseline-s0.json").stat().st_mtime_ns == stamp
    assert main(["search-kappa", "--summarise", "--out", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "4 of 56 runs" in summary and "PARTIAL" in summary and "**yes**" not in summary
    assert "| reference | 2 |" in summary and "of 12 |" in summary  # 2 runs x 6 tasks, query kappa vs margin


def _row(setting, mrr, cvs, rho_a, rho_i):
    return {"setting": setting, "runs": 4, "val_score": mrr, "cv": dict(zip(("audio", "image", "text"), cvs)),
            "rho_audio": rho_a, "rho_image": rho_i, "rho_text": -0.1}


def test_decision_rule_on_hand_made_numbers():
    rows = [_row("reference", 0.500, (0.01, 0.01, 0.01), -0.05, -0.05),
            _row("a", 0.495, (0.20, 0.15, 0.01), -0.40, -0.20),   # admissible, mean rho -0.30
            _row("b", 0.489, (0.20, 0.15, 0.20), -0.60, -0.60),   # MRR more than 0.01 below: not admissible
            _row("c", 0.499, (0.20, 0.05, 0.05), -0.90, -0.90),   # CV >= 10 % in one modality only
            _row("d", 0.498, (0.30, 0.30, 0.30), -0.29, -0.30),   # mean -0.295: ties with a, higher MRR
            _row("e", 0.510, (0.30, 0.30, 0.30), -0.10, -0.10)]   # admissible, far from the best rho
    decision = K.decide(rows)
    assert decision["admissible"] == {"reference": False, "a": True, "b": False, "c": False, "d": True, "e": True}
    assert decision["chosen"] == "d" and decision["default"] == "d" and decision["finding"] is None
    rows[4] = _row("d", 0.498, (0.30, 0.30, 0.30), -0.20, -0.20)  # now a is 0.1 better: no tie
    assert K.decide(rows)["chosen"] == "a"
    weak = [_row("reference", 0.5, (0.2, 0.2, 0.2), -0.1, -0.1), _row("a", 0.5, (0.2, 0.2, 0.2), -0.29, -0.25)]
    finding = K.decide(weak)
    assert finding["chosen"] is None and finding["default"] == "reference" and "-0.3" in finding["finding"]
    none = K.decide([_row("reference", 0.5, (0.01, 0.2, 0.01), -0.5, -0.5)])
    assert none["chosen"] is None and "no setting is admissible" in none["finding"]

"""The pretrained demo pair shipped for the start-here notebook (issue 25 item 3): the exclusion of the
near-duplicate groups of `tiny` (a known answer on a synthetic bundle), `python -m mmkit demo-runs`
end to end on synthetic data, and the shipped pair itself (its card matches its files, it loads
read-only and encodes features of tiny's shape). Its notebook path is tests/test_start_here.py's."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmkit.analysis.evaluate import evaluate_run
from mmkit.app.demo import (CARD_JSON, CARD_MD, DEMO_NAMES, DEMO_RUNS, SHIPPED_FILES, demo_card, demo_distance,
                            demo_runs, demo_summary, verify_demo_runs)
from mmkit.app.widgets import RetrievalSession
from mmkit.data.bundle import FeatureSplit, load_bundle, make_synthetic_bundle, save_bundle
from mmkit.model.run import Run, data_fingerprint
from mmkit.pipeline.demo import DEMO_DISTANCES, DISTANCE_MARGIN, DISTANCE_RULE, excluded_groups, without_groups

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")


def _grouped_bundle(folder: Path, groups: dict[str, list[str]], seed: int = 0) -> Path:
    """A synthetic bundle (learnable cross-modal structure) whose items carry the given group labels."""
    raw = make_synthetic_bundle(folder / "raw", n_items=tuple(len(groups[s]) for s in SPLITS), seed=seed)
    arrays = {}
    for s in SPLITS:
        with np.load(raw / f"{s}.npz") as npz:
            arrays[s] = {**{k: npz[k] for k in npz.files}, "group": np.array(groups[s])}
    return save_bundle(folder / "bundle", arrays, name=f"grouped-{folder.name}")


def test_exclusion_leaves_out_exactly_the_items_of_groups_seen_in_the_reference(tmp_path):
    data = load_bundle(_grouped_bundle(tmp_path / "data", {
        "train": ["g1", "g2", "g2", "g3", "g4", "g5", "g5", "g6"],
        "val": ["g9", "g7", "g9"], "test": ["g8", "g1"]}))
    reference = load_bundle(_grouped_bundle(tmp_path / "ref", {
        "train": ["g2", "x1"], "val": ["g5"], "test": ["g9", "x2"]}, seed=1))
    assert excluded_groups(reference) == {"g2", "x1", "g5", "g9", "x2"}
    train, dropped = without_groups(data["train"], excluded_groups(reference))
    ids = data["train"].ids
    assert dropped == 4 and train.ids.tolist() == [ids[0], ids[3], ids[4], ids[7]]       # g1, g3, g4, g6
    assert train.meta["group"].tolist() == ["g1", "g3", "g4", "g6"]
    for m in ("audio", "image", "text"):                                                # features follow their rows
        assert np.array_equal(train.features[m], data["train"].features[m][[0, 3, 4, 7]])
    val, dropped = without_groups(data["val"], excluded_groups(reference))
    assert dropped == 2 and val.ids.tolist() == [data["val"].ids[1]]                    # only g7 is left
    with pytest.raises(ValueError, match="every one of the 3 items"):
        without_groups(data["val"], {"g7", "g9"})
    plain = FeatureSplit(ids=np.array(["a"]), features={"audio": np.zeros((1, 2), np.float32)},
                         present={"audio": np.ones(1, bool)})
    with pytest.raises(ValueError, match="no per-item 'group' labels"):
        without_groups(plain, {"g1"})
    with pytest.raises(ValueError, match="no per-item 'group' labels"):
        excluded_groups({"train": plain})


def test_demo_runs_command_trains_ships_only_inference_files_and_writes_a_matching_card(tmp_path):
    # pairs of neighbours share a group: tr0 tr0 tr1 tr1 ... in train, va0 va0 ... in val, te0 ... in test
    groups = {s: [f"{s[:2]}{i // 2}" for i in range(n)] for s, n in zip(SPLITS, (300, 60, 60))}
    data = _grouped_bundle(tmp_path / "data", groups)
    reference = _grouped_bundle(tmp_path / "ref", {"train": ["tr0", "tr7"], "val": ["va3", "x100"], "test": ["tr25", "x1"]})
    settings = tmp_path / "round2.json"
    settings.write_text(json.dumps({"kappa": {"kappa_head": "log", "kappa_init": 30.0}, "pseudo_positive_weight": 0.01,
                                    "recorded_in": "docs/hyperparameters.md"}))
    out, work = tmp_path / "shipped", tmp_path / "work"
    done = subprocess.run([sys.executable, "-m", "mmkit", "demo-runs", "--data", str(data), "--exclude", str(reference),
                           "--out", str(out), "--work", str(work), "--settings", str(settings), "--epochs", "2",
                           "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"written to {out}" in done.stdout and "# The pretrained demo pair" in done.stdout

    # the training data: every item but those of tr0, tr7, tr25 (train) and va3 (val), two items each
    full = load_bundle(data)
    left_out = {"tr0", "tr7", "va3", "x100", "tr25", "x1"}
    keep = {s: [i for i, g in enumerate(groups[s]) if g not in left_out] for s in ("train", "val")}
    assert len(keep["train"]) == 300 - 6 and len(keep["val"]) == 60 - 2
    card = demo_card(out)
    assert card["train_items"] == 294 and card["val_items"] == 58
    assert card["left_out_items"] == {"train": 6, "val": 2} and card["excluded"]["groups"] == 6
    assert card["command"].startswith("python -m mmkit demo-runs --data ") and "--epochs 2" in card["command"]
    assert card["data"]["bundle"] == "grouped-data" and card["excluded"]["bundle"] == "grouped-ref"
    assert card["data"]["manifest_sha256"] == _sha256(data / "manifest.json")

    for name, (folder, method, lam) in DEMO_NAMES.items():
        assert sorted(p.name for p in (out / folder).iterdir()) == sorted(SHIPPED_FILES)     # no checkpoints
        run = Run(out / folder)
        assert (run.config.method, run.config.lambda_s, run.config.kappa_head, run.config.kappa_init) == \
            (method, lam, "log", 30.0)
        assert run.config.to_dict() == card["runs"][name]["config"] and run.config.epochs == 2
        assert run.metrics["best_epoch"] == card["runs"][name]["best_epoch"]
        # trained on exactly the kept items (the data hash of the run's manifest, recomputed from ids)
        subset = {s: _rows(full[s], keep[s]) for s in ("train", "val")}
        assert run.manifest["data_sha256"] == data_fingerprint(subset)
        state = torch.load(out / folder / "best.pt", weights_only=True)
        assert set(state) == {"model", "epoch"}                                            # no optimiser state
        assert set(card["runs"][name]["val_kappa"]) == {"audio", "image", "text"}
    # the ranking distance: the declared rule applied to the validation means it records, and one
    # of those means recomputed independently (evaluate_run on the kept validation rows)
    distance = card["distance"]
    means = distance["val_mean_mrr"]
    assert set(means) == set(DEMO_DISTANCES) and distance["rule"] == DISTANCE_RULE
    best = max(means, key=means.get)
    assert distance["chosen"] == (best if means[best] > means["ssw"] + DISTANCE_MARGIN else "ssw")
    val = _rows(full["val"], keep["val"])
    cosine = [np.mean([t["MRR"] for t in evaluate_run(out / folder, split="val", distance="cosine", data={"val": val},
                                                      store=False)["tasks"].values()])
              for folder, _, _ in DEMO_NAMES.values()]
    assert means["cosine"] == pytest.approx(np.mean(cosine), abs=1e-6)
    assert demo_distance(out) == distance["chosen"]
    assert sorted(p.name for p in out.iterdir()) == sorted([CARD_JSON, CARD_MD, *(f for f, _, _ in DEMO_NAMES.values())])
    assert verify_demo_runs(out) == card["files"]
    (out / "baseline" / "best.pt").write_bytes((out / "baseline" / "best.pt").read_bytes() + b"\0")
    with pytest.raises(ValueError, match=r"baseline/best.pt.*differ from the SHA-256"):
        verify_demo_runs(out)


def _rows(split: FeatureSplit, rows: list[int]) -> FeatureSplit:
    """The rows of ``split`` built by hand (the oracle of the training subset)."""
    return FeatureSplit(ids=split.ids[rows], features={m: x[rows] for m, x in split.features.items()},
                        present={m: p[rows] for m, p in split.present.items()})


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_shipped_pair_matches_its_card():
    """Every shipped file has the SHA-256 its card records; only what inference needs is shipped (a few
    MB); the card says the pair was trained on small without tiny's groups, with K* and the study's
    second-round settings."""
    card = demo_card()
    assert verify_demo_runs() == card["files"]
    assert sorted(p.name for p in DEMO_RUNS.iterdir() if p.name != "__pycache__") == \
        sorted([CARD_JSON, CARD_MD, *(f for f, _, _ in DEMO_NAMES.values())])
    size = sum(p.stat().st_size for p in DEMO_RUNS.rglob("*") if p.is_file())
    assert size < 8e6, size
    kstar = json.loads((ROOT / "reports" / "study" / "round2_settings.json").read_text())["kappa"]
    assert card["settings"]["kappa"] == kstar
    assert card["data"]["bundle"].startswith("music21-small-") and card["excluded"]["bundle"].startswith("music21-tiny-")
    assert card["excluded"]["groups"] > 0 and card["left_out_items"]["train"] > 0
    assert card["train_items"] + card["left_out_items"]["train"] == card["data"]["items"]["train"]
    for name, (folder, method, lam) in DEMO_NAMES.items():
        run, recorded = Run(DEMO_RUNS / folder), card["runs"][name]
        assert sorted(p.name for p in run.path.iterdir()) == sorted(SHIPPED_FILES)
        assert run.config.to_dict() == recorded["config"] and (run.config.method, run.config.lambda_s) == (method, lam)
        assert {k: getattr(run.config, k) for k in kstar} == kstar and run.config.seed == 0
        assert run.config.patience == 8 and run.config.epochs == 60
        assert run.metrics["best_epoch"] == recorded["best_epoch"] and run.metrics["val_score"] == \
            pytest.approx(recorded["val_mrr"], abs=1e-6)
        assert run.manifest["code_version"] == recorded["code_version"] and recorded["code_version"]["dirty"] is False
        assert set(torch.load(run.path / "best.pt", weights_only=True)) == {"model", "epoch"}
    assert (DEMO_RUNS / CARD_MD).read_text().startswith("# The pretrained demo pair")
    assert f"trained on {card['train_items']} items of {card['data']['bundle']}" in demo_summary()


def test_the_shipped_pair_loads_and_encodes_features_of_tinys_shape():
    runs = demo_runs()
    dims = Run(runs["Proposed"]).in_dims
    assert dims == {"audio": 270, "image": 1090, "text": 384}          # the embedded data's features
    rng = np.random.default_rng(0)
    n = 6
    split = FeatureSplit(ids=np.array([f"i{j}" for j in range(n)]), captions=np.array([f"c{j}" for j in range(n)]),
                         features={m: rng.normal(size=(n, d)).astype(np.float32) for m, d in dims.items()},
                         present={m: np.ones(n, bool) for m in dims})
    for path in runs.values():
        run = Run(path)
        enc = run.encode(split)
        for m in dims:
            loc, kappa = enc[m]
            assert loc.shape == (n, run.config.dim) and torch.allclose(loc.norm(dim=1), torch.ones(n), atol=1e-5)
            assert torch.isfinite(kappa).all() and (kappa >= run.config.kappa_floor).all()
            assert (kappa <= run.config.kappa_max).all()
    session = RetrievalSession(split, runs)
    ranking = session.rank({"audio": "i0", "image": "i0"}, "text", "kl", run="Proposed", k=3)
    assert len(ranking.rows) == 3 and ranking.gallery_size == n

"""A kappa that can learn (issue 23, section 1): the log head, the kappa head's own learning rate,
early stopping on validation, kappa statistics in the training log; and that configs without
these settings build and train the model they always did."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from mmkit.data import load_bundle, make_synthetic_bundle
from mmkit.model.config import ConfigError, TrainConfig
from mmkit.model.encoders import MultimodalEncoder, VMFHead, mlp
from mmkit.model.factory import build_model, build_optimizer
from mmkit.model.run import KAPPA_STATISTICS, Run, encode_split
from mmkit.training import loop
from mmkit.training.loop import fit

TINY = dict(batch_size=16, hidden=16, dim=8, n_samples=4, n_projections=8, layers=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_synthetic_bundle(tmp_path_factory.mktemp("bundle") / "b", n_items=(48, 30, 20),
                                 dims={"audio": 12, "image": 10, "text": 8}, missing_rate=0.2, seed=5)
    return load_bundle(root)


# ---------------------------------------------------------------------------------------- the log head
def test_log_head_is_log_linear_in_the_trunk_features_and_clamped():
    """Oracle: log kappa = log kappa_init + s * (w . h + b) from the head's own weights, clamped."""
    torch.manual_seed(0)
    head = VMFHead(10, 6, hidden=16, kappa_floor=2.0, kappa_init=50.0, kappa_head="log", kappa_max=400.0).eval()
    x = torch.randn(200, 10)
    loc, kappa = head(x)
    assert loc.shape == (200, 6) and kappa.shape == (200,)
    g = (head.trunk(x) @ head.kappa.weight.T).squeeze(-1) + head.kappa.bias
    torch.testing.assert_close(kappa, (math.log(50.0) + g).exp())
    # items differ from the start, mildly: weights not zero, spread of log kappa about 0.1 x rms(h)
    rms = head.trunk(x).pow(2).mean().sqrt()
    assert 0.3 * 0.1 * rms < kappa.log().std() < 3 * 0.1 * rms
    assert abs(kappa.log().mean() - math.log(50.0)) < 0.1
    # a large scale drives items onto both bounds, exactly
    head.kappa_scale = 100.0
    kappa = head(x)[1]
    assert kappa.min() == 2.0 and kappa.max() == 400.0 and ((kappa > 2.0) & (kappa < 400.0)).any()
    expected = (math.log(50.0) + 100.0 * g).clamp(math.log(2.0), math.log(400.0)).exp().clamp(2.0, 400.0)
    torch.testing.assert_close(kappa, expected)


def test_log_head_sends_gradients_to_its_weights_and_the_trunk_at_once():
    torch.manual_seed(1)
    x = torch.randn(8, 5)
    grads = {}
    for name in ("softplus", "log"):
        torch.manual_seed(2)
        head = VMFHead(5, 4, hidden=8, layers=1, kappa_head=name)
        head(x)[1].log().sum().backward()
        assert head.kappa.weight.grad.abs().sum() > 0 and head.kappa.bias.grad.abs().sum() > 0
        grads[name] = head.trunk[0].weight.grad
    assert grads["softplus"] is None or grads["softplus"].abs().sum() == 0  # zero weights: no gradient into the trunk
    assert grads["log"].abs().sum() > 0
    with pytest.raises(ValueError, match="kappa_head must be one of"):
        VMFHead(5, 4, kappa_head="exp")
    with pytest.raises(ValueError, match="kappa_max > kappa_init"):
        VMFHead(5, 4, kappa_head="log", kappa_init=100.0, kappa_max=50.0)


# ---------------------------------------------------------------------------------------- old configs
def test_a_config_without_the_new_settings_builds_the_model_it_always_did():
    """Oracle: the construction before issue 23, spelled out (trunk, loc layer, zero-weight kappa
    layer with the inverse-softplus bias, per modality, in this order of random draws)."""
    old = {"method": "proposed", "dim": 8, "hidden": 16, "layers": 2, "kappa_floor": 1.0, "kappa_init": 100.0}
    config = TrainConfig.from_dict(old)
    assert (config.kappa_head, config.kappa_lr_scale, config.patience) == ("softplus", 1.0, None)
    assert TrainConfig.from_json(json.dumps(config.to_dict())) == config
    in_dims = {"audio": 6, "image": 5, "text": 4}
    torch.manual_seed(7)
    model, objective = build_model(config, in_dims)
    torch.manual_seed(7)
    reference = {}
    for m, d_in in in_dims.items():
        trunk, loc, kappa = mlp(d_in, 16, 2, 0.1), nn.Linear(16, 8), nn.Linear(16, 1)
        nn.init.zeros_(kappa.weight)
        nn.init.constant_(kappa.bias, math.log(math.expm1(99.0)))
        reference.update({f"heads.{m}.trunk.{k}": v for k, v in trunk.state_dict().items()})
        reference.update({f"heads.{m}.loc.{k}": v for k, v in loc.state_dict().items()})
        reference.update({f"heads.{m}.kappa.{k}": v for k, v in kappa.state_dict().items()})
    state = {k: v for k, v in model.state_dict().items() if k.startswith("heads.")}
    assert sorted(state) == sorted(reference)
    for k, v in reference.items():
        torch.testing.assert_close(state[k], v, rtol=1e-6, atol=0, msg=k)
    x = {m: torch.randn(3, d) for m, d in in_dims.items()}
    assert all(torch.allclose(k, torch.full((3,), 100.0), rtol=1e-5) for _, k in model.eval()(x).values())
    # one parameter group in the order of the parameters: old checkpoints' optimizer states still load
    optimizer = build_optimizer(config, model, objective)
    assert len(optimizer.param_groups) == 1
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == \
        [id(p) for p in [*model.parameters(), *objective.parameters()]]


def test_new_settings_are_validated():
    for bad in ({"kappa_head": "exp"}, {"kappa_max": 50.0}, {"kappa_max": math.inf}, {"kappa_scale": 0.0},
                {"kappa_lr_scale": -1.0}, {"kappa_lr_scale": math.nan}, {"patience": 0}, {"patience": True},
                {"patience": 2.0}, {"kappa_head": "log", "method": "pcme"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TrainConfig.from_dict(bad)
    assert TrainConfig(patience=3, kappa_head="log", kappa_lr_scale=10.0).patience == 3


# ---------------------------------------------------------------------------------------- learning rate
@pytest.mark.parametrize("method", ["proposed", "pcme"])
def test_kappa_lr_scale_gives_the_concentration_layers_their_own_group(method):
    config = TrainConfig(method=method, kappa_lr_scale=4.0, lr=1e-3, weight_decay=0.0, dim=4, hidden=8, layers=1)
    torch.manual_seed(0)
    model, objective = build_model(config, {"audio": 5, "text": 3})
    optimizer = build_optimizer(config, model, objective)
    rest, own = optimizer.param_groups
    layer = "kappa" if method == "proposed" else "log_var"
    expected = {id(p) for m in ("audio", "text") for p in getattr(model.heads[m], layer).parameters()}
    assert {id(p) for p in own["params"]} == expected and len(own["params"]) == 4
    assert own["lr"] == pytest.approx(4e-3) and rest["lr"] == pytest.approx(1e-3)
    everything = [*model.parameters(), *objective.parameters()]
    assert sorted(id(p) for p in rest["params"] + own["params"]) == sorted(id(p) for p in everything)
    # Adam's first step moves every parameter by about its group's lr (oracle: lr * g / (|g| + eps))
    before = {id(p): p.detach().clone() for p in everything}
    x = {"audio": torch.randn(6, 5), "text": torch.randn(6, 3)}
    sum(a.sum() + b.sum() for a, b in model(x).values()).backward()
    optimizer.step()
    for group, lr in ((own, 4e-3), (rest, 1e-3)):
        moved = torch.cat([(p.detach() - before[id(p)]).abs()[p.grad.abs() > 1e-3] for p in group["params"]
                           if p.grad is not None])
        assert moved.numel() > 10
        torch.testing.assert_close(moved, torch.full_like(moved, lr), rtol=1e-3, atol=0)


# ---------------------------------------------------------------------------------------- early stopping
def test_patience_stops_on_a_plateau_and_keeps_the_best_epoch(data, tmp_path, monkeypatch):
    """Scripted validation scores with a plateau after epoch 1: patience 2 stops after epoch 3."""
    scores = iter([0.1, 0.3, 0.2, 0.3, 0.9, 0.9])
    real = loop._validation

    def scripted(model, split, device):
        _, tasks, kappa = real(model, split, device)
        return next(scores), tasks, kappa

    monkeypatch.setattr(loop, "_validation", scripted)
    config = TrainConfig(method="baseline", epochs=6, patience=2, seed=3, **TINY)
    summary = fit(config, data, tmp_path / "early", progress=False)
    assert [row["epoch"] for row in summary["history"]] == [0, 1, 2, 3]
    assert summary["best_epoch"] == 1 and summary["stopped_epoch"] == 3 and summary["val_score"] == 0.3
    manifest = Run(tmp_path / "early").manifest
    assert manifest["stopped_epoch"] == 3 and manifest["early_stopped"] is True
    # re-running the finished command trains no further
    assert len(fit(config, data, tmp_path / "early", progress=False)["history"]) == 4
    # best.pt holds epoch 1's weights: those of the same training stopped after epoch 1
    scores = iter([0.1, 0.3])
    fit(TrainConfig(method="baseline", epochs=2, seed=3, **TINY), data, tmp_path / "two", progress=False)
    best = torch.load(tmp_path / "early" / "best.pt", weights_only=True)
    last = Run(tmp_path / "two").load_checkpoint()
    assert best["epoch"] == last["epoch"] == 1
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    monkeypatch.setattr(loop, "_validation", real)
    full = fit(TrainConfig(method="baseline", epochs=2, seed=3, **TINY), data, tmp_path / "none", progress=False)
    assert full["stopped_epoch"] == 1 and Run(tmp_path / "none").manifest["early_stopped"] is False


# ---------------------------------------------------------------------------------------- kappa statistics
def test_history_log_and_tensorboard_hold_the_kappa_statistics(data, tmp_path):
    """Oracle: the statistics recomputed with numpy from the last model's encodings of the
    validation items that have each modality."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = TrainConfig(method="proposed", epochs=2, kappa_head="log", kappa_scale=3.0, seed=1, **TINY)
    summary = fit(config, data, tmp_path / "run", progress=False, tensorboard=True)
    run = Run(tmp_path / "run")
    val = data["val"]
    assert not val.present["audio"].all()  # some items lack a modality: they are left out
    enc = encode_split(run.load_model("last"), val)
    row = summary["history"][-1]
    for m in ("audio", "image", "text"):
        k = enc[m].concentration.double().numpy()[val.present[m].astype(bool)]
        expected = {"": k.mean(), "_sd": k.std(ddof=1), "_cv": k.std(ddof=1) / k.mean(),
                    **{f"_q{int(100 * q):02d}": np.quantile(k, q) for q in (0.05, 0.25, 0.5, 0.75, 0.95)}}
        assert set(expected) == {""} | {f"_{s}" for s in KAPPA_STATISTICS}
        for suffix, value in expected.items():
            assert row[f"kappa_{m}{suffix}"] == pytest.approx(value, rel=1e-6), (m, suffix)
        assert row[f"kappa_{m}_cv"] > 0.01  # the log head's items differ
    with open(run.path / "log.csv", newline="") as fh:
        logged = list(csv.DictReader(fh))[-1]
    assert float(logged["kappa_text_q95"]) == pytest.approx(row["kappa_text_q95"], rel=1e-5)
    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    for key in ("kappa_audio_cv", "kappa_image_q05", "kappa_text_sd"):
        assert [e.value for e in events.Scalars(key)] == pytest.approx([r[key] for r in summary["history"]], rel=1e-6)

"""Encoder heads and backbones: shapes, unit norm, kappa floor, masked pooling."""
import torch

import pytest

from mmkit.model.encoders import ConvBackbone, GaussianHead, MultimodalEncoder, TokenCNN, VMFHead, masked_mean_pool


def test_vmf_head_outputs_unit_loc_and_kappa_above_floor():
    head = VMFHead(10, 6, hidden=16, kappa_floor=2.0, kappa_init=7.0)
    loc, kappa = head(torch.randn(5, 10))
    assert loc.shape == (5, 6) and kappa.shape == (5,)
    assert torch.allclose(loc.norm(dim=-1), torch.ones(5), atol=1e-6)
    assert (kappa > 2.0).all() and torch.allclose(kappa, torch.full((5,), 7.0), atol=1e-5)


def test_gaussian_head_and_masked_pool():
    mean, log_var = GaussianHead(4, 3, hidden=8)(torch.randn(2, 4))
    assert mean.shape == log_var.shape == (2, 3)
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    assert masked_mean_pool(x, torch.tensor([2, 3])).squeeze(-1).tolist() == [2.0, 4.0]


def test_backbones_under_heads():
    model = MultimodalEncoder({"audio": 1, "image": 1, "text": 1}, 8, hidden=16,
                              backbones={"audio": ConvBackbone(2, 4), "image": ConvBackbone(2, 4), "text": TokenCNN(50, 8)})
    batch = {"audio": torch.randn(3, 16, 32), "image": torch.randn(3, 1, 16, 64),
             "text": torch.tensor([[4, 5, 0], [1, 0, 0], [7, 8, 9]])}
    out = model(batch)
    assert {m: tuple(v[0].shape) for m, v in out.items()} == {m: (3, 8) for m in ("audio", "image", "text")}
    dists = model.distributions(batch)
    assert dists["text"].rsample((2,)).shape == (2, 3, 8)


def test_input_standardisation_is_fitted_stored_and_applied(tmp_path):
    import numpy as np
    import pytest

    from mmkit.data import load_bundle, make_synthetic_bundle
    from mmkit.model.encoders import MultimodalEncoder
    from mmkit.training.loop import pooled_features

    g = torch.Generator().manual_seed(0)
    x = 5.0 + 0.1 * torch.randn(50, 6, generator=g, dtype=torch.float64)  # a large common offset
    enc = MultimodalEncoder({"audio": 6, "text": 4}, dim=3, hidden=8, layers=1, dropout=0.0).eval()
    before = enc({"audio": x.float()})["audio"][0]
    enc.fit_input_normalization({"audio": x})
    torch.testing.assert_close(enc.input_mean_audio, x.mean(0).float())
    torch.testing.assert_close(enc.input_std_audio, x.std(0).float() + 1e-6)
    assert "input_std_audio" in enc.state_dict() and torch.equal(enc.input_mean_text, torch.zeros(4))
    after = enc({"audio": x.float()})["audio"][0]
    # the offset no longer dominates: standardised items spread over the sphere instead of clumping
    assert (before @ before.T).min() > 0.99 and (after @ after.T).min() < 0.5
    with pytest.raises(ValueError, match=r"features\['audio'\] must have shape \(N >= 2, 6\)"):
        enc.fit_input_normalization({"audio": x[:, :5]})
    with pytest.raises(ValueError, match="no standardisation for modality 'image'"):
        enc.fit_input_normalization({"image": x})
    with pytest.raises(ValueError, match="non-finite"):
        enc.fit_input_normalization({"audio": x * float("nan")})
    split = load_bundle(make_synthetic_bundle(tmp_path / "b", n_items=(20, 4, 4), seed=1))["train"]
    for m, feats in pooled_features(split).items():
        present = split.present[m].astype(bool)
        assert feats.shape == (int(present.sum()), split.feature_dim(m))
        if split.features[m].ndim == 2:
            assert np.array_equal(feats.numpy(), split.features[m][present])


@pytest.mark.parametrize("family", ["vmf", "gaussian"])
def test_linear_heads_without_trunk(family):
    """layers = 0: the heads read the (standardised) input directly (once a shape mismatch)."""
    model = MultimodalEncoder({"audio": 5, "text": 3}, 4, family=family, layers=0)
    out = model({"audio": torch.randn(2, 5), "text": torch.randn(2, 3)})
    assert all(tuple(v[0].shape) == (2, 4) for v in out.values())
    assert not any(isinstance(mod, torch.nn.Linear) and mod.in_features == 256 for mod in model.modules())


def test_kappa_init_must_exceed_the_floor():
    """A floor at or above the initial kappa once gave a NaN bias (log of expm1 of a non-positive number)."""
    for floor, init in ((20.0, 30.0), (1.0, 200.0), (1.0, 1e4), (1.0, 1.001)):  # 200: once an inf bias (float32 expm1)
        _, kappa = VMFHead(3, 4, hidden=8, kappa_floor=floor, kappa_init=init)(torch.randn(2, 3))
        assert torch.allclose(kappa, torch.full((2,), init), rtol=1e-5), (floor, init, kappa)
    for floor, init in ((10.0, 10.0), (12.0, 10.0), (0.0, 5.0)):
        with pytest.raises(ValueError, match="kappa_init > kappa_floor > 0"):
            VMFHead(3, 4, kappa_floor=floor, kappa_init=init)

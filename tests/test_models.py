"""Encoder heads and backbones: shapes, unit norm, kappa floor, masked pooling."""
import torch

from mmkit.models import ConvBackbone, GaussianHead, MultimodalEncoder, TokenCNN, VMFHead, masked_mean_pool


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

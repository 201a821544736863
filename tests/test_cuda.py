"""Training on a GPU when one is present ("CPU by default, CUDA when present"): skipped on CPU-only
machines (CI); run on a lent GPU machine with ``pytest tests/test_cuda.py``."""
import pytest
import torch

from mmkit.data import load_bundle, make_synthetic_bundle
from mmkit.model.config import TrainConfig
from mmkit.model.run import Run, encode_split
from mmkit.training.loop import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

FAST = dict(epochs=3, batch_size=64, hidden=64, dim=16, n_samples=8, n_projections=20, dropout=0.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_synthetic_bundle(tmp_path_factory.mktemp("bundle") / "b", n_items=(384, 96, 96),
                                 dims={"audio": 32, "image": 48, "text": 24}, seed=3)
    return load_bundle(root)


@pytest.mark.parametrize("method", ["proposed", "mpc"])
def test_cuda_training_learns_and_matches_cpu(method, data, tmp_path):
    """The same run on CUDA and on CPU: the loss falls on both, and the first epoch's loss agrees
    to 2 % (different kernels and random streams: the vMF draws come from the device's generator);
    the trained model encodes the same on both devices."""
    runs = {}
    for device in ("cpu", "cuda"):
        summary = fit(TrainConfig(method=method, seed=0, device=device, **FAST), data, tmp_path / device,
                      progress=False)
        hist = summary["history"]
        assert hist[-1]["loss"] < hist[0]["loss"], (device, [h["loss"] for h in hist])
        runs[device] = hist
    assert runs["cuda"][0]["loss"] == pytest.approx(runs["cpu"][0]["loss"], rel=0.02)
    # the CUDA-trained weights encode the test split alike on either device (results come back on the CPU)
    on_cpu = encode_split(Run(tmp_path / "cuda").load_model(), data["test"])
    on_cuda = encode_split(Run(tmp_path / "cuda").load_model().cuda(), data["test"], device="cuda")
    assert on_cuda.family == on_cpu.family and set(on_cuda) == set(on_cpu) == {"audio", "image", "text"}
    for m in on_cpu:
        assert on_cuda[m].loc.device.type == "cpu" and on_cuda[m].concentration.device.type == "cpu"
        torch.testing.assert_close(on_cuda[m].loc, on_cpu[m].loc, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(on_cuda[m].concentration, on_cpu[m].concentration, rtol=1e-4, atol=1e-5)

"""Data-parallel training with 2 CPU processes (gloo) equals the single-process run.

Tolerance: the loss to 1e-6 relative and every gradient to 1e-5 (absolute, on gradients of
order 1e-3..1): a shard's matmuls reassociate floating-point sums, nothing else differs
(same vMF draws and projections on every rank, dropout off)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmkit.data import make_synthetic_bundle

HERE = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_synthetic_bundle(tmp_path_factory.mktemp("ddp") / "b", n_items=(64, 32, 32),
                                 dims={"audio": 12, "image": 10, "text": 8}, seed=11)


@pytest.mark.parametrize("method", ["proposed", "pcme"])
def test_two_process_step_equals_single_process(bundle, tmp_path, method):
    sys.path.insert(0, str(HERE))
    from ddp_worker import one_step

    reference, _ = one_step(str(bundle), method)
    out = tmp_path / "step"
    done = subprocess.run(TORCHRUN + [str(HERE / "ddp_worker.py"), str(bundle), method, str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        got = torch.load(f"{out}.rank{rank}.pt", weights_only=True)
        assert set(got) == set(reference)
        assert torch.allclose(got["loss"], reference["loss"], rtol=1e-6, atol=0)
        for name, g in reference.items():
            assert torch.allclose(got[name], g, rtol=0, atol=1e-5), (name, (got[name] - g).abs().max())


def test_torchrun_train_cli(bundle, tmp_path):
    out = tmp_path / "run"
    cmd = TORCHRUN + ["-m", "mmkit", "train", "--method", "proposed", "--data", str(bundle), "--epochs", "1",
                      "--batch-size", "16", "--dim", "8", "--out", str(out), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["status"] == "finished"
    assert (out / "best.pt").is_file()

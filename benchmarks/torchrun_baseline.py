"""The baseline of figure 1: a plain DDP script on the same recipe code, run by `torchrun --nproc_per_node=2`.

Prints one JSON line from rank 0: {"samples_per_sec": global steady-state samples/s, "steps": N}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from app.training.recipes.datasets import load_dataset
from app.training.recipes.models import build_model, loss_and_correct
from app.training.sources import SourcePolicy


def main() -> None:
    """Train the MLP on synthetic data like the farm's worker does, and time the steady state."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    options = {"kind": "vector", "samples": args.samples, "features": args.features, "classes": 10, "seq_len": 32,
               "vocab": 32, "noise": 2.0, "seed": 0}
    train, _, info = load_dataset("synthetic", options, cache_dir=Path("/tmp"), validation_split=0.1, seed=0,
                                  want="vector", log=lambda m: None, policy=SourcePolicy())
    torch.manual_seed(0)
    model = build_model("mlp", {"hidden": [256, 128], "dropout": 0.0}, info)
    net = DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    per_rank = len(train) // world
    steps_per_epoch = per_rank // args.batch_size
    warm = args.steps // 5
    started = 0.0
    step = 0
    epoch = 0
    while step < args.steps:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))
        mine = order[rank::world][: steps_per_epoch * args.batch_size]
        for i in range(steps_per_epoch):
            if step == warm:
                started = time.perf_counter()
            index = mine[i * args.batch_size:(i + 1) * args.batch_size]
            inputs, targets = train[index]
            optimizer.zero_grad(set_to_none=True)
            loss, _, _ = loss_and_correct("mlp", net(inputs), targets)
            loss.backward()
            optimizer.step()
            step += 1
            if step >= args.steps:
                break
        epoch += 1
    # Wall time over the steady state, like the farm's own samples/s windows.
    rate = args.batch_size * world * (step - warm) / (time.perf_counter() - started)
    if rank == 0:
        print(json.dumps({"samples_per_sec": rate, "steps": step}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""One rank of a two-process run that trains a small MLP under DDP or DiLoCo and saves its final weights."""

from __future__ import annotations

import argparse
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from app.training.diloco import DiLoCo, OuterSettings


def main() -> None:
    """Train `--steps` steps of plain SGD on this rank's batches; write the weights to `--out`."""
    parser = argparse.ArgumentParser()
    for name in ("--rank", "--port", "--steps", "--inner-steps"):
        parser.add_argument(name, type=int, required=name in ("--rank", "--port"), default=1)
    parser.add_argument("--mode", choices=("ddp", "diloco"), required=True)
    parser.add_argument("--outer-lr", type=float, default=1.0)
    parser.add_argument("--outer-momentum", type=float, default=0.0)
    parser.add_argument("--compression", default="none")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", args.port, 2, is_master=args.rank == 0, timeout=timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=args.rank, world_size=2, timeout=timedelta(seconds=60))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 3))
    data = torch.Generator().manual_seed(100 + args.rank)
    net: nn.Module = model
    outer = None
    if args.mode == "ddp":
        net = nn.parallel.DistributedDataParallel(model)
    else:
        outer = DiLoCo(model, OuterSettings(args.inner_steps, args.outer_lr, args.outer_momentum,
                                            args.compression), world=2)  # type: ignore[arg-type]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(args.steps):
        inputs = torch.randn(16, 12, generator=data)
        targets = torch.randint(0, 3, (16,), generator=data)
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(inputs), targets).backward()
        optimizer.step()
        if outer is not None:
            outer.inner_step_taken()
            if outer.due():
                outer.sync()
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, args.out)
    dist.barrier()  # rank 0 holds the store: neither leaves while the other still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

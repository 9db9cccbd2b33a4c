"""A plain single-process PyTorch loop of the farm's transformer recipe: the baseline of `benchmarks workloads`."""

from __future__ import annotations

import argparse
import json
import time

import torch

from app.training.recipes.datasets import DataInfo
from app.training.recipes.models import build_model, loss_and_counts


def main() -> None:
    """Train the same model on random byte tokens; print {"tokens_per_sec": ...} as the last line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--options", required=True, help="the model options, as JSON")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("transformer", json.loads(args.options), DataInfo("tokens", (args.seq_len,), 256))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.randint(0, 256, (args.steps + 5, args.batch_size, args.seq_len + 1))
    start = 0.0
    for step in range(args.steps + 5):
        if step == 5:
            start = time.perf_counter()  # the first steps warm the allocator up
        batch = data[step]
        optimizer.zero_grad(set_to_none=True)
        loss, _, _ = loss_and_counts(model(batch[:, :-1]), batch[:, 1:])
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    seconds = time.perf_counter() - start
    print(json.dumps({"tokens_per_sec": args.steps * args.batch_size * args.seq_len / seconds}))


if __name__ == "__main__":
    main()

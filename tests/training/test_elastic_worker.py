"""Elastic workers driven as their agents drive them: membership orders and rendezvous on stdin, real processes."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.training.messages import Checkpoint, Finished, Progress, Regrouped, Rendezvous, Started, WorkerMessage
from tests.training.e2e import WorkerProcess as Worker
from tests.training.e2e import applied_samples, worker_spec

pytestmark = pytest.mark.slow


def _config(**extra: Any) -> dict[str, Any]:
    return {"name": "elastic", "model": "mlp", "dataset": "synthetic", "batch_size": 16, "learning_rate": 0.05,
            "optimizer": "sgd", "momentum": 0.9, "epochs": 1, "seed": 3,
            "dataset_options": {"samples": 2400, "features": 16, "classes": 4, "noise": 1.0}, **extra}


def _spec(root: Path, config: dict[str, Any], *, rank: int, world: int, generation: int = 1,
          max_clients: int = 2, **extra: Any) -> dict[str, Any]:
    spec = worker_spec(root, config)
    spec.update(rank=rank, world_size=world, generation=generation, elastic=True, max_clients=max_clients,
                progress_interval=0.2, **extra)
    return spec


def _weights(model_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    (path,) = model_dir.glob("*.safetensors")
    return load_file(str(path))


def _is(kind: type[WorkerMessage], **values: Any) -> Callable[[WorkerMessage], bool]:
    return lambda m: isinstance(m, kind) and all(getattr(m, k) == v for k, v in values.items())


def test_two_ranks_with_shares_3_to_1_reach_the_weights_of_one_rank_on_the_global_batch(tmp_path: Path) -> None:
    """Gradients weighted by each rank's samples: an uneven split is the same update as the whole batch on one rank."""
    import torch

    config = _config(max_steps=30)
    alone = Worker(_spec(tmp_path / "alone", config, rank=0, world=1))
    try:
        done = alone.wait_for(_is(Finished))
    finally:
        alone.close()
    assert isinstance(done, Finished) and done.step == 30
    first = Worker(_spec(tmp_path / "r0", config, rank=0, world=2, fixed_shares=[3, 1]))
    second: Worker | None = None
    try:
        rendezvous = first.wait_for(_is(Rendezvous), 60)
        assert isinstance(rendezvous, Rendezvous)
        second = Worker(_spec(tmp_path / "r1", config, rank=1, world=2, fixed_shares=[3, 1],
                              rendezvous={"host": "127.0.0.1", "port": rendezvous.port}))
        progress = first.wait_for(_is(Progress))
        assert isinstance(progress, Progress) and progress.share == 24.0  # 3/4 of the global batch of 2 × 16
        assert isinstance(first.wait_for(_is(Finished)), Finished)
        assert isinstance(second.wait_for(_is(Finished)), Finished)
    finally:
        first.close()
        if second is not None:
            second.close()
    expected, split = _weights(tmp_path / "alone" / "models"), _weights(tmp_path / "r0" / "models")
    assert expected.keys() == split.keys()
    for name, tensor in expected.items():
        assert torch.allclose(tensor, split[name], atol=1e-5), name


def test_survivors_go_on_in_the_same_processes_and_a_newcomer_joins(tmp_path: Path) -> None:
    """Three ranks; one is killed mid-epoch; the two others regroup without restarting; a fourth process joins and
    receives the state from rank 0; every sample of each epoch is trained exactly once; steps never go back."""
    samples = tmp_path / "samples"
    samples.mkdir()
    env = {"AIFARM_DEBUG_SAMPLE_LOG": str(samples)}
    config = _config(epochs=3, dataset_options={"samples": 16000, "features": 16, "classes": 4, "noise": 1.0})
    workers = [Worker(_spec(tmp_path / "r0", config, rank=0, world=3, max_clients=3), env)]
    try:
        rendezvous = workers[0].wait_for(_is(Rendezvous), 60)
        assert isinstance(rendezvous, Rendezvous)
        for rank in (1, 2):
            workers.append(Worker(_spec(tmp_path / f"r{rank}", config, rank=rank, world=3, max_clients=3,
                                        rendezvous={"host": "127.0.0.1", "port": rendezvous.port}), env))
        started = workers[0].wait_for(_is(Started))
        assert isinstance(started, Started)
        before = workers[0].wait_for(lambda m: isinstance(m, Progress) and m.step >= 5).step  # type: ignore[attr-defined]
        pids = [w.proc.pid for w in workers[:2]]
        os.kill(workers[2].proc.pid, signal.SIGKILL)
        for rank, worker in enumerate(workers[:2]):
            worker.send({"cmd": "regroup", "generation": 2, "rank": rank, "world": 2})
        again = workers[0].wait_for(_is(Rendezvous), 60)
        assert isinstance(again, Rendezvous)
        workers[1].send({"cmd": "rendezvous", "generation": 2, "host": "127.0.0.1", "port": again.port})
        regrouped = [w.wait_for(_is(Regrouped, generation=2)) for w in workers[:2]]
        assert all(isinstance(r, Regrouped) and r.world == 2 and r.step >= before for r in regrouped)
        workers[0].wait_for(lambda m: isinstance(m, Progress) and m.step > regrouped[0].step + 3)  # type: ignore[attr-defined]
        # A newcomer: rank 2 of generation 3, its state from rank 0 over the new group.
        for rank, worker in enumerate(workers[:2]):
            worker.send({"cmd": "regroup", "generation": 3, "rank": rank, "world": 3})
        third = workers[0].wait_for(_is(Rendezvous), 60)
        assert isinstance(third, Rendezvous)
        workers[1].send({"cmd": "rendezvous", "generation": 3, "host": "127.0.0.1", "port": third.port})
        newcomer = Worker(_spec(tmp_path / "r2b", config, rank=2, world=3, generation=3, max_clients=3,
                                rendezvous={"host": "127.0.0.1", "port": third.port}), env)
        workers.append(newcomer)
        joined = newcomer.wait_for(_is(Regrouped, generation=3))
        assert isinstance(joined, Regrouped) and joined.step > before
        finished = [w.wait_for(_is(Finished), 120) for w in (workers[0], workers[1], newcomer)]
        assert [w.proc.pid for w in workers[:2]] == pids
    finally:
        for worker in workers:
            worker.close()
    final = [f for f in finished if isinstance(f, Finished)]
    assert len({f.params_sha256 for f in final}) == 1  # one model on every member
    reported = [m.step for m in workers[0].seen if isinstance(m, Progress)]
    assert reported == sorted(reported), reported
    counts, applied = applied_samples(samples)
    assert applied == list(range(1, final[0].step + 1))
    assert counts and max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:10]
    assert len(counts) == final[0].step * 16 * 3  # each step's whole global batch


def _regroup(members: list[Worker], generation: int, newcomer_spec: dict[str, Any] | None = None,
             env: dict[str, str] | None = None) -> list[Worker]:
    """Order the members (in rank order) into a new generation; a newcomer, when given, starts as its last rank."""
    world = len(members) + (1 if newcomer_spec is not None else 0)
    for rank, worker in enumerate(members):
        worker.send({"cmd": "regroup", "generation": generation, "rank": rank, "world": world})
    if world == 1:
        return members
    rendezvous = members[0].wait_for(_is(Rendezvous), 60)
    assert isinstance(rendezvous, Rendezvous)
    for worker in members[1:]:
        worker.send({"cmd": "rendezvous", "generation": generation, "host": "127.0.0.1", "port": rendezvous.port})
    if newcomer_spec is None:
        return members
    newcomer_spec.update(rank=world - 1, world_size=world, generation=generation,
                         rendezvous={"host": "127.0.0.1", "port": rendezvous.port})
    return [*members, Worker(newcomer_spec, env)]


def test_every_sample_once_through_five_membership_changes(tmp_path: Path) -> None:
    """3 → 2 (killed) → 3 (joined) → 2 (stopped) → 3 (joined) → 2 (rank 0 killed): each epoch's samples are trained
    exactly once, no step is skipped or repeated, and the contributions per machine add up to every step's batch."""
    samples = tmp_path / "samples"
    samples.mkdir()
    env = {"AIFARM_DEBUG_SAMPLE_LOG": str(samples)}
    config = _config(epochs=30, dataset_options={"samples": 16000, "features": 16, "classes": 4, "noise": 1.0})

    def spec(name: str, rank: int = 0, world: int = 3, **extra: Any) -> dict[str, Any]:
        return _spec(tmp_path / name, config, rank=rank, world=world, max_clients=3, **extra)

    everyone: list[Worker] = []

    def steps_on(worker: Worker, more: int) -> None:
        now = max([m.step for m in worker.seen if isinstance(m, Progress)] or [0])
        worker.wait_for(lambda m: isinstance(m, Progress) and m.step >= now + more)

    try:
        first = Worker({**spec("w0"), "members": ["w0", "w1", "w2"]}, env)
        everyone.append(first)
        rendezvous = first.wait_for(_is(Rendezvous), 60)
        assert isinstance(rendezvous, Rendezvous)
        address = {"host": "127.0.0.1", "port": rendezvous.port}
        group = [first] + [Worker({**spec(f"w{r}", r, rendezvous=address)}, env) for r in (1, 2)]
        everyone += group[1:]
        steps_on(first, 20)
        group[2].proc.kill()  # 1: a member vanishes
        group = _regroup(group[:2], 2)
        steps_on(group[0], 20)
        group = _regroup(group, 3, spec("w3"), env)  # 2: a newcomer
        everyone.append(group[2])
        group[2].wait_for(_is(Regrouped, generation=3))
        steps_on(group[0], 20)
        group[1].send({"cmd": "stop"})  # 3: a member leaves cleanly (its newest state written)
        group[1].wait_for(lambda m: isinstance(m, Checkpoint) and m.kind == "emergency")
        group = _regroup([group[0], group[2]], 4)
        steps_on(group[0], 20)
        group = _regroup(group, 5, spec("w4"), env)  # 4: another newcomer
        everyone.append(group[2])
        group[2].wait_for(_is(Regrouped, generation=5))
        steps_on(group[0], 20)
        group[0].proc.kill()  # 5: rank 0 vanishes; the two others go on
        group = _regroup(group[1:], 6)
        finished = [w.wait_for(_is(Finished), 180) for w in group]
        last = [m for m in group[0].seen if isinstance(m, Progress)][-1]
    finally:
        for worker in everyone:
            worker.close()
    assert all(isinstance(f, Finished) for f in finished)
    total = finished[0].step  # type: ignore[attr-defined]
    counts, applied = applied_samples(samples)
    assert applied == list(range(1, total + 1))
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:10]
    assert len(counts) == total * 16 * 3
    assert last.step == total and last.contributions is not None
    assert sum(last.contributions.values()) == total * 16 * 3  # every applied step's global batch, by machine


"""Elastic training in the worker: the members of a group change and the processes that remain go on.

The agent sends a `regroup` order (generation, rank, world) when the farm database says the membership changed, and
each generation's rendezvous; the worker drops its process group, builds the new one, takes rank 0's state (the
newest step any member applied) and goes on. A step's global batch (the task's batch × n_clients) is split in
proportion to the members' measured speeds; each rank scales its loss by its share of the global batch, so the
summed gradients are the global batch's mean gradient, whatever the split. The epoch's sample order is the same on
every rank and the position in it is part of the shared state, so each sample is used once per epoch.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from app.training.elastic_plan import offsets, rebalance_due, smooth, split, too_slow
from app.training.messages import Broken, Progress, Regrouped, Released, Rendezvous, Started, Stopped
from app.training.worker import apply_step

if TYPE_CHECKING:
    from app.training.worker import Pacing, RunState, Trainer

GROUP_TIMEOUT = timedelta(seconds=60)  # members wait this long for each other (a newcomer's worker is starting)


@dataclass(frozen=True)
class Membership:
    """This rank's place in one generation of the group."""

    generation: int
    rank: int
    world: int
    members: tuple[str, ...] = ()  # the machines by rank, for the contribution of each


class Orders:
    """The newest membership order and each generation's rendezvous, written by the control thread."""

    def __init__(self, first: Membership, rendezvous: tuple[str, int] | None) -> None:
        self._lock = threading.Lock()
        self._latest = first
        self._rendezvous: dict[int, tuple[str, int]] = {first.generation: rendezvous} if rendezvous else {}

    @property
    def latest(self) -> Membership:
        """The newest order received."""
        with self._lock:
            return self._latest

    def order(self, membership: Membership) -> None:
        """A new membership (older generations are ignored)."""
        with self._lock:
            if membership.generation > self._latest.generation:
                self._latest = membership

    def rendezvous(self, generation: int, host: str, port: int) -> None:
        """Where rank 0 of that generation listens."""
        with self._lock:
            self._rendezvous[generation] = (host, port)

    def forget(self, generation: int, address: tuple[str, int]) -> None:
        """That rendezvous did not answer: wait for the next one published for the generation."""
        with self._lock:
            if self._rendezvous.get(generation) == address:
                del self._rendezvous[generation]

    def rendezvous_of(self, generation: int) -> tuple[str, int] | None:
        """The rendezvous of a generation, when known."""
        with self._lock:
            return self._rendezvous.get(generation)


@dataclass
class Group:
    """One generation's process group (none for a group of one); abandoned, never destroyed, when it breaks."""

    membership: Membership
    pg: Any = None
    store: Any = None

    def allreduce(self, tensor: torch.Tensor, interrupted: Callable[[], bool]) -> bool:
        """Sum over the members in place; False when a member is gone or this rank was told to move on."""
        if self.pg is None:
            return True
        try:
            return _wait(self.pg.allreduce([tensor]), interrupted)
        except RuntimeError:
            return False

    def broadcast(self, tensor: torch.Tensor, interrupted: Callable[[], bool]) -> bool:
        """Rank 0's tensor to every member; False as allreduce."""
        if self.pg is None:
            return True
        try:
            return _wait(self.pg.broadcast(tensor, 0), interrupted)
        except RuntimeError:
            return False


def _wait(work: Any, interrupted: Callable[[], bool]) -> bool:
    """Poll a collective so that a new order or a stop can leave it (gloo cannot abort one)."""
    pause = 0.00005  # short sleeps, not a spin: a machine short of CPU would spend it polling
    while not work.is_completed():
        if interrupted():
            return False
        time.sleep(pause)
        pause = min(0.002, pause * 1.5)
    work.wait()  # raises when a member went away during it
    return True


@dataclass
class Shares:
    """How the global batch is split among the current members, and their measured speeds (samples/s)."""

    global_batch: int
    sizes: list[int] = field(default_factory=list)
    speeds: list[float] = field(default_factory=list)
    since_regroup: int = 0

    def reset(self, world: int) -> None:
        """Equal parts for a new membership (speeds are per rank and ranks changed)."""
        self.sizes = split(self.global_batch, [1.0] * world)
        self.speeds = [0.0] * world
        self.since_regroup = 0

    def measured(self, speeds: list[float]) -> bool:
        """One step's speeds; re-split when due (True then)."""
        self.speeds = smooth(self.speeds, speeds)
        self.since_regroup += 1
        if rebalance_due(self.since_regroup) and all(s > 0 for s in self.speeds):
            self.sizes = split(self.global_batch, self.speeds)
            return True
        return False


class ElasticLoop:
    """One rank's elastic run: build the group, train steps, regroup when told, export at the end."""

    def __init__(self, trainer: Trainer, state: RunState, orders: Orders) -> None:
        self.trainer = trainer
        self.state = state
        self.orders = orders
        self.group: Group | None = None
        self.abandoned: list[Group] = []
        self.broken_at: float | None = None
        max_clients = int(trainer.spec.get("max_clients") or trainer.world)
        fixed = trainer.spec.get("fixed_shares")  # weights per rank instead of measured speeds (tests)
        self.fixed = [float(w) for w in fixed] if isinstance(fixed, list) else None
        self.shares = Shares(state.batch * state.accumulate * max_clients)
        self.contributed = 0
        self.sample_log = _sample_log(trainer.spec)
        self.started = False
        self.min_clients = int(trainer.spec.get("min_clients") or max_clients)
        self.rebalanced = False
        self.last_clock: float | None = None  # _starved_clock() at the previous step (None after a regroup)
        self.window_samples, self.window_time = 0, 0.0  # this rank's work since the last split

    def run(self) -> int:
        """Train until done or stopped; 0 either way (a stop writes an emergency checkpoint)."""
        state, trainer = self.state, self.trainer
        pacing = trainer._pacing(state)
        train_start, start_step = time.perf_counter(), state.step
        order: Any = None
        order_epoch = -1
        while True:
            if self.group is None and not self._regroup():
                return self._stop()
            if trainer.control.stop_requested.is_set():
                return self._stop()
            if state.step >= state.total_steps or state.epoch >= state.epochs:
                break
            if order_epoch != state.epoch:
                order, order_epoch = trainer._epoch_order(len(state.train_set), state.seed, state.epoch), state.epoch
            generation = self.group.membership.generation if self.group is not None else -1
            if not self._step(order):
                self._drop(broken=self.orders.latest.generation == generation)
                continue
            self._after_step(pacing)
            if self._too_slow():
                return 0
        if state.step_in_epoch:  # stopped by max_steps inside an epoch: validate what was trained
            trainer._end_epoch(state)
        self._progress()  # the final contributions
        trainer._export(state, train_start, start_step)
        return 0

    # ----- membership -----

    def _interrupted(self, generation: int) -> Callable[[], bool]:
        control = self.trainer.control
        return lambda: control.stop_requested.is_set() or self.orders.latest.generation != generation

    def _drop(self, broken: bool = False) -> None:
        """The group broke (a member left) or a new membership came: abandon it and wait for the next order."""
        if self.group is not None and broken and not self.trainer.control.stop_requested.is_set():
            self.trainer.channel.send(Broken(generation=self.group.membership.generation))
        if self.group is not None:
            self.abandoned.append(self.group)
            self.broken_at = self.broken_at or time.monotonic()
        self.group = None
        self.state.optimizer.zero_grad(set_to_none=True)

    def _regroup(self) -> bool:
        """Build the newest generation's group and take rank 0's state; False when stopped first."""
        trainer = self.trainer
        last = self.abandoned[-1].membership.generation if self.abandoned else -1
        deadline = time.monotonic() + float(trainer.spec.get("collective_timeout", 60))
        while not trainer.control.stop_requested.is_set():
            wanted = self.orders.latest
            if wanted.generation <= last:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the group of generation {last} broke and no new membership came "
                                       f"within {trainer.spec.get('collective_timeout', 60)} s")
                time.sleep(0.05)
                continue
            group = self._build(wanted)
            if group is None:
                last = max(last, wanted.generation - 1)
                continue
            if self._share_state(group):
                self._joined(group)
                return True
            self.abandoned.append(group)
            last = wanted.generation
        return False

    def _build(self, wanted: Membership) -> Group | None:
        """The process group of one generation; None when it could not form, or a stop or a newer order came while
        it was forming (gloo's rendezvous cannot be interrupted: it is left to finish or time out in its thread)."""
        if wanted.world == 1:
            return Group(wanted)
        address = None
        if wanted.rank != 0:
            address = self._await_rendezvous(wanted)
            if address is None:
                return None
        built: list[Group | BaseException] = []
        thread = threading.Thread(target=lambda: built.append(self._connect(wanted, address)), daemon=True,
                                  name=f"group-g{wanted.generation}")
        thread.start()
        interrupted = self._interrupted(wanted.generation)
        while thread.is_alive():
            if interrupted():
                return None
            thread.join(0.05)
        result = built[0] if built else RuntimeError("the group's set-up ended without a result")
        if isinstance(result, BaseException):
            if address is not None:
                self.orders.forget(wanted.generation, address)  # rank 0 may have opened a new store: wait for it
            self.trainer.channel.log(f"generation {wanted.generation}: the group did not form: {result}"[:500],
                                     "warning")
            return None
        return result

    def _connect(self, wanted: Membership, address: tuple[str, int] | None) -> Group | BaseException:
        """Open (rank 0) or reach the generation's store and form its gloo group; the error instead of raising."""
        try:
            if address is None:
                store = dist.TCPStore(self.trainer.spec.get("bind_host", "0.0.0.0"), 0, wanted.world,  # type: ignore[attr-defined]
                                      is_master=True, wait_for_workers=False, timeout=GROUP_TIMEOUT)
                self.trainer.channel.send(Rendezvous(port=int(store.port)))
            else:
                store = dist.TCPStore(address[0], address[1], wanted.world, is_master=False,  # type: ignore[attr-defined]
                                      timeout=GROUP_TIMEOUT)
            prefixed = dist.PrefixStore(f"g{wanted.generation}", store)  # type: ignore[attr-defined]
            return Group(wanted, dist.ProcessGroupGloo(prefixed, wanted.rank, wanted.world, GROUP_TIMEOUT), store)
        except (RuntimeError, ValueError) as exc:
            return exc

    def _await_rendezvous(self, wanted: Membership) -> tuple[str, int] | None:
        deadline = time.monotonic() + GROUP_TIMEOUT.total_seconds()
        while time.monotonic() < deadline and not self._interrupted(wanted.generation)():
            address = self.orders.rendezvous_of(wanted.generation)
            if address is not None:
                return address
            time.sleep(0.05)
        return None

    def _share_state(self, group: Group) -> bool:
        """Every member takes rank 0's model, optimizer and position (the newest applied step)."""
        if group.pg is None:
            return True
        interrupted = self._interrupted(group.membership.generation)
        blob = _dump(self.state) if group.membership.rank == 0 else b""
        size = torch.tensor([len(blob)], dtype=torch.int64)
        if not group.broadcast(size, interrupted):
            return False
        data = torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.empty(int(size[0]), dtype=torch.uint8)
        if not group.broadcast(data, interrupted):
            return False
        if group.membership.rank != 0:
            _load(self.state, data.numpy().tobytes())
        return True

    def _joined(self, group: Group) -> None:
        """Adopt the new membership and say so."""
        trainer, membership = self.trainer, group.membership
        self.group = group
        self.last_clock, self.window_samples, self.window_time = None, 0, 0.0
        trainer.rank, trainer.world = membership.rank, membership.world
        self.shares.reset(membership.world)
        if self.fixed and len(self.fixed) == membership.world:
            self.shares.sizes = split(self.shares.global_batch, self.fixed)
        if not self.started:
            self.started = True
            trainer.channel.send(Started(step=self.state.step, total_steps=self.state.total_steps,
                                         steps_per_epoch=self.state.steps_per_epoch, samples=len(self.state.train_set),
                                         validation_samples=len(self.state.val_set),
                                         sync="elastic: each step's batch split by measured speed"
                                         if membership.world > 1 else None))
        waited = time.monotonic() - self.broken_at if self.broken_at is not None else 0.0
        self.broken_at = None
        trainer.channel.send(Regrouped(generation=membership.generation, rank=membership.rank, world=membership.world,
                                       step=self.state.step, seconds=round(waited, 3)))

    def _too_slow(self) -> bool:
        """At a re-split: leave the group when this rank computes far slower than the others and the group can spare
        it (a machine whose exchange is starved as well is not seen here: it paces every rank alike)."""
        membership = self.group.membership if self.group is not None else None
        if not self.rebalanced or membership is None or membership.world <= self.min_clients:
            return False
        self.rebalanced = False
        speeds = self.shares.speeds
        if not too_slow(speeds, membership.rank):
            return False
        median = sorted(speeds)[len(speeds) // 2]
        self.trainer.channel.send(Released(
            reason=f"released from the group: {speeds[membership.rank]:.0f} samples/s is below 1/8 of the group's "
                   f"median {median:.0f}; this machine is free for other work"))
        return True

    def _stop(self) -> int:
        """Asked to stop: an emergency checkpoint of the newest applied step, then exit."""
        self.trainer._save("emergency", self.state)
        self.trainer.channel.send(Stopped(step=self.state.step))
        return 0

    # ----- steps -----

    def _step(self, order: Any) -> bool:
        """One step: this rank's slice of the global batch, gradients summed over the group; False when it broke."""
        state, trainer, group = self.state, self.trainer, self.group
        assert group is not None
        membership = group.membership
        sizes = self.shares.sizes
        start = state.step_in_epoch * self.shares.global_batch + offsets(sizes)[membership.rank]
        mine = order[start:start + sizes[membership.rank]]
        begin = time.perf_counter()
        state.optimizer.zero_grad(set_to_none=True)
        counted_batches = []
        for first in range(0, len(mine), state.batch):
            index = mine[first:first + state.batch]
            loss, correct, counted = trainer._forward(state, state.model, *state.train_set[index])
            state.scaler.scale(loss * (len(index) / self.shares.global_batch)).backward()
            counted_batches.append((loss, correct, counted, len(index)))
        computed = time.perf_counter() - begin
        params = [p for p in state.model.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        speeds = torch.zeros(membership.world, dtype=torch.float32, device=state.device)
        clock = _starved_clock()
        waited = clock - self.last_clock if clock is not None and self.last_clock is not None else 0.0
        self.last_clock = clock
        # Over the window since the last split: samples ÷ (compute + the time this process's threads waited to run).
        # A machine short of CPU as a whole waits in its exchange too, which its compute time alone would not show.
        self.window_samples += len(mine)
        self.window_time += computed + waited
        speeds[membership.rank] = self.window_samples / self.window_time if self.window_time > 0 else 0.0
        flat = torch.cat([g.reshape(-1).float() for g in grads] + [speeds]).cpu()  # gloo sums host tensors
        if not group.allreduce(flat, self._interrupted(membership.generation)):
            return False
        self._apply(params, flat, membership)
        for loss, correct, counted, samples in counted_batches:
            state.window.add(loss, correct, counted, samples)
        self.contributed += len(mine)
        if self.sample_log is not None:
            cursor = (state.step_in_epoch - 1) * self.shares.global_batch
            batch = order[cursor:cursor + self.shares.global_batch].tolist()
            self.sample_log.write(f"{membership.generation} {state.epoch} {state.step} {' '.join(map(str, batch))}\n")
            self.sample_log.flush()
        state.window.tick(time.perf_counter() - begin)
        state.window.compute += computed
        return True

    def _apply(self, params: list[Any], flat: torch.Tensor, membership: Membership) -> None:
        """Write the summed gradients back, step the optimizer, note the speeds."""
        state = self.state
        at = 0
        for p in params:
            n = p.numel()
            p.grad = flat[at:at + n].view_as(p).to(device=p.device, dtype=p.dtype)
            at += n
        apply_step(state)
        for rank, size in enumerate(self.shares.sizes):
            who = membership.members[rank] if rank < len(membership.members) else f"rank {rank}"
            state.contributions[who] = state.contributions.get(who, 0) + size
        if self.fixed is None:
            self.rebalanced = self.shares.measured([float(v) for v in flat[at:at + membership.world].tolist()])
            if self.rebalanced:
                self.window_samples, self.window_time = 0, 0.0

    def _after_step(self, pacing: Pacing) -> None:
        """Checkpoint (rank 0), report progress, end the epoch when its steps are done."""
        state, trainer = self.state, self.trainer
        if trainer.rank == 0:
            if pacing.unit == "steps":
                due = state.step - pacing.last_checkpoint_step >= pacing.interval
            else:
                due = time.monotonic() - pacing.last_checkpoint_time >= pacing.interval
            if due:
                trainer._save("regular", state)
                pacing.last_checkpoint_time, pacing.last_checkpoint_step = time.monotonic(), state.step
        if time.monotonic() - pacing.last_report >= pacing.report_every:
            self._progress()
            pacing.last_report = time.monotonic()
        if state.step_in_epoch >= state.steps_per_epoch:
            trainer._end_epoch(state)

    def _progress(self) -> None:
        from app.training.worker import Window

        state = self.state
        window = state.window
        elapsed = time.perf_counter() - window.start
        averages = window.averages(state.perplexity)
        best = state.best
        metrics: dict[str, float | None] = {"loss": averages.get("loss"), "accuracy": averages.get("accuracy"),
                                            "val_loss": best.get("val_loss"), "val_accuracy": best.get("val_accuracy")}
        total = state.total_steps
        steps = max(window.steps, 1)
        self.trainer.channel.send(Progress(
            step=state.step, total_steps=total, epoch=state.epoch + 1,
            progress=round(100.0 * state.step / total, 2) if total else 100.0,
            samples_per_sec=window.steps * self.shares.global_batch / elapsed if elapsed > 0 else 0.0,
            rank_samples_per_sec=window.samples / elapsed if elapsed > 0 else 0.0,
            step_time=window.step_time / steps, metrics=metrics, utilisation=min(1.0, window.compute / elapsed)
            if elapsed > 0 else None, contributed=float(self.contributed),
            share=float(self.shares.sizes[self.trainer.rank]) if self.shares.sizes else None,
            contributions={k: float(v) for k, v in state.contributions.items()} if self.trainer.rank == 0 else None))
        state.window = Window()


def _starved_clock() -> float | None:
    """Seconds this process's threads have waited to run, summed (Linux schedstat), else None."""
    waited = 0
    try:
        for stat in Path("/proc/self/task").glob("*/schedstat"):
            try:
                waited += int(stat.read_text().split()[1])
            except (OSError, ValueError, IndexError):
                continue  # a thread that just ended
    except OSError:
        return None
    return waited / 1e9


def _dump(state: RunState) -> bytes:
    """The state every member must share, as torch.save bytes (loaded back with weights_only)."""
    buffer = io.BytesIO()
    torch.save({
        "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None and state.scaler.is_enabled() else None,
        "epoch": state.epoch, "step_in_epoch": state.step_in_epoch, "step": state.step,
        "best": {k: float(v) for k, v in state.best.items() if isinstance(v, (int, float))},
        "contributions": dict(state.contributions),
    }, buffer)
    return buffer.getvalue()


def _load(state: RunState, blob: bytes) -> None:
    shared = torch.load(io.BytesIO(blob), map_location=state.device, weights_only=True)
    state.model.load_state_dict(shared["model"])
    state.optimizer.load_state_dict(shared["optimizer"])
    state.scheduler.load_state_dict(shared["scheduler"])
    if shared["scaler"] is not None and state.scaler is not None and state.scaler.is_enabled():
        state.scaler.load_state_dict(shared["scaler"])
    state.epoch, state.step_in_epoch, state.step = int(shared["epoch"]), int(shared["step_in_epoch"]), int(shared["step"])
    state.best = dict(shared["best"])
    state.contributions = {str(k): int(v) for k, v in shared["contributions"].items()}


def _sample_log(spec: dict[str, Any]) -> Any:
    """A debug counter for accounting checks: with AIFARM_DEBUG_SAMPLE_LOG set to a folder, each rank appends every step
    it applied (generation, epoch, step and the global batch's sample indices) to a file of this task and process
    there. A step only a departed member applied is done again by the next generation, whose line then counts."""
    folder = os.environ.get("AIFARM_DEBUG_SAMPLE_LOG")
    if not folder:
        return None
    path = Path(folder) / f"task{spec.get('task_id')}-pid{os.getpid()}.log"
    try:
        return path.open("a", encoding="utf-8")
    except OSError as exc:  # e.g. outside what a sandboxed worker may write
        print(f"debug sample log not written: {exc}", file=sys.stderr)
        return None

"""The training worker: one process per rank, spawned by the agent; the only place torch is imported.

Protocol: the agent writes the run's spec as one JSON line on stdin, then may write {"cmd": "stop"}
(emergency checkpoint, then exit). End of stdin means the agent is gone: the worker stops at once.
The worker writes messages (app.training.messages) as JSON lines on its original stdout; anything
else printed goes to stderr.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from app.files import publish_atomically, sha256_file
from app.scheduling.decide import Link, SyncChoice, choose_sync
from app.training.checkpoint_check import state_problem
from app.training.messages import (
    Checkpoint,
    CheckpointKind,
    Epoch,
    Failed,
    Finished,
    Log,
    LogLevel,
    Progress,
    Rendezvous,
    Started,
    Stopped,
    WorkerMessage,
    encode,
)
from app.training.sources import SourcePolicy

if TYPE_CHECKING:
    from app.training.diloco import DiLoCo
    from app.training.elastic import Orders
    from app.training.precision import PrecisionPlan
    from app.training.recipes.plugins import ModelRecipe

SYNC_EVERY = 10
LOW_DISK_BYTES = 64 << 20


class Channel:
    """Messages to the agent on the original stdout (print() goes to stderr)."""

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._lock = threading.Lock()

    def send(self, message: WorkerMessage) -> None:
        """Write one message."""
        with self._lock:
            self._out.write(encode(message))
            self._out.flush()

    def log(self, message: str, level: LogLevel = "info") -> None:
        """A log line for task_logs."""
        self.send(Log(level=level, message=message))


class Control:
    """Stop requests from the agent (stdin command or SIGTERM) and the agent's disappearance (stdin EOF)."""

    def __init__(self) -> None:
        self.stop_requested = threading.Event()
        self.parent_gone = threading.Event()
        self.orders: Orders | None = None  # an elastic run's membership orders
        signal.signal(signal.SIGTERM, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch(self, stdin: Any) -> None:
        """Read commands until EOF in a daemon thread."""

        def run() -> None:
            import json

            for line in stdin:
                try:
                    command = json.loads(line)
                except ValueError:
                    continue
                if isinstance(command, dict) and command.get("cmd") == "stop":
                    self.stop_requested.set()
                elif isinstance(command, dict) and self.orders is not None:
                    self._order(command)
            self.parent_gone.set()
            self.stop_requested.set()

        threading.Thread(target=run, name="control", daemon=True).start()

    def _order(self, command: dict[str, Any]) -> None:
        """A membership order or a rendezvous for an elastic run (malformed ones are ignored)."""
        from app.training.elastic import Membership

        assert self.orders is not None
        try:
            if command.get("cmd") == "regroup":
                members = tuple(str(m) for m in command.get("members") or ())
                self.orders.order(Membership(int(command["generation"]), int(command["rank"]), int(command["world"]),
                                             members))
            elif command.get("cmd") == "rendezvous":
                self.orders.rendezvous(int(command["generation"]), str(command["host"]), int(command["port"]))
        except (KeyError, TypeError, ValueError):
            return


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    np_state = cast(tuple[Any, ...], np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]) + [random.getstate()[2] or 0],
        "python_version": random.getstate()[0],
        "numpy": [str(np_state[0]), torch.from_numpy(np_state[1].astype("int64")), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    values = [int(v) for v in state["python"]]
    gauss = values[-1] or None
    random.setstate((state["python_version"], tuple(values[:-1]), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, cached))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> str:
    """torch.save to a temporary file, fsync, rename; returns the file's sha256."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        publish_atomically(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        if isinstance(exc, Exception) and free < LOW_DISK_BYTES:
            # torch's zip writer reports a full disk as a bare "file write failed"; say what it is.
            raise OSError(errno.ENOSPC, f"No space left on device while writing checkpoint {path.name} "
                                        f"({free} bytes free in {path.parent}); the previous checkpoint is intact") from exc
        raise
    return sha256_file(path)


def load_checkpoint(path: Path, sha256: str) -> dict[str, Any]:
    """Verify the sha256, then load with weights_only=True (no code from the file ever runs)."""
    import torch

    actual = sha256_file(path)
    if actual != sha256:
        raise ValueError(f"checkpoint {path.name} does not match its sha256 (expected {sha256[:12]}…, got {actual[:12]}…)")
    loaded: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return loaded


@dataclass
class Window:
    """Training metrics accumulated since the last progress report, summed on the device until read."""

    loss: Any = None  # a device tensor: the sum of loss x predictions
    correct: Any = None  # a device tensor: right predictions
    count: int = 0
    samples: int = 0
    start: float = field(default_factory=time.perf_counter)
    step_time: float = 0.0
    steps: int = 0
    compute: float = 0.0  # seconds spent computing (DDP: the calibrated step time per step)
    sent: int = 0  # bytes this rank sent

    def add(self, loss: Any, correct: Any, counted: int, samples: int) -> None:
        """Count one batch: its mean loss over `counted` predictions, `correct` of them right (no host read)."""
        weighted = loss.detach().float() * counted
        self.loss = weighted if self.loss is None else self.loss + weighted
        self.correct = correct if self.correct is None else self.correct + correct
        self.count += counted
        self.samples += samples

    def tick(self, seconds: float) -> None:
        """Count one optimizer step and its time."""
        self.step_time += seconds
        self.steps += 1

    def traffic(self, elapsed: float) -> tuple[float | None, float | None]:
        """(bytes sent per step, time computing ÷ wall time) over the window."""
        if not self.steps or elapsed <= 0:
            return None, None
        return self.sent / self.steps, min(1.0, self.compute / elapsed)

    def averages(self, perplexity: bool = False) -> dict[str, float]:
        """The window's mean training loss and accuracy (and perplexity), read from the device now."""
        if not self.count or self.loss is None:
            return {}
        loss, correct = (float(v) for v in _read(self.loss, self.correct))
        out = {"loss": loss / self.count, "accuracy": correct / self.count}
        if perplexity:
            out["perplexity"] = _perplexity(out["loss"])
        return out


def _read(*tensors: Any) -> list[float]:
    """Several device scalars in one read."""
    import torch

    return [float(v) for v in torch.stack([t.float() for t in tensors]).tolist()]


def _perplexity(loss: float) -> float:
    """exp(mean cross-entropy), bounded so that a diverged run still reports a number."""
    return math.exp(min(loss, 700.0)) if math.isfinite(loss) else math.nan


@dataclass
class Pacing:
    """When to checkpoint and report progress: the intervals and when each was last done."""

    interval: int
    unit: str  # "steps" or "seconds"
    report_every: float
    last_checkpoint_time: float
    last_checkpoint_step: int
    last_report: float


@dataclass
class RunState:
    """One rank's run between steps: model, optimizer, data, sampler position and running metrics."""

    recipe: ModelRecipe
    model: Any
    net: Any  # the model, or its DistributedDataParallel wrapper
    optimizer: Any
    scheduler: Any
    train_set: Any
    val_set: Any
    device: Any
    seed: int
    batch: int
    epochs: int
    steps_per_epoch: int
    total_steps: int
    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    best: dict[str, Any] = field(default_factory=dict)  # the last epoch's metrics
    window: Window = field(default_factory=Window)
    done: bool = False
    sync: SyncChoice | None = None
    outer: DiLoCo | None = None  # the DiLoCo global model and outer optimizer (diloco mode)
    saved_outer: dict[str, Any] | None = None  # the outer state of the checkpoint resumed from
    step_compute: float = 0.0  # seconds of computing per step, measured before training (groups only)
    step_bytes: int = 0  # bytes a DDP step sends
    run_traffic: Window = field(default_factory=Window)  # bytes sent and time computing over this attempt
    info: Any = None  # the dataset's DataInfo
    precision: PrecisionPlan | None = None
    scaler: Any = None
    accumulate: int = 1
    grad_clip: float | None = None
    perplexity: bool = False  # a language model: perplexity is its evaluation metric
    contributions: dict[str, int] = field(default_factory=dict)  # elastic: samples each machine put into applied steps


class Trainer:
    """One rank's training run."""

    def __init__(self, spec: dict[str, Any], channel: Channel, control: Control) -> None:
        self.spec = spec
        self.channel = channel
        self.control = control
        self.config = spec["config"]
        self.rank = int(spec["rank"])
        self.world = int(spec["world_size"])
        self.elastic = bool(spec.get("elastic"))
        self.checkpoint_dir = Path(spec["checkpoint_dir"])
        self.model_dir = Path(spec["model_dir"])

    def run(self) -> int:
        import torch

        torch.set_num_threads(max(1, int(self.spec.get("threads") or 1)))
        if self.elastic:
            return self._train_elastic()
        self._init_distributed()
        try:
            return self._train()
        finally:
            if self.world > 1:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()

    def _init_distributed(self) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        timeout = timedelta(seconds=float(self.spec.get("collective_timeout", 60)))
        backend = self.spec.get("backend", "gloo")
        if self.rank == 0:
            store = dist.TCPStore(self.spec.get("bind_host", "0.0.0.0"), 0, self.world, is_master=True,  # type: ignore[attr-defined]
                                  wait_for_workers=False, timeout=timeout)
            self.channel.send(Rendezvous(port=int(store.port)))
        else:
            host, port = self.spec["rendezvous"]["host"], int(self.spec["rendezvous"]["port"])
            store = dist.TCPStore(host, port, self.world, is_master=False, timeout=timeout)  # type: ignore[attr-defined]
        dist.init_process_group(backend, store=store, rank=self.rank, world_size=self.world, timeout=timeout)

    def _train(self) -> int:
        """Prepare, resume, then train epoch by epoch until done or stopped; export at the end."""
        state = self._prepare()
        self._resume(state)
        self._choose_sync(state)
        self.channel.send(Started(step=state.step, total_steps=state.total_steps, steps_per_epoch=state.steps_per_epoch,
                                  samples=len(state.train_set), validation_samples=len(state.val_set),
                                  sync=state.sync.describe() if state.sync and self.world > 1 else None))
        pacing = self._pacing(state)
        train_start, start_step = time.perf_counter(), state.step
        state.done = state.step >= state.total_steps
        while not state.done and state.epoch < state.epochs:
            if self._epoch(state, pacing):
                return 0
        self._export(state, train_start, start_step)
        return 0

    def _train_elastic(self) -> int:
        """Prepare and resume, then train as a member of a group whose membership may change."""
        from app.training.elastic import ElasticLoop, Membership, Orders

        state = self._prepare()
        self._resume(state)
        if self.control.orders is None:
            rendezvous = self.spec.get("rendezvous") or None
            self.control.orders = Orders(Membership(int(self.spec["generation"]), self.rank, self.world,
                                                    tuple(str(m) for m in self.spec.get("members") or ())),
                                         (str(rendezvous["host"]), int(rendezvous["port"])) if rendezvous else None)
        return ElasticLoop(self, state, self.control.orders).run()

    def _prepare(self) -> RunState:
        """The model recipe, its data in the input kind it declares, the model, optimizer and schedule."""
        import torch

        from app.training.recipes.plugins import load_dataset, model_recipe

        config = self.config
        seed = int(config.get("seed", 0))
        recipe = model_recipe(config["model"])
        torch.manual_seed(seed)
        random.seed(seed)
        train_set, val_set, info = load_dataset(
            config["dataset"], config.get("dataset_options") or {}, cache_dir=Path(self.spec["cache_dir"]),
            validation_split=float(config.get("validation_split", 0.1)), seed=seed, want=recipe.input_kind,
            log=lambda m: self.channel.log(m), policy=source_policy(self.spec),
            published=Path(self.spec["published_dataset"]) if self.spec.get("published_dataset") else None,
        )
        torch.manual_seed(seed)
        device = self._device()
        model = recipe.build(config.get("model_options") or {}, info).to(device)
        self._describe(model, device)
        net = model
        optimizer = self._optimizer(model)
        batch, accumulate = int(config["batch_size"]), int(config.get("accumulate_steps") or 1)
        # An elastic group keeps the global batch of its largest size, whatever its size now.
        splits = int(self.spec.get("max_clients") or self.world) if self.elastic else self.world
        steps_per_epoch = max(1, len(train_set) // splits // (batch * accumulate))
        epochs = int(config["epochs"])
        total_steps = epochs * steps_per_epoch
        if config.get("max_steps"):
            total_steps = min(total_steps, int(config["max_steps"]))
        scheduler = self._scheduler(optimizer, total_steps, steps_per_epoch)
        state = RunState(recipe=recipe, model=model, net=net, optimizer=optimizer, scheduler=scheduler,
                         train_set=train_set, val_set=val_set, device=device, seed=seed, batch=batch, epochs=epochs,
                         steps_per_epoch=steps_per_epoch, total_steps=total_steps, info=info, accumulate=accumulate,
                         grad_clip=float(config["grad_clip"]) if config.get("grad_clip") else None,
                         perplexity=metric_of(recipe) == "perplexity")
        self._set_precision(state)
        return state

    def _set_precision(self, state: RunState) -> None:
        """The precision plan for this device (logged by rank 0 when it differs from the request) and its scaler."""
        from app.training.precision import grad_scaler, plan_for

        state.precision = plan_for(str(self.config.get("precision") or "auto"), state.device)
        state.scaler = grad_scaler(state.precision)
        if state.precision.note and self.rank == 0:
            self.channel.log(state.precision.note, "warning")

    def _describe(self, model: Any, device: Any) -> None:
        """Rank 0 logs the model's size and device."""
        if self.rank == 0:
            params = sum(p.numel() for p in model.parameters())
            self.channel.log(f"model {self.config['model']}: {params:,} parameters, training on {device}")

    def _resume(self, state: RunState) -> None:
        """Load the checkpoint the agent handed over (and this rank's own RNG state), if any."""
        resume = self.spec.get("resume")
        if not resume:
            return
        saved = load_checkpoint(Path(resume["path"]), resume["sha256"])
        problem = state_problem(saved, "full")
        if problem is not None:
            raise ValueError(f"checkpoint {Path(resume['path']).name} {problem}")
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        if saved.get("scheduler") is not None:
            state.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler") and state.scaler is not None and state.scaler.is_enabled():
            state.scaler.load_state_dict(saved["scaler"])
        state.epoch, state.step_in_epoch, state.step = int(saved["epoch"]), int(saved["step_in_epoch"]), int(saved["step"])
        state.best = dict(saved.get("metrics") or {})
        state.contributions = {str(k): int(v) for k, v in (saved.get("contributions") or {}).items()}
        state.saved_outer = saved.get("diloco")
        rank_state = self.spec.get("resume_rank_state")
        rng = saved.get("rng")
        if rank_state:
            own = load_checkpoint(Path(rank_state["path"]), rank_state["sha256"])
            rng = own.get("rng", rng)
            if state.saved_outer is not None and isinstance(own.get("optimizer"), dict):
                state.optimizer.load_state_dict(own["optimizer"])  # DiLoCo: each rank's own inner optimizer
        if rng is not None:
            _set_rng_state(rng)
        self.channel.log(f"resumed from {Path(resume['path']).name} at step {state.step} (epoch {state.epoch + 1})")

    def _choose_sync(self, state: RunState) -> None:
        """Measure a step, agree on it and on the slowest link, decide the sync mode; wrap for DDP or set up DiLoCo."""
        from app.training.diloco import DiLoCo, OuterSettings, ring_allreduce_bytes

        parameters = sum(p.numel() for p in state.model.parameters() if p.requires_grad)
        if self.world == 1:
            state.sync = choose_sync(self.config, parameters, 1, 0.0, None)
            return
        import torch
        import torch.distributed as dist

        link = self.spec.get("link") or {}
        figures = torch.tensor([self._calibrate(state), float(link.get("mbit_per_s") or 0.0),
                                float(link.get("latency_s") or 0.0)], dtype=torch.float64)
        step = figures[:1].clone()
        dist.all_reduce(step, op=dist.ReduceOp.MAX)  # the slowest member paces the group
        dist.broadcast(figures, src=0)  # rank 0's view of the links, so every rank decides alike
        state.step_compute = float(step[0])
        measured = Link(float(figures[1]), float(figures[2])) if float(figures[1]) > 0 else None
        state.sync = choose_sync(self.config, parameters, self.world, state.step_compute, measured)
        if state.sync.mode == "diloco":
            settings = OuterSettings(state.sync.inner_steps, float(self.config.get("outer_lr", 0.7)),
                                     float(self.config.get("outer_momentum", 0.9)),
                                     state.sync.compression)  # type: ignore[arg-type]
            state.outer = DiLoCo(state.model, settings, self.world)
            if state.saved_outer is not None:
                state.outer.load_state_dict(state.saved_outer)
            return
        from torch.nn.parallel import DistributedDataParallel

        device = state.device
        state.net = DistributedDataParallel(state.model, device_ids=[device.index] if device.type == "cuda" else None)
        state.step_bytes = ring_allreduce_bytes(parameters, self.world)

    def _calibrate(self, state: RunState) -> float:
        """Seconds of one forward and backward pass on a batch, alone (no exchange); leaves no trace in the run."""
        import torch

        from app.training.recipes.models import loss_and_correct

        rng = torch.get_rng_state()
        buffers = {name: b.detach().clone() for name, b in state.model.named_buffers()}
        index = torch.arange(min(state.batch, len(state.train_set)))
        inputs, targets = state.train_set[index]
        inputs, targets = inputs.to(state.device), targets.to(state.device)
        times = []
        for _ in range(4):
            begin = time.perf_counter()
            loss, _, _ = loss_and_correct(state.recipe.name, state.model(inputs), targets,
                                          per_position=state.recipe.per_position)
            loss.backward()  # type: ignore[no-untyped-call]
            if state.device.type == "cuda":
                torch.cuda.synchronize(state.device)
            times.append(time.perf_counter() - begin)
        state.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, buffer in state.model.named_buffers():
                buffer.copy_(buffers[name])
        torch.set_rng_state(rng)
        return sorted(times[1:])[1]

    def _pacing(self, state: RunState) -> Pacing:
        """Checkpoint and progress clocks, started now (the window of training metrics too)."""
        interval, unit = self.spec["checkpoint_every"]
        pacing = Pacing(interval=interval, unit=unit, report_every=float(self.spec.get("progress_interval", 2.0)),
                        last_checkpoint_time=time.monotonic(), last_checkpoint_step=state.step,
                        last_report=time.monotonic())
        state.window = Window()
        return pacing

    def _epoch(self, state: RunState, pacing: Pacing) -> bool:
        """Train the rest of the current epoch, then validate; True when stopped on request."""
        order = self._epoch_order(len(state.train_set), state.seed, state.epoch)
        mine = order[self.rank::self.world][: state.steps_per_epoch * state.batch * state.accumulate]
        state.net.train()
        while state.step_in_epoch < state.steps_per_epoch:
            self._step(state, mine)
            if self._after_step(state, pacing):
                return True
            if state.step >= state.total_steps:
                state.done = True
                break
        if state.done and state.outer is not None and state.outer.inner_done:
            self._outer_step(state)  # the model exported is the global one
        self._end_epoch(state)
        return False

    def _step(self, state: RunState, mine: Any) -> None:
        """One optimizer step on this rank's next batch (or `accumulate` micro-batches) of the epoch; no host read."""
        begin = time.perf_counter()
        state.optimizer.zero_grad(set_to_none=True)
        first = state.step_in_epoch * state.batch * state.accumulate
        for micro in range(state.accumulate):
            index = mine[first + micro * state.batch:first + (micro + 1) * state.batch]
            # DDP all-reduces gradients on the last micro-batch only; the others accumulate locally.
            quiet = micro < state.accumulate - 1 and hasattr(state.net, "no_sync")  # DDP only, not DiLoCo
            with state.net.no_sync() if quiet else contextlib.nullcontext():
                loss, correct, counted = self._forward(state, state.net, *state.train_set[index])
                state.scaler.scale(loss / state.accumulate).backward()
            state.window.add(loss, correct, counted, len(index))
        apply_step(state)
        seconds = time.perf_counter() - begin
        state.window.tick(seconds)
        compute = state.step_compute if state.outer is None and self.world > 1 else seconds
        state.window.compute += compute
        state.run_traffic.compute += compute
        state.run_traffic.steps += 1
        if state.outer is not None:
            state.outer.inner_step_taken()
            if state.outer.due():
                self._outer_step(state)
        else:
            state.window.sent += state.step_bytes
            state.run_traffic.sent += state.step_bytes

    def _outer_step(self, state: RunState) -> None:
        """DiLoCo: average the pseudo-gradients and step the global model (every rank at the same step)."""
        assert state.outer is not None
        sent = state.outer.sync()
        state.window.sent += sent
        state.run_traffic.sent += sent

    def _forward(self, state: RunState, net: Any, inputs: Any, targets: Any) -> tuple[Any, Any, int]:
        """Loss (a device tensor), right predictions (a device tensor) and the count of predictions of one batch."""
        from app.training.recipes.models import check_outputs, loss_and_counts

        inputs, targets = inputs.to(state.device, non_blocking=True), targets.to(state.device, non_blocking=True)
        assert state.precision is not None
        with state.precision.autocast():
            outputs = net(inputs)
        check_outputs(state.recipe.name, outputs, targets, state.recipe.per_position)
        return loss_and_counts(outputs, targets)

    def _after_step(self, state: RunState, pacing: Pacing) -> bool:
        """Stop (emergency checkpoint), checkpoint or report as due; True when stopped."""
        # DiLoCo checkpoints at outer steps, where every rank holds the global model; a stop takes one early.
        boundary = state.outer is None or state.outer.inner_done == 0
        stop, checkpoint = self._control_flags(state.step, pacing.unit, pacing.interval, pacing.last_checkpoint_time,
                                               pacing.last_checkpoint_step, force=state.outer is not None and boundary,
                                               may_checkpoint=boundary)
        if stop:
            if not boundary:
                self._outer_step(state)
            self._save("emergency", state)
            self.channel.send(Stopped(step=state.step))
            return True
        if checkpoint:
            self._save("regular" if self.rank == 0 else "distributed", state)
            pacing.last_checkpoint_time, pacing.last_checkpoint_step = time.monotonic(), state.step
        if time.monotonic() - pacing.last_report >= pacing.report_every:
            window = state.window
            elapsed = time.perf_counter() - window.start
            self._progress(state, window.samples / elapsed if elapsed > 0 else 0.0, window.step_time / window.steps,
                           elapsed)
            state.window = Window()
            pacing.last_report = time.monotonic()
        return False

    def _end_epoch(self, state: RunState) -> None:
        """Validate, report the epoch, and move to the next one when this one is complete."""
        begin = time.perf_counter()
        val_loss, val_acc = self._evaluate(state)
        evaluating = time.perf_counter() - begin  # computing, not waiting on the network
        state.window.compute += evaluating
        state.run_traffic.compute += evaluating
        val_ppl = _perplexity(val_loss) if state.perplexity else None
        state.best = {"val_loss": val_loss, "val_accuracy": val_acc, **state.window.averages(state.perplexity)}
        if val_ppl is not None:
            state.best["val_perplexity"] = val_ppl
        self.channel.send(Epoch(epoch=state.epoch + 1, step=state.step, val_loss=val_loss, val_accuracy=val_acc,
                                loss=state.best.get("loss"), accuracy=state.best.get("accuracy"),
                                val_perplexity=val_ppl))
        if state.step_in_epoch >= state.steps_per_epoch:
            state.epoch += 1
            state.step_in_epoch = 0

    def _export(self, state: RunState, train_start: float, start_step: int) -> None:
        """Rank 0 writes the final checkpoint and the model's weights; every rank reports Finished."""
        metrics = {**state.best, **state.window.averages(state.perplexity)}
        params_hash = self._params_hash(state.model)
        model_path: str | None = None
        model_sha256: str | None = None
        if self.rank == 0:
            path = self.checkpoint_dir / f"final-{state.step:09d}.pt"
            sha = self._write(path, state, metrics)
            self.channel.send(Checkpoint(kind="final", path=str(path), sha256=sha, step=state.step, epoch=state.epoch,
                                         metrics=metrics))
            model_path, model_sha256 = self._export_weights(state)
        elapsed = time.perf_counter() - train_start
        splits = int(self.spec.get("max_clients") or self.world) if self.elastic else self.world  # the global batch
        samples = (state.step - start_step) * state.batch * state.accumulate * splits
        sent, utilisation = state.run_traffic.traffic(elapsed)
        self.channel.send(Finished(
            step=state.step, total_steps=state.total_steps, epoch=min(state.epoch + 1, state.epochs), metrics=metrics,
            samples_per_sec=samples / elapsed if elapsed > 0 else None,
            params_sha256=params_hash, model_path=model_path, model_sha256=model_sha256,
            bytes_per_step=sent, utilisation=utilisation))

    def _export_weights(self, state: RunState) -> tuple[str, str]:
        """The weights as safetensors (recipe, options and tokenizer in its header and a JSON beside); path, sha256."""
        from app.training.model_files import ModelMeta, save_model

        weights = self.model_dir / f"{self.config['name']}-task{self.spec['task_id']}-g{self.spec['generation']}.safetensors"
        info, recipe = state.info, state.recipe
        meta = ModelMeta(recipe=recipe.name, options=model_options(recipe.name, self.config.get("model_options") or {}),
                         input_kind=recipe.input_kind, input_shape=[int(d) for d in info.input_shape],
                         n_classes=int(info.n_classes), per_position=recipe.per_position, metric=metric_of(recipe),
                         dataset=str(self.config["dataset"]), tokenizer=getattr(info, "tokenizer", None))
        return str(weights), save_model(state.model, meta, weights)

    def _control_flags(self, step: int, unit: str, interval: int, last_time: float, last_step: int,
                       force: bool = False, may_checkpoint: bool = True) -> tuple[bool, bool]:
        """(stop, checkpoint) agreed by every rank: rank 0's decision is broadcast every few steps."""
        stop = self.control.stop_requested.is_set()
        if unit == "steps":
            checkpoint = step - last_step >= interval
        else:
            checkpoint = time.monotonic() - last_time >= interval
        checkpoint = checkpoint and may_checkpoint
        if self.world == 1:
            return stop, checkpoint
        # Collectives must be called by every rank at the same step: sync every SYNC_EVERY steps, and at
        # step-based checkpoints (the same step on every rank); a stop waits for the next sync point.
        if step % SYNC_EVERY != 0 and not (unit == "steps" and checkpoint) and not force:
            return False, False
        import torch
        import torch.distributed as dist

        flags = torch.tensor([1 if stop else 0, 1 if checkpoint else 0], dtype=torch.int64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1])

    def _progress(self, state: RunState, samples_per_sec: float, step_time: float, elapsed: float) -> None:
        best, step, total = state.best, state.step, state.total_steps
        sent, utilisation = state.window.traffic(elapsed)
        averages = state.window.averages(state.perplexity)
        metrics: dict[str, float | None] = {"loss": averages.get("loss"), "accuracy": averages.get("accuracy"),
                                            "val_loss": best.get("val_loss"), "val_accuracy": best.get("val_accuracy")}
        if state.perplexity:
            metrics |= {"perplexity": averages.get("perplexity"), "val_perplexity": best.get("val_perplexity")}
        self.channel.send(Progress(step=step, total_steps=total, epoch=state.epoch + 1,
                                   progress=round(100.0 * step / total, 2) if total else 100.0,
                                   samples_per_sec=samples_per_sec * self.world, rank_samples_per_sec=samples_per_sec,
                                   step_time=step_time, metrics=metrics, bytes_per_step=sent,
                                   utilisation=utilisation))

    def _save(self, kind: CheckpointKind, state: RunState) -> None:
        suffix = f"-r{self.rank}" if kind == "distributed" or (kind == "emergency" and self.rank) else ""
        path = self.checkpoint_dir / f"{kind}-{state.step:09d}{suffix}.pt"
        # Every rank writes the whole replica (DDP keeps them identical) plus its own RNG and sampler
        # position, so the group can resume from any survivor when rank 0's machine is gone.
        sha = self._write(path, state, state.best)
        self.channel.send(Checkpoint(kind=kind, path=str(path), sha256=sha, step=state.step, epoch=state.epoch,
                                     metrics=state.best))

    def _write(self, path: Path, state: RunState, metrics: dict[str, Any]) -> str:
        payload = {
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict() if state.scaler is not None and state.scaler.is_enabled() else None,
            "epoch": state.epoch,
            "step_in_epoch": state.step_in_epoch,
            "step": state.step,
            "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
            "rng": _rng_state(),
            "rank": self.rank,
        }
        if state.outer is not None:
            payload["diloco"] = state.outer.state_dict()
        if state.contributions:
            payload["contributions"] = dict(state.contributions)
        return save_checkpoint(path, payload)

    def _optimizer(self, model: Any) -> Any:
        import torch

        config = self.config
        lr, decay = float(config["learning_rate"]), float(config.get("weight_decay", 0.0))
        name = config.get("optimizer", "adam")
        if name == "sgd":
            return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(config.get("momentum", 0.9)), weight_decay=decay)
        if name == "adamw":
            return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay)

    def _scheduler(self, optimizer: Any, total_steps: int, steps_per_epoch: int) -> Any:
        import torch

        kind = self.config.get("lr_schedule", "constant")
        warmup = int(self.config.get("warmup_steps") or 0)
        if warmup:
            return torch.optim.lr_scheduler.LambdaLR(optimizer, partial_lr(kind, warmup, total_steps, steps_per_epoch))
        if kind == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
        if kind == "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, steps_per_epoch), gamma=0.5)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    @staticmethod
    def _epoch_order(n: int, seed: int, epoch: int) -> Any:
        import torch

        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return torch.randperm(n, generator=generator)

    def _device(self) -> Any:
        import torch

        name = str(self.spec.get("device", "cpu"))
        if name == "mps":
            mps = getattr(torch.backends, "mps", None)
            if mps is not None and mps.is_available():
                return torch.device("mps")
            self.channel.log("this machine's torch has no usable mps device: training on the CPU", "warning")
            return torch.device("cpu")
        if not name.startswith("cuda") or not torch.cuda.is_available():
            return torch.device("cpu")
        device = torch.device(name)
        torch.cuda.set_device(device)
        fraction = self.spec.get("gpu_memory_fraction")
        if fraction:
            torch.cuda.set_per_process_memory_fraction(float(fraction), device)
        return device

    def _evaluate(self, state: RunState) -> tuple[float, float]:
        """Mean loss and accuracy over the validation set, summed on the device and read once."""
        import torch

        net, val_set, size = state.net, state.val_set, max(state.batch, 256)
        net.eval()
        total, correct, counted = torch.zeros((), device=state.device), torch.zeros((), device=state.device), 0
        module = getattr(net, "module", net)
        with torch.no_grad():
            for start in range(0, len(val_set), size):
                loss, right, n = self._forward(state, module, *val_set[start:start + size])
                total += loss.float() * n
                correct += right
                counted += n
        net.train()
        total_loss, right_count = _read(total, correct)
        return (total_loss / counted if counted else math.nan), (right_count / counted if counted else 0.0)

    @staticmethod
    def _params_hash(model: Any) -> str:
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


def apply_step(state: RunState) -> None:
    """Clip (when asked), step the optimizer and the schedule with the gradients in place, count the step."""
    import torch

    if state.grad_clip is not None:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), state.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.step_in_epoch += 1
    state.step += 1


def metric_of(recipe: ModelRecipe) -> str:
    """The recipe's evaluation metric: perplexity for a language model, top-1 accuracy for a classifier."""
    from app.training.catalog import BUILTIN_MODELS

    builtin = BUILTIN_MODELS.get(recipe.name)
    if builtin is not None:
        return builtin.metric
    return "perplexity" if recipe.per_position else "accuracy"


def model_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """A built-in model's options with the catalog's defaults filled in (an installed model's as given)."""
    from app.training.catalog import BUILTIN_MODELS
    from app.training.recipes.datasets import resolved_options

    recipe = BUILTIN_MODELS.get(name)
    return resolved_options(recipe, options) if recipe is not None else dict(options)


def partial_lr(kind: str, warmup: int, total_steps: int, steps_per_epoch: int) -> Any:
    """The LR factor of step s: a linear warm-up over `warmup` steps, then the schedule (cosine decays to 0)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        after = step - warmup
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, after / max(1, total_steps - warmup))))
        if kind == "step":
            return 0.5 ** (after // max(1, steps_per_epoch))
        return 1.0

    return factor


def source_policy(spec: dict[str, Any]) -> SourcePolicy:
    """The agent's dataset_dirs and the farm's dataset hosts, as handed over in the spec (none: nothing allowed)."""
    return SourcePolicy(dirs=tuple(Path(d) for d in spec.get("dataset_dirs") or ()),
                        hosts=tuple(str(h) for h in spec.get("dataset_hosts") or ()))


def main() -> int:
    """Worker entry point: read the spec, train, report."""
    import json
    import logging

    # stderr is this machine's worker log file: details kept off the farm's database (e.g. why a download failed).
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from app.training.priority import lower_own_priority

    lower_own_priority()
    channel = Channel()
    control = Control()
    line = sys.stdin.readline()
    try:
        spec = json.loads(line)
    except ValueError:
        channel.send(Failed(error="the worker received no valid spec", traceback="", permanent=True))
        return 2
    if spec.get("elastic"):
        from app.training.elastic import Membership, Orders

        rendezvous = spec.get("rendezvous") or None
        control.orders = Orders(Membership(int(spec["generation"]), int(spec["rank"]), int(spec["world_size"]),
                                           tuple(str(m) for m in spec.get("members") or ())),
                                (str(rendezvous["host"]), int(rendezvous["port"])) if rendezvous else None)
    control.watch(sys.stdin)
    try:
        return Trainer(spec, channel, control).run()
    except BaseException as exc:  # reported as data: the agent decides what happens to the task
        from app.training.recipes import DataError, RecipeError

        permanent = isinstance(exc, RecipeError)
        lines = traceback.format_exception(exc)
        # A recipe's own error says what is wrong; its traceback stays in this machine's log.
        short = "" if isinstance(exc, (RecipeError, DataError)) else "".join(lines[-6:])[-4000:]
        channel.send(Failed(error=f"{type(exc).__name__}: {exc}"[:2000], traceback=short, permanent=permanent))
        try:
            sys.stderr.write("".join(lines))
            sys.stderr.flush()
        except OSError:
            pass  # the log is on a full disk: the agent has the failure already
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The training worker: one process per rank, spawned by the agent; the only place torch is imported.

Protocol: the agent writes the run's spec as one JSON line on stdin, then may write {"cmd": "stop"}
(emergency checkpoint, then exit). End of stdin means the agent is gone: the worker stops at once.
The worker writes messages (app.training.messages) as JSON lines on its original stdout; anything
else printed goes to stderr.
"""

from __future__ import annotations

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
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from app.files import publish_atomically, sha256_file
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
            self.parent_gone.set()
            self.stop_requested.set()

        threading.Thread(target=run, name="control", daemon=True).start()


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


class Trainer:
    """One rank's training run."""

    def __init__(self, spec: dict[str, Any], channel: Channel, control: Control) -> None:
        self.spec = spec
        self.channel = channel
        self.control = control
        self.config = spec["config"]
        self.rank = int(spec["rank"])
        self.world = int(spec["world_size"])
        self.checkpoint_dir = Path(spec["checkpoint_dir"])
        self.model_dir = Path(spec["model_dir"])

    def run(self) -> int:
        import torch

        torch.set_num_threads(max(1, int(self.spec.get("threads") or 1)))
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
        import torch

        from app.training.recipes.models import loss_and_correct
        from app.training.recipes.plugins import build_model, load_dataset

        config = self.config
        seed = int(config.get("seed", 0))
        torch.manual_seed(seed)
        random.seed(seed)
        model_name = config["model"]
        want = "image" if model_name == "cnn" else ("tokens" if model_name == "char_lstm" else "vector")
        train_set, val_set, info = load_dataset(
            config["dataset"], config.get("dataset_options") or {}, cache_dir=Path(self.spec["cache_dir"]),
            validation_split=float(config.get("validation_split", 0.1)), seed=seed, want=want,
            log=lambda m: self.channel.log(m), policy=source_policy(self.spec),
        )
        torch.manual_seed(seed)
        device = self._device()
        model = build_model(model_name, config.get("model_options") or {}, info).to(device)
        self.device = device
        net = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = self._optimizer(model)
        batch = int(config["batch_size"])
        per_rank = len(train_set) // self.world
        steps_per_epoch = max(1, per_rank // batch)
        epochs = int(config["epochs"])
        total_steps = epochs * steps_per_epoch
        if config.get("max_steps"):
            total_steps = min(total_steps, int(config["max_steps"]))
        scheduler = self._scheduler(optimizer, total_steps, steps_per_epoch)

        epoch, step_in_epoch, global_step = 0, 0, 0
        best: dict[str, Any] = {}
        resume = self.spec.get("resume")
        if resume:
            state = load_checkpoint(Path(resume["path"]), resume["sha256"])
            problem = state_problem(state, "full")
            if problem is not None:
                raise ValueError(f"checkpoint {Path(resume['path']).name} {problem}")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            epoch, step_in_epoch, global_step = int(state["epoch"]), int(state["step_in_epoch"]), int(state["step"])
            best = dict(state.get("metrics") or {})
            rank_state = self.spec.get("resume_rank_state")
            rng = state.get("rng")
            if rank_state:
                rng = load_checkpoint(Path(rank_state["path"]), rank_state["sha256"]).get("rng", rng)
            if rng is not None:
                _set_rng_state(rng)
            self.channel.log(f"resumed from {Path(resume['path']).name} at step {global_step} (epoch {epoch + 1})")
        self.channel.send(Started(step=global_step, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                                  samples=len(train_set), validation_samples=len(val_set)))

        interval, unit = self.spec["checkpoint_every"]
        last_ckpt_time, last_ckpt_step = time.monotonic(), global_step
        report_every = float(self.spec.get("progress_interval", 2.0))
        last_report = time.monotonic()
        window_loss, window_correct, window_count, window_samples, window_start = 0.0, 0, 0, 0, time.perf_counter()
        step_time_sum, step_time_n = 0.0, 0
        done = global_step >= total_steps
        train_start, start_step = time.perf_counter(), global_step

        while not done and epoch < epochs:
            order = self._epoch_order(len(train_set), seed, epoch)
            mine = order[self.rank::self.world][: steps_per_epoch * batch]
            net.train()
            while step_in_epoch < steps_per_epoch:
                begin = time.perf_counter()
                index = mine[step_in_epoch * batch:(step_in_epoch + 1) * batch]
                inputs, targets = train_set[index]
                inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                outputs = net(inputs)
                loss, correct, counted = loss_and_correct(model_name, outputs, targets)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                scheduler.step()
                step_in_epoch += 1
                global_step += 1
                step_time_sum += time.perf_counter() - begin
                step_time_n += 1
                window_loss += float(loss.detach()) * counted
                window_correct += correct
                window_count += counted
                window_samples += len(index)

                stop, checkpoint = self._control_flags(global_step, unit, interval, last_ckpt_time, last_ckpt_step)
                if stop:
                    self._save("emergency", model, optimizer, scheduler, epoch, step_in_epoch, global_step, best)
                    self.channel.send(Stopped(step=global_step))
                    return 0
                if checkpoint:
                    kind: CheckpointKind = "regular" if self.rank == 0 else "distributed"
                    self._save(kind, model, optimizer, scheduler, epoch, step_in_epoch, global_step, best)
                    last_ckpt_time, last_ckpt_step = time.monotonic(), global_step
                if time.monotonic() - last_report >= report_every:
                    elapsed = time.perf_counter() - window_start
                    self._progress(global_step, total_steps, epoch, window_loss, window_correct, window_count,
                                   window_samples / elapsed if elapsed > 0 else 0.0, step_time_sum / step_time_n, best)
                    window_loss, window_correct, window_count, window_samples = 0.0, 0, 0, 0
                    window_start, step_time_sum, step_time_n = time.perf_counter(), 0.0, 0
                    last_report = time.monotonic()
                if global_step >= total_steps:
                    done = True
                    break
            val_loss, val_acc = self._evaluate(net, val_set, model_name, batch)
            best = {"val_loss": val_loss, "val_accuracy": val_acc}
            if window_count:
                best["loss"] = window_loss / window_count
                best["accuracy"] = window_correct / window_count
            self.channel.send(Epoch(epoch=epoch + 1, step=global_step, val_loss=val_loss, val_accuracy=val_acc,
                                    loss=best.get("loss"), accuracy=best.get("accuracy")))
            if step_in_epoch >= steps_per_epoch:
                epoch += 1
                step_in_epoch = 0

        metrics = dict(best)
        if window_count:
            metrics["loss"] = window_loss / window_count
            metrics["accuracy"] = window_correct / window_count
        params_hash = self._params_hash(model)
        model_path: str | None = None
        model_sha256: str | None = None
        if self.rank == 0:
            path = self.checkpoint_dir / f"final-{global_step:09d}.pt"
            sha = self._write(path, model, optimizer, scheduler, epoch, step_in_epoch, global_step, metrics)
            self.channel.send(Checkpoint(kind="final", path=str(path), sha256=sha, step=global_step, epoch=epoch,
                                         metrics=metrics))
            weights = self.model_dir / f"{self.config['name']}-task{self.spec['task_id']}-g{self.spec['generation']}.pt"
            weights.parent.mkdir(parents=True, exist_ok=True)
            tmp = weights.with_name(f".{weights.name}.tmp")
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, tmp)
            publish_atomically(tmp, weights)
            model_path, model_sha256 = str(weights), sha256_file(weights)
        elapsed = time.perf_counter() - train_start
        self.channel.send(Finished(
            step=global_step, total_steps=total_steps, epoch=min(epoch + 1, epochs), metrics=metrics,
            samples_per_sec=(global_step - start_step) * batch * self.world / elapsed if elapsed > 0 else None,
            params_sha256=params_hash, model_path=model_path, model_sha256=model_sha256))
        return 0

    def _control_flags(self, step: int, unit: str, interval: int, last_time: float, last_step: int) -> tuple[bool, bool]:
        """(stop, checkpoint) agreed by every rank: rank 0's decision is broadcast every few steps."""
        stop = self.control.stop_requested.is_set()
        if unit == "steps":
            checkpoint = step - last_step >= interval
        else:
            checkpoint = time.monotonic() - last_time >= interval
        if self.world == 1:
            return stop, checkpoint
        # Collectives must be called by every rank at the same step: sync every SYNC_EVERY steps, and at
        # step-based checkpoints (the same step on every rank); a stop waits for the next sync point.
        if step % SYNC_EVERY != 0 and not (unit == "steps" and checkpoint):
            return False, False
        import torch
        import torch.distributed as dist

        flags = torch.tensor([1 if stop else 0, 1 if checkpoint else 0], dtype=torch.int64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1])

    def _progress(self, step: int, total: int, epoch: int, loss: float, correct: int, count: int,
                  samples_per_sec: float, step_time: float, best: dict[str, Any]) -> None:
        metrics = {"loss": loss / count if count else None, "accuracy": correct / count if count else None,
                   "val_loss": best.get("val_loss"), "val_accuracy": best.get("val_accuracy")}
        self.channel.send(Progress(step=step, total_steps=total, epoch=epoch + 1,
                                   progress=round(100.0 * step / total, 2) if total else 100.0,
                                   samples_per_sec=samples_per_sec * self.world, rank_samples_per_sec=samples_per_sec,
                                   step_time=step_time, metrics=metrics))

    def _save(self, kind: CheckpointKind, model: Any, optimizer: Any, scheduler: Any, epoch: int, step_in_epoch: int,
              step: int, metrics: dict[str, Any]) -> None:
        suffix = f"-r{self.rank}" if kind == "distributed" or (kind == "emergency" and self.rank) else ""
        path = self.checkpoint_dir / f"{kind}-{step:09d}{suffix}.pt"
        # Every rank writes the whole replica (DDP keeps them identical) plus its own RNG and sampler
        # position, so the group can resume from any survivor when rank 0's machine is gone.
        sha = self._write(path, model, optimizer, scheduler, epoch, step_in_epoch, step, metrics)
        self.channel.send(Checkpoint(kind=kind, path=str(path), sha256=sha, step=step, epoch=epoch, metrics=metrics))

    def _write(self, path: Path, model: Any, optimizer: Any, scheduler: Any, epoch: int, step_in_epoch: int,
               step: int, metrics: dict[str, Any]) -> str:
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "step": step,
            "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
            "rng": _rng_state(),
            "rank": self.rank,
        }
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
        if not name.startswith("cuda") or not torch.cuda.is_available():
            return torch.device("cpu")
        device = torch.device(name)
        torch.cuda.set_device(device)
        fraction = self.spec.get("gpu_memory_fraction")
        if fraction:
            torch.cuda.set_per_process_memory_fraction(float(fraction), device)
        return device

    def _evaluate(self, net: Any, val_set: Any, model_name: str, batch: int) -> tuple[float, float]:
        import torch

        from app.training.recipes.models import loss_and_correct

        net.eval()
        total_loss, correct, counted = 0.0, 0, 0
        module = getattr(net, "module", net)
        with torch.no_grad():
            for start in range(0, len(val_set), max(batch, 256)):
                inputs, targets = val_set[start:start + max(batch, 256)]
                inputs, targets = inputs.to(self.device), targets.to(self.device)
                loss, right, n = loss_and_correct(model_name, module(inputs), targets)
                total_loss += float(loss) * n
                correct += right
                counted += n
        net.train()
        return (total_loss / counted if counted else math.nan), (correct / counted if counted else 0.0)

    @staticmethod
    def _params_hash(model: Any) -> str:
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


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

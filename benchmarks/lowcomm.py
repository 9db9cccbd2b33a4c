"""Low-communication training: DDP against DiLoCo (fp16, int8) between two hosts joined by a link limited with
`tc qdisc … tbf` to 10 and 100 Mbit/s, and unlimited.

Two network namespaces joined by one veth pair stand for two machines; each runs the product's training worker
(`python -m app.training.worker`, the process an agent starts for its rank) with the spec an agent would give it,
so every byte of the group's exchange crosses the limited link. The link is measured first (round trips and a
4 MiB transfer, as agents do) and handed to the workers as the group former does; `auto` then picks the mode.
Namespaces and qdiscs are created here and deleted at the end. Needs root and iproute2.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import Figure

ROOT = Path(__file__).resolve().parents[1]
PROBE_BYTES = 4 << 20
PROBE_PORT = 29411


@dataclass
class Host:
    """One namespace with its end of the veth pair."""

    netns: str
    device: str
    address: str

    def prefix(self) -> list[str]:
        """Run a program on this host."""
        return ["ip", "netns", "exec", self.netns]


@dataclass
class Pair:
    """Two hosts joined by one veth pair."""

    hosts: tuple[Host, Host]
    limit: str | None = None

    def shape(self, mbit: int | None) -> None:
        """Limit both directions to `mbit` (None: unlimited)."""
        for host in self.hosts:
            subprocess.run(["ip", "netns", "exec", host.netns, "tc", "qdisc", "del", "dev", host.device, "root"],
                           capture_output=True)
            if mbit is not None:
                _run(*host.prefix(), "tc", "qdisc", "add", "dev", host.device, "root", "tbf", "rate", f"{mbit}mbit",
                     "burst", f"{max(32, mbit * 4)}kbit", "latency", "200ms")
        self.limit = f"{mbit} Mbit/s" if mbit else "unlimited"


def _run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, text=True)


def _pair() -> Pair:
    tag = uuid.uuid4().hex[:5]
    net = f"10.{200 + int(tag, 16) % 50}.{int(tag[:2], 16)}."
    hosts = (Host(f"aflc{tag}0", f"aflc{tag}a", f"{net}1"), Host(f"aflc{tag}1", f"aflc{tag}b", f"{net}2"))
    for host in hosts:
        _run("ip", "netns", "add", host.netns)
    _run("ip", "link", "add", hosts[0].device, "type", "veth", "peer", "name", hosts[1].device)
    for host in hosts:
        _run("ip", "link", "set", host.device, "netns", host.netns)
        _run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", host.device)
        _run("ip", "-n", host.netns, "link", "set", host.device, "up")
        _run("ip", "-n", host.netns, "link", "set", "lo", "up")
    return Pair(hosts)


def _delete(pair: Pair) -> None:
    for host in pair.hosts:
        subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)


def _env(host: Host) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": host.device}


def measure_link(pair: Pair) -> tuple[float, float]:
    """(Mbit/s, latency s) from host 1 to host 0: three empty round trips, then a 4 MiB transfer."""
    server = subprocess.Popen([*pair.hosts[0].prefix(), sys.executable, "-m", "benchmarks.lowcomm", "serve"],
                              env=_env(pair.hosts[0]), stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        server.stdout.readline()  # listening
        done = subprocess.run([*pair.hosts[1].prefix(), sys.executable, "-m", "benchmarks.lowcomm", "fetch",
                               pair.hosts[0].address], env=_env(pair.hosts[1]), capture_output=True, text=True,
                              timeout=120, check=True)
    finally:
        server.kill()
        server.wait()
    mbit, latency = (float(x) for x in done.stdout.split())
    return mbit, latency


def _serve() -> None:
    with socket.create_server(("0.0.0.0", PROBE_PORT)) as listener:
        print("listening", flush=True)
        while True:
            conn, _ = listener.accept()
            with conn:
                size = int.from_bytes(conn.recv(8), "big")
                conn.sendall(bytes(size) if size else b"!")


def _fetch(host: str) -> None:
    def get(size: int) -> float:
        begin = time.perf_counter()
        with socket.create_connection((host, PROBE_PORT)) as conn:
            conn.sendall(size.to_bytes(8, "big"))
            want, got = max(size, 1), 0
            while got < want:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
        return time.perf_counter() - begin

    from app.services.links import link_figures

    latencies = [get(0) for _ in range(3)]
    mbit, latency_ms = link_figures(latencies, get(PROBE_BYTES), PROBE_BYTES)
    print(mbit, latency_ms / 1000)


@dataclass
class Run:
    """What rank 0 reported for one run."""

    sync: str = ""
    finished: dict[str, Any] = field(default_factory=dict)
    val_loss: float | None = None
    wall: float = 0.0


def _config(sync: str, compression: str, steps: int, quick: bool) -> dict[str, Any]:
    from app.scheduling.validation import validate_task
    from app.training.catalog import Catalog

    # 2.6 M parameters at 1024 samples a step: compute-bound on the unlimited link, not at 10 or 100 Mbit/s.
    hidden, batch = ([256, 128], 128) if quick else ([2048, 1024], 1024)
    task = {"type": "training", "requirements": {}, "priority": 0, "config": {
        "name": "lowcomm", "model": "mlp", "dataset": "synthetic", "batch_size": batch, "learning_rate": 0.001,
        "epochs": 1000, "max_steps": steps, "distributed": True, "n_clients": 2, "sync": sync,
        "compression": compression, "model_options": {"hidden": hidden},
        "dataset_options": {"kind": "vector", "samples": 100_000, "features": 256, "classes": 10, "noise": 15.0}}}
    return validate_task(task, Catalog.load()).config


def run_pair(pair: Pair, config: dict[str, Any], link: tuple[float, float], tmp: Path) -> Run:
    """Both ranks' workers, rank 0 on host 0; what rank 0 reported once both finished."""
    from app.training.messages import Epoch, Finished, Rendezvous, Started, decode

    result, port, procs = Run(), threading.Event(), []
    tmp.mkdir(parents=True, exist_ok=True)
    found: dict[str, int] = {}

    def spec(rank: int) -> dict[str, Any]:
        folder = tmp / f"r{rank}"
        return {"task_id": 1, "generation": 1, "rank": rank, "world_size": 2, "backend": "gloo",
                "rendezvous": {"host": pair.hosts[0].address, "port": found.get("port", 0)} if rank else None,
                "bind_host": pair.hosts[0].address, "config": config, "cache_dir": str(tmp.parent / "datasets"),
                "checkpoint_dir": str(folder / "checkpoints"), "model_dir": str(folder / "models"), "resume": None,
                "resume_rank_state": None, "threads": 1, "checkpoint_every": [10**9, "steps"], "progress_interval": 2.0,
                "collective_timeout": 600.0, "dataset_dirs": [], "dataset_hosts": [], "device": "cpu",
                "link": {"mbit_per_s": link[0], "latency_s": link[1]}}

    def read(rank: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            message = decode(line)
            if isinstance(message, Rendezvous):
                found["port"] = message.port
                port.set()
            elif rank == 0 and isinstance(message, Started):
                result.sync = message.sync or ""
            elif rank == 0 and isinstance(message, Epoch):
                result.val_loss = message.val_loss
            elif rank == 0 and isinstance(message, Finished):
                result.finished = {"metrics": message.metrics, "samples_per_sec": message.samples_per_sec,
                                   "bytes_per_step": message.bytes_per_step, "utilisation": message.utilisation}

    begin = time.perf_counter()
    threads = []
    for rank in (0, 1):
        if rank == 1 and not port.wait(120):
            raise RuntimeError("rank 0 published no rendezvous port")
        host = pair.hosts[rank]
        proc = subprocess.Popen([*host.prefix(), sys.executable, "-m", "app.training.worker"], env=_env(host),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=(tmp / f"r{rank}.log").open("w"),
                                text=True)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(spec(rank)) + "\n")
        proc.stdin.flush()
        procs.append(proc)
        threads.append(threading.Thread(target=read, args=(rank, proc), daemon=True))
        threads[-1].start()
    try:
        for proc in procs:
            proc.wait(timeout=1800)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            if proc.stdin:
                proc.stdin.close()
    for thread in threads:
        thread.join(5)
    result.wall = time.perf_counter() - begin
    if not result.finished:
        raise RuntimeError(f"the run did not finish; see {tmp}/r0.log:\n{(tmp / 'r0.log').read_text()[-2000:]}")
    return result


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    return None


def measure(quick: bool = False) -> list[Figure]:
    """Every run's figures, as ratios against DDP where the target says so."""
    reason = _unavailable()
    if reason:
        return [Figure("lowcomm: skipped", 0, "", "root and iproute2", False, reason)]
    steps = 200 if quick else 360
    tmp = Path(tempfile.mkdtemp(prefix="aifarm-lowcomm-"))
    pair = _pair()
    figures: list[Figure] = []
    try:
        figures += _scenario(pair, steps, quick, tmp)
    finally:
        _delete(pair)
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


def _scenario(pair: Pair, steps: int, quick: bool, tmp: Path) -> list[Figure]:
    """Unlimited `auto` (the reference), then at 10 and 100 Mbit/s: DDP, and `auto` with fp16 and with int8."""
    pair.shape(None)
    link = measure_link(pair)
    reference = run_pair(pair, _config("auto", "fp16", steps, quick), link, tmp / "ref")
    ref_loss = reference.finished["metrics"].get("val_loss")
    figures = [_row("unlimited", "auto", link, reference, None, None, steps),
               Figure("lowcomm: auto on the unlimited link", 1.0 if reference.sync.startswith("ddp") else 0.0, "",
                      "picks ddp", reference.sync.startswith("ddp"), reference.sync)]
    for mbit in (10, 100):
        pair.shape(mbit)
        link = measure_link(pair)
        ddp_steps = 3  # DDP is slow on these links: a few steps show its utilisation
        ddp = run_pair(pair, _config("ddp", "fp16", ddp_steps, quick), link, tmp / f"ddp{mbit}")
        figures.append(_row(f"{mbit} Mbit/s", "ddp", link, ddp, None, None, ddp_steps))
        for compression in ("fp16", "int8"):
            run = run_pair(pair, _config("auto", compression, steps, quick), link, tmp / f"{compression}{mbit}")
            figures.append(_row(f"{mbit} Mbit/s", f"auto {compression}", link, run, ddp, ref_loss, steps))
            if mbit == 10:
                figures += _targets(run, ddp, ref_loss, compression)
    pair.shape(None)
    return figures


def _row(where: str, mode: str, link: tuple[float, float], run: Run, ddp: Run | None, ref_loss: float | None,
         steps: int) -> Figure:
    done = run.finished
    loss = done["metrics"].get("val_loss")
    ratios = ""
    if ddp is not None:
        ratios = (f"; vs DDP on this link: bytes/step ×{done['bytes_per_step'] / ddp.finished['bytes_per_step']:.4f}, "
                  f"samples/s ×{done['samples_per_sec'] / ddp.finished['samples_per_sec']:.2f}")
    if ref_loss and loss:
        ratios += f"; val loss ÷ unlimited DDP's at {steps} steps: {loss / ref_loss:.3f}"
    return Figure(f"lowcomm: {where}, {mode}: utilisation", done["utilisation"] or 0.0, "", "reported", True,
                  f"sync {run.sync or '?'}; measured link {link[0]:.1f} Mbit/s, {link[1] * 1000:.2f} ms; "
                  f"{done['bytes_per_step']:,.0f} bytes/step, {done['samples_per_sec']:,.0f} samples/s, "
                  f"val loss {loss:.4f} after {steps} steps, {run.wall:.0f} s{ratios}")


def _targets(run: Run, ddp: Run, ref_loss: float | None, compression: str) -> list[Figure]:
    done = run.finished
    loss = done["metrics"].get("val_loss") or 0.0
    within = abs(loss / ref_loss - 1) if ref_loss else 1.0
    return [
        Figure(f"lowcomm: 10 Mbit/s DiLoCo {compression} utilisation", done["utilisation"] or 0.0, "", ">= 0.90",
               (done["utilisation"] or 0.0) >= 0.90, f"DDP on the same link: {ddp.finished['utilisation'] or 0:.3f}"),
        Figure(f"lowcomm: 10 Mbit/s DiLoCo {compression} val loss vs unlimited DDP", 100 * within, "%", "<= 3%",
               within <= 0.03, f"{loss:.4f} against {ref_loss or 0:.4f} at equal samples"),
        Figure(f"lowcomm: auto at 10 Mbit/s ({compression})", 1.0 if run.sync.startswith("diloco") else 0.0, "",
               "picks diloco", run.sync.startswith("diloco"), run.sync),
    ]


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        _serve()
    else:
        _fetch(sys.argv[2])

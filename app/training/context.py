"""What one rank of one attempt is told when it starts: who, where, with whom, on which device. Built by the scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.peerfiles import PeerFiles
from app.scheduling.claiming import Formation
from app.scheduling.decide import Link

OutcomeKind = Literal["completed", "stopped", "failed", "error", "fenced"]


@dataclass(frozen=True)
class Outcome:
    """How this rank's part of an attempt ended."""

    kind: OutcomeKind
    reason: str = ""


@dataclass(frozen=True)
class Limits:
    """The timing and retry settings a run follows."""

    heartbeat_interval: float
    failure_timeout: float
    max_attempts: int


@dataclass(frozen=True)
class RunContext:
    """One formed attempt of a task as this client takes part in it."""

    task_id: int
    config: dict[str, Any]
    formation: Formation
    rank: int
    client_id: str
    hostname: str
    farm_name: str
    data_dir: Path
    device: dict[str, Any]
    backend: str
    threads: int
    dataset_dirs: tuple[Path, ...]
    limits: Limits
    peer_files: PeerFiles
    bundle: str | None = None  # NAME==VERSION of the bundle whose recipes the task names
    python: Path | None = None  # the bundle environment's interpreter (None: the agent's own)
    sandboxed: bool = False  # the worker runs confined by bubblewrap (app/bundles/sandbox.py)
    link: Link | None = None  # the slowest measured link among the members, when one was measured
    dataset_cache_gb: float | None = None

    @property
    def generation(self) -> int:
        """The attempt's generation (its fence)."""
        return self.formation.generation

    @property
    def n_clients(self) -> int:
        """The group's size."""
        return self.formation.n_clients

    @property
    def coordinator(self) -> bool:
        """True for rank 0, which writes the task row and registers the model."""
        return self.rank == 0

    @property
    def others(self) -> frozenset[str]:
        """The other members' client ids."""
        return frozenset(m.client_id for m in self.formation.members if m.client_id != self.client_id)

    @property
    def task_dir(self) -> Path:
        """This task's checkpoint folder."""
        return self.data_dir / "checkpoints" / f"task-{self.task_id}"

    @property
    def model_dir(self) -> Path:
        """Where the worker writes the final model: a folder of the task's own when confined."""
        return self.data_dir / "models" / f"task-{self.task_id}" if self.sandboxed else self.data_dir / "models"

    @property
    def max_attempts(self) -> int:
        """The task's own attempt limit, else the agent's."""
        return int(self.config.get("max_attempts") or self.limits.max_attempts)

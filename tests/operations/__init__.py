"""Helpers for the Operations tests: settings, a populated farm, and a content snapshot of every table."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings, load_settings
from app.db.engine import Database
from app.db.queries import bundles as bundle_queries
from app.db.queries import checkpoints as checkpoint_queries
from app.db.queries import claims as claim_queries
from app.db.queries import clients as client_queries
from app.db.queries import dataset_hosts as dataset_host_queries
from app.db.queries import datasets as dataset_queries
from app.db.queries import farms as farm_queries
from app.db.queries import links as link_queries
from app.db.queries import logs as log_queries
from app.db.queries import metrics as metric_queries
from app.db.queries import models as model_queries
from app.db.queries import operations as ops
from app.db.queries import tasks as task_queries
from app.db.schema import metadata
from app.scheduling import claiming
from app.scheduling.decide import Capacity


def utcnow() -> datetime:
    """Now in UTC, naive and to the second, as both backends store DATETIME."""
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def make_settings(tmp_path: Path, **values: Any) -> Settings:
    """Settings with defaults, no config file and no environment, plus these values."""
    return load_settings(cli={"data_dir": str(tmp_path / "data"), **values}, env={},
                         config_file=tmp_path / "absent.toml")


async def snapshot(conn: AsyncConnection) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows as Python values, ordered by primary key."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name in await ops.list_tables(conn):
        if name in metadata.tables:
            table = metadata.tables[name]
            query = select(table).order_by(*table.primary_key.columns)
        else:
            query = text(f"SELECT * FROM {name} ORDER BY 1")
        out[name] = [dict(row._mapping) for row in await conn.execute(query)]
    return out


async def db_snapshot(db: Database) -> dict[str, list[dict[str, Any]]]:
    """snapshot() on a fresh connection."""
    async with db.connect() as conn:
        return await snapshot(conn)


async def populate(db: Database, prefix: str = "c") -> dict[str, Any]:
    """A small farm written through the query functions: two clients, a formed two-rank task with checkpoints,
    logs, metrics and curves, a completed task with a model version, the farm secret and a maintenance lease."""
    ids: dict[str, Any] = {"clients": [f"{prefix}-a", f"{prefix}-b"]}
    async with db.begin() as conn:
        for n, client_id in enumerate(ids["clients"]):
            await client_queries.upsert_client(
                conn, client_id=client_id, cpu_info={"logical_cores": 4 + n, "model": "Ünïcode CPU ✓"},
                ram_info={"total_mb": 8192}, gpu_info=[], session_info={"pid": 100 + n, "addresses": ["10.0.0.1"]},
                version="1.0", hostname=f"{client_id}.lan")
        await farm_queries.ensure_secret(conn, "default")
        await dataset_host_queries.add_host(conn, "default", "files.lan")
        config = {"name": "demo", "model": "mlp", "dataset": "synthetic", "distributed": True, "n_clients": 2,
                  "learning_rate": 0.01}
        ids["task"] = await task_queries.insert_task(conn, type="training", requirements={"min_cpu_cores": 1},
                                                     config=config, priority=3)
        ids["done"] = await task_queries.insert_task(conn, type="training", requirements={}, config={"name": "x"},
                                                     status="completed")
    capacity = Capacity(gpu_memory_mb=0, cpu_cores=8, ram_mb=8192)
    for client_id in ids["clients"]:
        async with db.begin() as conn:
            claim = await claiming.claim_next(conn, client_id, capacity, skip_task_ids=[ids["done"]])
            assert claim is not None
    async with db.begin() as conn:
        run = await claim_queries.get_run(conn, ids["task"])
        assert run is not None
        generation = run["generation"]
        for rank, client_id in enumerate(ids["clients"]):
            await checkpoint_queries.record(
                conn, task_id=ids["task"], generation=generation, client_id=client_id, path=f"/ck/{client_id}-20.pt",
                kind="regular" if rank == 0 else "distributed",
                metrics={"sha256": "ab" * 32, "step": 20, "epoch": 0, "rank": rank, "generation": generation},
                set_task_path=rank == 0)
            await metric_queries.record_metrics(conn, client_id, [("cpu_percent", 12.5 + rank), ("ram_used_mb", 2048.0)],
                                                task_id=ids["task"])
        await log_queries.add_client_logs(conn, ids["clients"][0], [("info", "agent started", None),
                                                                    ("warning", "peer 'b' unreachable", None)])
        await log_queries.add_task_log(conn, ids["task"], ids["clients"][0], "info", "epoch 1: loss 0.5 ✓")
        await metric_queries.record_curve(conn, ids["task"], 20, {"loss": 0.6931, "accuracy": 0.25})
        await model_queries.register(conn, name="demo", url="aifarm://c-a/models/demo-1.pt",
                                     config={"final_metrics": {"val_accuracy": 0.9}}, sha256="cd" * 32)
        await ops.acquire_lease(conn, "old_logs", "some-agent", 60)
        await bundle_queries.insert(conn, bundle_queries.BundleRow(
            "shapes", "1.0", "ef" * 32, "0123456789abcdef0123456789abcdef", "11" * 32, "22" * 64,
            '{"name": "shapes", "version": "1.0"}', ids["clients"][0], None, None))
        await link_queries.record(conn, ids["clients"][0], ids["clients"][1], 94.5, 1.25)
        dataset = await dataset_queries.register(conn, name="docs", version=1, kind="tokens",
                                                 manifest={"kind": "tokens", "shards": []}, total_bytes=0,
                                                 publisher_id=ids["clients"][0])
        assert dataset is not None
        await dataset_queries.set_copy(conn, dataset, "shard-00000.bin", ids["clients"][1], "held")
    return ids

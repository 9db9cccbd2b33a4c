"""The Clients pages: every machine of the farm, and one machine's hardware, performance and log."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from app import client_service
from app.scheduling.decide import cpu_cores_of, ram_of
from app.web.keys import DEPS_KEY


def hardware(row: dict[str, Any]) -> dict[str, Any]:
    """Cores, RAM and GPUs of a clients row, tolerant of odd JSON."""
    cpu_info = row.get("cpu_info")
    cpu: dict[str, Any] = cpu_info if isinstance(cpu_info, dict) else {}
    gpus = [g for g in (row.get("gpu_info") or []) if isinstance(g, dict)] if isinstance(row.get("gpu_info"), list) else []
    return {"cores": cpu_cores_of(cpu), "physical_cores": cpu.get("physical_cores"), "cpu_model": cpu.get("model"),
            "architecture": cpu.get("architecture"), "frequency_mhz": cpu.get("frequency_mhz"),
            "ram_mb": ram_of(row.get("ram_info")), "gpus": gpus}


CLIENTS_SHOWN = 200


async def client_list(request: web.Request) -> web.Response:
    """Every client with status, hardware, last seen, active tasks and contribution."""
    deps = request.app[DEPS_KEY]
    page = await client_service.client_page(deps.db, CLIENTS_SHOWN)
    clients = [{**row, "hw": hardware(row)} for row in page.clients]
    return aiohttp_jinja2.render_template("clients.html", request,
                                          {"clients": clients, "own_id": deps.client_id, "total": page.total})


async def client_detail(request: web.Request) -> web.Response:
    """One client: hardware, session, the ranks it holds, last-hour performance (charts and the seed's summary), log."""
    deps = request.app[DEPS_KEY]
    client_id = request.match_info["client_id"]
    detail = await client_service.client_detail(deps.db, client_id)
    row, summary, series = detail["client"], detail["performance"], detail["series"]
    logs, held, contribution = detail["logs"], detail["held"], detail["contribution"]
    metric_types = sorted({r["metric_type"] for r in series})
    session = row["session_info"] if isinstance(row["session_info"], dict) else {}
    context = {"client": row, "hw": hardware(row), "session": session, "summary": summary,
               "metric_types": metric_types, "logs": logs, "held": sorted(held, key=lambda r: -r["task_id"]),
               "contribution": contribution, "own_id": deps.client_id}
    return aiohttp_jinja2.render_template("client.html", request, context)

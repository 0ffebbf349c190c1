"""/api/runs: the run folders (listed, read, created from a config), their live event stream, Stop and Resume."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from sftlab import jsonsafe
from sftlab.errors import SftlabError
from sftlab.ui.bodies import ConfigBody
from sftlab.ui.context import UI
from sftlab.ui.forms import ConfigError, config_data, validate
from sftlab.ui.manager import RunError, RunNameProblem, run_log

TERMINAL = ("finished", "failed", "stopped")
# What the event stream's `status` events carry of a run's detail.
KEEP = ("id", "status", "error", "steps", "total_steps", "last_loss", "eta_seconds", "started", "checkpoints")


def config_router(ui: UI) -> APIRouter:
    router = APIRouter()

    @router.get("/api/runs")
    def list_runs() -> dict[str, Any]:
        return {"runs": ui.runs.listing()}

    @router.post("/api/runs")
    async def create_run(body: ConfigBody) -> JSONResponse:
        config = await run_in_threadpool(validate, config_data(body), ui.roots)
        try:
            created = await run_in_threadpool(ui.runs.create, config, body.name)
        except RunNameProblem as e:  # the name is taken, or no folder name
            raise ConfigError(str(e), "name") from None
        return JSONResponse(created, status_code=201)

    @router.post("/api/config/yaml")
    async def config_yaml(body: ConfigBody) -> dict[str, Any]:
        config = await run_in_threadpool(validate, config_data(body), ui.roots)
        return {"yaml": config.to_yaml()}

    return router


def run_router(ui: UI) -> APIRouter:
    """Routes under /api/runs/{id}/…; a run id is a path (runs may sit in sub-folders), so the catch-all
    GET /api/runs/{id} is included after every other router's /api/runs/{id}/… route."""
    router = APIRouter()

    @router.get("/api/runs/{run_id:path}/events")
    async def run_events(request: Request, run_id: str) -> StreamingResponse:
        await run_in_threadpool(ui.runs.detail, run_id)  # 404 (no such run) or 409 (damaged) before the stream starts
        try:
            last = int(request.headers.get("last-event-id") or request.query_params.get("after") or 0)
        except ValueError:
            last = 0
        return StreamingResponse(_events(request, run_id, last), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _events(request: Request, run_id: str, last: int) -> AsyncIterator[str]:
        """Metrics records (id: their step, so a reconnect replays from Last-Event-ID), the status when it
        changes, the log's tail when it grows; the stream ends once the run is finished, failed or stopped.
        Every data line is JSON (NaN and infinities as null)."""
        yield "retry: 3000\n\n"
        sent_status = sent_log = None
        while True:
            try:
                detail = await run_in_threadpool(_live, run_id)
            except SftlabError as e:  # damaged (or removed) while watched: said once, as the listing says it
                gone = {**dict.fromkeys(KEEP), "id": run_id, "status": "unreadable", "error": str(e),
                        "checkpoints": [], "has_report": False}
                yield f"event: status\ndata: {jsonsafe.dumps(gone, sort_keys=True)}\n\nevent: end\ndata: {{}}\n\n"
                return
            records = detail.pop("metrics")
            if records and records[-1]["step"] < last:  # resumed from an earlier checkpoint: its steps come again
                last = 0
                yield "event: reset\ndata: {}\n\n"
            for record in records:
                if record["step"] > last:
                    last = record["step"]
                    yield f"id: {last}\nevent: metric\ndata: {jsonsafe.dumps(record)}\n\n"
            log = detail.pop("log")
            status = jsonsafe.dumps(detail, sort_keys=True)
            if status != sent_status:
                sent_status = status
                yield f"event: status\ndata: {status}\n\n"
            if log != sent_log:
                sent_log = log
                yield f"event: log\ndata: {jsonsafe.dumps({'log': log}, ensure_ascii=False)}\n\n"
            if detail["status"] in TERMINAL:
                yield "event: end\ndata: {}\n\n"
                return
            for _ in range(10):
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.1)

    def _live(run_id: str) -> dict[str, Any]:
        detail = ui.runs.detail(run_id)
        out = {k: detail.get(k) for k in (*KEEP, "metrics", "log")}
        out["log"] = run_log(ui.runs.folder(run_id))
        out["has_report"] = detail.get("data_report") is not None
        return out

    @router.post("/api/runs/{run_id:path}/stop")
    def stop(run_id: str) -> dict[str, Any]:
        return ui.runs.stop(run_id)

    @router.post("/api/runs/{run_id:path}/resume")
    def resume(run_id: str) -> dict[str, Any]:
        return ui.runs.resume(run_id)

    return router


def run_detail_router(ui: UI) -> APIRouter:
    router = APIRouter()

    @router.get("/api/runs/{run_id:path}")
    def get_run(run_id: str) -> dict[str, Any]:
        return ui.runs.detail(run_id)

    return router


__all__ = ["config_router", "run_router", "run_detail_router", "RunError"]

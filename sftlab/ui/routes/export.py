"""/api/runs/{id}/export: `sftlab export` of a finished run, started and read back (where sftlab has export)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sftlab.ui import jobs
from sftlab.ui.bodies import ExportBody
from sftlab.ui.context import UI
from sftlab.ui.manager import RunNotFound


def router(ui: UI) -> APIRouter:
    router = APIRouter()

    @router.get("/api/runs/{run_id:path}/export")
    def get_export(run_id: str) -> dict[str, Any]:
        return jobs.read_export(ui.runs.folder(run_id))

    @router.post("/api/runs/{run_id:path}/export")
    def export(run_id: str, body: ExportBody) -> dict[str, Any]:
        if not ui.has_export:
            raise RunNotFound("this sftlab has no `sftlab export`")
        return jobs.start_export(ui.runs.folder(run_id), ui.runs.work_dir, body.format, body.quant, body.verify)

    return router

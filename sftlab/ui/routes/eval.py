"""/api/runs/{id}/eval: `sftlab eval` of a finished run, started and read back."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sftlab.defaults import DEFAULT_MODEL
from sftlab.ui import jobs
from sftlab.ui.bodies import EvalBody
from sftlab.ui.context import UI


def router(ui: UI) -> APIRouter:
    router = APIRouter()

    @router.get("/api/runs/{run_id:path}/eval")
    def get_eval(run_id: str) -> dict[str, Any]:
        return jobs.read_eval(ui.runs.folder(run_id))

    @router.post("/api/runs/{run_id:path}/eval")
    def start_eval(run_id: str, body: EvalBody) -> dict[str, Any]:
        folder = ui.runs.folder(run_id)
        data = ui.path(body.data, "data file", "data")
        baseline = ui.model(body.baseline, "baseline") or (DEFAULT_MODEL if body.baseline else None)
        return jobs.start_eval(folder, ui.runs.work_dir, data, baseline, body.limit, body.max_new_tokens,
                                body.judge_url, body.judge_model)

    return router

"""The FastAPI app of `sftlab ui`: the guards every request passes, the JSON API the pages and scripts use, and the
pages (Jinja2 templates rendered here, a little plain JavaScript in static/, nothing from the internet)."""

import threading
import time
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

from sftlab import jsonsafe
from sftlab.errors import SftlabError
from sftlab.ui import security
from sftlab.ui.bodies import validation_error
from sftlab.ui.context import HERE, UI
from sftlab.ui.forms import ConfigError
from sftlab.ui.manager import RunError, RunNotFound, Runs

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
       "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def export_available() -> bool:
    """Whether this sftlab has `sftlab export` (the Export page shows only then)."""
    import importlib.util

    return importlib.util.find_spec("sftlab.export.run") is not None


def create_app(runs_dir: str | Path = "runs", work_dir: str | Path = ".", api_key: str | None = None,
               data_dirs: Sequence[str | Path] = ()) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, RedirectResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from sftlab.ui.routes import chat, data, eval as evals, export, pages, runs as run_routes

    class SafeJSON(JSONResponse):
        """JSON whose floats are all finite: a NaN or infinite metric is served as null, never as `NaN`."""

        def render(self, content: Any) -> bytes:
            return jsonsafe.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    ui = UI(Runs(runs_dir, work_dir), api_key=api_key, has_export=export_available(),
            data_dirs=security.data_dirs(data_dirs))
    app = FastAPI(title="sftlab ui", docs_url=None, redoc_url=None, openapi_url=None, default_response_class=SafeJSON)
    app.state.runs = ui.runs
    app.state.ui = ui
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def error(status: int, message: str, field: str | None = None) -> JSONResponse:
        return SafeJSON({"error": {"message": message, **({"field": field} if field else {})}}, status_code=status)

    # ---- the guards: every request passes them ----

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        path = request.url.path
        is_api = path.startswith("/api/")
        problem = security.rebinding_problem(request.headers.get("host", ""), api_key)
        if problem:
            return error(403, problem) if is_api else Response(problem, status_code=403)
        if api_key and not (path == "/login" or path.startswith("/static/")):
            given = security.request_key(dict(request.headers), dict(request.cookies))
            if not security.key_matches(given, api_key):
                if is_api:
                    return error(401, "missing or incorrect key (send `Authorization: Bearer KEY`)")
                return RedirectResponse(f"/login?next={quote(path)}", status_code=303)
        problem = security.cross_site_problem(request.method, {k.lower(): v for k, v in request.headers.items()})
        if problem:
            return error(403, problem) if is_api else Response(problem, status_code=403)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    # ---- every failure as {"error": {"message", "field"}} ----

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, e: StarletteHTTPException) -> JSONResponse:
        # (Starlette's own refusals, such as a body it cannot parse: the one error shape, not {"detail": …})
        detail = e.detail if isinstance(e.detail, str) else "the request cannot be answered"
        if detail == "There was an error parsing the body":
            detail = "the request body cannot be read as JSON (a number longer than 4300 digits, or bytes that are no text)"
        return error(e.status_code, detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(_request: Request, e: RequestValidationError) -> JSONResponse:
        return SafeJSON(validation_error(list(e.errors())), status_code=400)

    @app.exception_handler(ConfigError)
    async def _config_error(_request: Request, e: ConfigError) -> JSONResponse:
        return SafeJSON(e.body(), status_code=400)

    @app.exception_handler(RunNotFound)
    async def _not_found(_request: Request, e: RunNotFound) -> JSONResponse:
        return error(404, str(e))

    @app.exception_handler(RunError)
    async def _conflict(_request: Request, e: RunError) -> JSONResponse:
        return error(409, str(e))

    @app.exception_handler(SftlabError)
    async def _sftlab_error(_request: Request, e: SftlabError) -> JSONResponse:
        return error(400, str(e))

    # Order matters: the /api/runs/{id}/… routes of eval and export before the catch-all GET /api/runs/{id}, and
    # the pages last.
    for router in (run_routes.config_router(ui), data.router(ui), chat.router(ui), evals.router(ui),
                   export.router(ui), run_routes.run_router(ui), run_routes.run_detail_router(ui), pages.router(ui)):
        app.include_router(router)
    return app


def keep_queue_going(runs: Runs, every: float = 5.0) -> threading.Thread:
    """Start the next queued run whenever none runs (a runner killed without a word leaves the queue waiting)."""
    def loop() -> None:
        while True:
            try:
                runs.start_next()
            except Exception:  # noqa: BLE001 - the queue is tried again on the next round
                pass
            time.sleep(every)

    thread = threading.Thread(target=loop, name="sftlab-ui-queue", daemon=True)
    thread.start()
    return thread


def run_ui(runs_dir: str | Path = "runs", host: str = "127.0.0.1", port: int = 7860, api_key: str | None = None,
           work_dir: str | Path = ".", data_dirs: Sequence[str | Path] = ()) -> None:
    """`sftlab ui`: refuses a non-loopback host without a key and a --data-dir that is no folder (one sentence),
    then serves until Ctrl-C."""
    import uvicorn

    security.require_safe_host(host, api_key)
    app = create_app(runs_dir, work_dir, api_key, data_dirs)
    keep_queue_going(app.state.runs)
    # The first config check imports transformers (lr_scheduler's names): done now, not while a form waits.
    threading.Thread(target=__import__, args=("transformers.trainer_utils",), daemon=True).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")


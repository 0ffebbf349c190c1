"""The FastAPI app of `sftlab ui`: the guards every request passes, the JSON API the pages and scripts use, and the
pages (Jinja2 templates rendered here, a little plain JavaScript in static/, nothing from the internet)."""

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, quote

from sftlab.defaults import DEFAULT_MODEL
from sftlab.errors import SftlabError, first_line
from sftlab.files import child
from sftlab.ui import i18n, security
from sftlab.ui.forms import ConfigError, config_data, form_groups, form_schema, validate
from sftlab.ui.manager import RunError, RunNotFound, Runs, log_tail
from sftlab.ui import tools

HERE = Path(__file__).parent
UPLOADS = "uploads"
MAX_UPLOAD_BYTES = 2 * 1024**3
TERMINAL = ("finished", "failed", "stopped")
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
       "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def export_available() -> bool:
    """Whether this sftlab has `sftlab export` (the Export page shows only then)."""
    import importlib.util

    return importlib.util.find_spec("sftlab.export.run") is not None


def create_app(runs_dir: str | Path = "runs", work_dir: str | Path = ".", api_key: str | None = None) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
    from fastapi.staticfiles import StaticFiles
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

    runs = Runs(runs_dir, work_dir)
    roots = [runs.work_dir, runs.runs_dir]
    chat_models = tools.ChatModels()
    pages = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    app = FastAPI(title="sftlab ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runs = runs
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    has_export = export_available()

    def error(status: int, message: str, field: str | None = None) -> JSONResponse:
        return JSONResponse({"error": {"message": message, **({"field": field} if field else {})}}, status_code=status)

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

    @app.exception_handler(ConfigError)
    async def _config_error(_request: Request, e: ConfigError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=400)

    @app.exception_handler(RunNotFound)
    async def _not_found(_request: Request, e: RunNotFound) -> JSONResponse:
        return error(404, str(e))

    @app.exception_handler(RunError)
    async def _conflict(_request: Request, e: RunError) -> JSONResponse:
        return error(409, str(e))

    @app.exception_handler(SftlabError)
    async def _sftlab_error(_request: Request, e: SftlabError) -> JSONResponse:
        return error(400, str(e))

    async def body_json(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            raise SftlabError(f"the request body is not valid JSON ({first_line(e)})") from None

    # ---- the JSON API ----

    @app.get("/api/runs")
    def list_runs() -> dict[str, Any]:
        return {"runs": runs.listing()}

    @app.post("/api/runs")
    async def create_run(request: Request) -> JSONResponse:
        body = await body_json(request)
        data = config_data(body)
        config = await run_in_threadpool(validate, data, roots)
        name = body.get("name") or None
        if name is not None and not isinstance(name, str):
            raise ConfigError("`name` must be a string (the run's folder name)", "name")
        try:
            created = await run_in_threadpool(runs.create, config, name)
        except RunError as e:
            raise ConfigError(str(e), "name") from None
        except SftlabError as e:  # the name is no plain folder name
            raise ConfigError(str(e), "name") from None
        return JSONResponse(created, status_code=201)

    @app.post("/api/config/yaml")
    async def config_yaml(request: Request) -> dict[str, Any]:
        config = await run_in_threadpool(validate, config_data(await body_json(request)), roots)
        return {"yaml": config.to_yaml()}

    @app.post("/api/preview")
    async def preview(request: Request) -> dict[str, Any]:
        config = await run_in_threadpool(validate, config_data(await body_json(request)), roots)
        return await run_in_threadpool(tools.preview, config)

    @app.get("/api/form")
    def form() -> dict[str, Any]:
        return {"groups": form_schema()}

    @app.get("/api/files")
    def files() -> dict[str, Any]:
        return {"files": tools.data_files(roots), "root": str(runs.work_dir)}

    @app.get("/api/models")
    def models() -> dict[str, Any]:
        return {"models": tools.model_choices(runs.listing())}

    @app.post("/api/upload")
    async def upload(request: Request, name: str) -> JSONResponse:
        """The request body is the file; it lands in WORK/uploads/NAME (a plain name: no path escapes)."""
        folder = runs.work_dir / UPLOADS
        target = child(folder, name, "upload name")
        if Path(name).suffix.lower() not in tools.DATA_FILE_SUFFIXES:
            raise SftlabError(f"upload name {name!r}: a data file is .json, .jsonl, .csv or .parquet")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.part"
        size = 0
        try:
            with open(tmp, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise SftlabError(f"upload {name}: larger than {MAX_UPLOAD_BYTES // 1024**3} GB")
                    f.write(chunk)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        return JSONResponse({"path": target.relative_to(runs.work_dir).as_posix(), "bytes": size}, status_code=201)

    @app.post("/api/data/check")
    async def data_check(request: Request) -> dict[str, Any]:
        body = await body_json(request)
        path = security.inside(roots, str(body.get("path") or ""), "data file")
        from sftlab.files import require_input

        require_input(path, "data file", "any")
        model = _model(body.get("model"))
        max_length = int(body.get("max_length") or 1024)
        return await run_in_threadpool(tools.data_check, path, model, body.get("template"), body.get("format"),
                                       max_length, bool(body.get("clusters")))

    def _model(value: Any) -> str | None:
        if not value or str(value).lower() == DEFAULT_MODEL:
            return None
        return str(security.inside(roots, str(value), "model"))

    @app.post("/api/chat")
    async def chat(request: Request) -> StreamingResponse:
        """One answer, streamed as server-sent events: `data: {"text": …}` pieces, then `data: {"done": true}` (or
        `{"error": …}`)."""
        body = await body_json(request)
        model = _model(body.get("model")) or DEFAULT_MODEL
        messages = [{"role": str(m.get("role")), "content": str(m.get("content", ""))}
                    for m in body.get("messages") or [] if isinstance(m, dict)]
        if body.get("system"):
            messages.insert(0, {"role": "system", "content": str(body["system"])})
        temperature = float(body.get("temperature") or 0)
        max_new = int(body.get("max_new_tokens") or 256)

        async def events() -> AsyncIterator[str]:
            try:
                pieces = await run_in_threadpool(chat_models.stream, model, messages, temperature, max_new)
                async for piece in iterate_in_threadpool(pieces):
                    yield f"data: {json.dumps({'text': piece}, ensure_ascii=False)}\n\n"
                yield f"data: {json.dumps({'done': True})}\n\n"
            except Exception as e:  # noqa: BLE001 - said in the page, in one sentence
                message = str(e) if isinstance(e, SftlabError) else f"the generation failed ({first_line(e, with_type=True)})"
                yield f"data: {json.dumps({'error': message}, ensure_ascii=False)}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    # Routes under /api/runs/{id}/… first: a run id is a path (runs may sit in sub-folders).
    @app.get("/api/runs/{run_id:path}/events")
    async def run_events(request: Request, run_id: str) -> StreamingResponse:
        runs.folder(run_id)  # 404 before the stream starts
        try:
            last = int(request.headers.get("last-event-id") or request.query_params.get("after") or 0)
        except ValueError:
            last = 0
        return StreamingResponse(_events(request, run_id, last), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _events(request: Request, run_id: str, last: int) -> AsyncIterator[str]:
        """Metrics records (id: their step, so a reconnect replays from Last-Event-ID), the status when it
        changes, the log's tail when it grows; the stream ends once the run is finished, failed or stopped."""
        yield "retry: 3000\n\n"
        sent_status = sent_log = None
        while True:
            detail = await run_in_threadpool(_live, run_id)
            records = detail.pop("metrics")
            if records and records[-1]["step"] < last:  # resumed from an earlier checkpoint: its steps come again
                last = 0
                yield "event: reset\ndata: {}\n\n"
            for record in records:
                if record["step"] > last:
                    last = record["step"]
                    yield f"id: {last}\nevent: metric\ndata: {json.dumps(record)}\n\n"
            log = detail.pop("log")
            status = json.dumps(detail, sort_keys=True)
            if status != sent_status:
                sent_status = status
                yield f"event: status\ndata: {status}\n\n"
            if log != sent_log:
                sent_log = log
                yield f"event: log\ndata: {json.dumps({'log': log}, ensure_ascii=False)}\n\n"
            if detail["status"] in TERMINAL:
                yield "event: end\ndata: {}\n\n"
                return
            for _ in range(10):
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.1)

    def _live(run_id: str) -> dict[str, Any]:
        detail = runs.detail(run_id)
        keep = ("id", "status", "error", "steps", "total_steps", "last_loss", "eta_seconds", "started", "checkpoints",
                "metrics", "log")
        out = {k: detail.get(k) for k in keep}
        out["log"] = log_tail(runs.folder(run_id) / "train.log", 40)
        out["has_report"] = detail.get("data_report") is not None
        return out

    @app.post("/api/runs/{run_id:path}/stop")
    def stop(run_id: str) -> dict[str, Any]:
        return runs.stop(run_id)

    @app.post("/api/runs/{run_id:path}/resume")
    def resume(run_id: str) -> dict[str, Any]:
        return runs.resume(run_id)

    @app.get("/api/runs/{run_id:path}/eval")
    def get_eval(run_id: str) -> dict[str, Any]:
        return tools.read_eval(runs.folder(run_id))

    @app.post("/api/runs/{run_id:path}/eval")
    async def start_eval(request: Request, run_id: str) -> dict[str, Any]:
        folder = runs.folder(run_id)
        body = await body_json(request)
        data = security.inside(roots, str(body.get("data") or ""), "data file")
        baseline = _model(body.get("baseline")) or (DEFAULT_MODEL if body.get("baseline") else None)
        limit = int(body["limit"]) if body.get("limit") else None
        return tools.start_eval(folder, runs.work_dir, data, baseline, limit, int(body.get("max_new_tokens") or 128),
                                body.get("judge_url") or None, body.get("judge_model") or None)

    @app.get("/api/runs/{run_id:path}/export")
    def get_export(run_id: str) -> dict[str, Any]:
        return tools.read_export(runs.folder(run_id))

    @app.post("/api/runs/{run_id:path}/export")
    async def export(request: Request, run_id: str) -> dict[str, Any]:
        if not has_export:
            raise RunNotFound("this sftlab has no `sftlab export`")
        body = await body_json(request)
        return tools.start_export(runs.folder(run_id), runs.work_dir, str(body.get("format") or "gguf"),
                                  str(body.get("quant") or "q8_0"), body.get("verify", True) is not False)

    @app.get("/api/runs/{run_id:path}")
    def get_run(run_id: str) -> dict[str, Any]:
        return runs.detail(run_id)

    # ---- the pages ----

    def lang_of(request: Request) -> str:
        lang = request.query_params.get("lang") or request.cookies.get("lang") or "en"
        return lang if lang in i18n.LANGUAGES else "en"

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        lang = lang_of(request)
        html = pages.get_template(name).render(
            t=i18n.translator(lang), lang=lang, path=request.url.path, has_export=has_export,
            texts={k: v.get(lang) or v["en"] for k, v in i18n.TEXT.items()}, **context)
        response = HTMLResponse(html)
        if request.query_params.get("lang") in i18n.LANGUAGES:
            response.set_cookie("lang", lang, samesite="strict", max_age=365 * 24 * 3600)
        return response

    @app.get("/", response_class=HTMLResponse)
    def runs_page(request: Request) -> HTMLResponse:
        return page(request, "runs.html", runs_dir=str(runs.runs_dir))

    @app.get("/new", response_class=HTMLResponse)
    def new_page(request: Request) -> HTMLResponse:
        lang = lang_of(request)
        groups = [{"title": i18n.group_title(g.title, lang),
                   "fields": [{**f.__dict__, "help": i18n.field_help(f.name, f.help, lang)} for f in g.fields]}
                  for g in form_groups()]
        return page(request, "new.html", groups=groups, files=tools.data_files(roots),
                    models=tools.model_choices(runs.listing()))

    @app.get("/runs/{run_id:path}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str) -> HTMLResponse:
        detail = runs.detail(run_id)
        return page(request, "run.html", run=detail, config_yaml=_yaml(detail["config"]))

    @app.get("/data", response_class=HTMLResponse)
    def data_page(request: Request) -> HTMLResponse:
        return page(request, "data.html", files=tools.data_files(roots), models=tools.model_choices(runs.listing()))

    @app.get("/chat", response_class=HTMLResponse)
    def chat_page(request: Request) -> HTMLResponse:
        return page(request, "chat.html", models=tools.model_choices(runs.listing()),
                    a=request.query_params.get("a", DEFAULT_MODEL), b=request.query_params.get("b", ""))

    @app.get("/eval", response_class=HTMLResponse)
    def eval_page(request: Request) -> HTMLResponse:
        finished = [r for r in runs.listing() if r["status"] == "finished"]
        return page(request, "eval.html", runs=finished, files=tools.data_files(roots),
                    models=tools.model_choices(finished), chosen=request.query_params.get("run", ""))

    if has_export:
        @app.get("/export", response_class=HTMLResponse)
        def export_page(request: Request) -> HTMLResponse:
            finished = [r for r in runs.listing() if r["status"] == "finished"]
            return page(request, "export.html", runs=finished, chosen=request.query_params.get("run", ""),
                        formats=tools.EXPORT_FORMATS, quants=tools.EXPORT_QUANTS)

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> HTMLResponse:
        return page(request, "login.html", wrong=False, next=request.query_params.get("next", "/"))

    @app.post("/login")
    async def login(request: Request) -> Any:
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        given = (form.get("key") or [""])[0]
        target = (form.get("next") or ["/"])[0]
        target = target if target.startswith("/") and not target.startswith("//") else "/"
        if not api_key or not security.key_matches(given, api_key):
            response = page(request, "login.html", wrong=True, next=target)
            response.status_code = 401
            return response
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(security.KEY_COOKIE, given, httponly=True, samesite="strict")
        return response

    return app


def _yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True) if config else ""


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
           work_dir: str | Path = ".") -> None:
    """`sftlab ui`: refuses a non-loopback host without a key (one sentence), then serves until Ctrl-C."""
    import uvicorn

    security.require_safe_host(host, api_key)
    app = create_app(runs_dir, work_dir, api_key)
    keep_queue_going(app.state.runs)
    # The first config check imports transformers (lr_scheduler's names): done now, not while a form waits.
    threading.Thread(target=__import__, args=("transformers.trainer_utils",), daemon=True).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")


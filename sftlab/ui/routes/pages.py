"""The HTML pages: Jinja2 templates with autoescaping (templates/), a little plain JavaScript (static/)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from sftlab.defaults import DEFAULT_MODEL
from sftlab.ui import i18n, jobs, pickers, security
from sftlab.ui.context import UI
from sftlab.config.data import FORMAT_FIELDS
from sftlab.ui.forms import form_layout, form_values, method_defaults


def _yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True) if config else ""


def router(ui: UI) -> APIRouter:
    router = APIRouter()
    runs = ui.runs

    def lang_of(request: Request) -> str:
        lang = request.query_params.get("lang") or request.cookies.get("lang") or "en"
        return lang if lang in i18n.LANGUAGES else "en"

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        lang = lang_of(request)
        html = ui.pages.get_template(name).render(
            t=i18n.translator(lang), lang=lang, path=request.url.path, has_export=ui.has_export,
            texts={k: v.get(lang) or v["en"] for k, v in i18n.TEXT.items()}, **context)
        response = HTMLResponse(html)
        if request.query_params.get("lang") in i18n.LANGUAGES:
            response.set_cookie("lang", lang, samesite="strict", max_age=365 * 24 * 3600)
        return response

    def models() -> list[dict[str, str]]:
        return pickers.model_choices(runs.listing(), ui.roots)

    @router.get("/", response_class=HTMLResponse)
    def runs_page(request: Request) -> HTMLResponse:
        return page(request, "runs.html", runs_dir=str(runs.runs_dir))

    def run_choices(finished: list[dict[str, Any]]) -> list[dict[str, str]]:
        return [{"value": r["id"], "label": f"{r['id']} ({r['method']})"} for r in finished]

    @router.get("/new", response_class=HTMLResponse)
    def new_page(request: Request) -> HTMLResponse:
        """The form: the essential keys first, the others folded in their groups; `?from=RUN` fills it in from that
        run's config.yaml."""
        lang = lang_of(request)

        def shown(f: Any) -> dict[str, Any]:
            return {**f.__dict__, "help": i18n.field_help(f.name, f.help, lang)}

        essentials, rest = form_layout()
        groups = [{"title": i18n.group_title(g.title, lang), "fields": [shown(f) for f in g.fields]} for g in rest]
        from_run = request.query_params.get("from") or None
        values = form_values(runs.detail(from_run)["config"], runs.work_dir) if from_run else {}
        return page(request, "new.html", essentials=[shown(f) for f in essentials], groups=groups,
                    files=pickers.data_files(ui.roots), models=models(), values=values, from_run=from_run,
                    method_defaults=method_defaults(), formats=list(FORMAT_FIELDS))

    @router.get("/runs/{run_id:path}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str) -> HTMLResponse:
        detail = runs.detail(run_id)
        return page(request, "run.html", run=detail, config_yaml=_yaml(detail["config"]))

    @router.get("/data", response_class=HTMLResponse)
    def data_page(request: Request) -> HTMLResponse:
        return page(request, "data.html", files=pickers.data_files(ui.roots), models=models())

    @router.get("/chat", response_class=HTMLResponse)
    def chat_page(request: Request) -> HTMLResponse:
        return page(request, "chat.html", models=models(),
                    a=request.query_params.get("a", DEFAULT_MODEL), b=request.query_params.get("b", ""))

    @router.get("/eval", response_class=HTMLResponse)
    def eval_page(request: Request) -> HTMLResponse:
        finished = [r for r in runs.listing() if r["status"] == "finished"]
        return page(request, "eval.html", runs=finished, run_choices=run_choices(finished),
                    files=pickers.data_files(ui.roots), models=models(), chosen=request.query_params.get("run", ""))

    if ui.has_export:
        @router.get("/export", response_class=HTMLResponse)
        def export_page(request: Request) -> HTMLResponse:
            finished = [r for r in runs.listing() if r["status"] == "finished"]
            return page(request, "export.html", runs=finished, run_choices=run_choices(finished),
                        chosen=request.query_params.get("run", ""),
                        formats=jobs.EXPORT_FORMATS, quants=jobs.EXPORT_QUANTS)

    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> HTMLResponse:
        return page(request, "login.html", wrong=False,
                    next=security.same_origin_path(request.query_params.get("next")))

    @router.post("/login")
    async def login(request: Request) -> Any:
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        given = (form.get("key") or [""])[0]
        target = security.same_origin_path((form.get("next") or ["/"])[0])
        if not ui.api_key or not security.key_matches(given, ui.api_key):
            response = page(request, "login.html", wrong=True, next=target)
            response.status_code = 401
            return response
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(security.KEY_COOKIE, given, httponly=True, samesite="strict")
        return response

    return router

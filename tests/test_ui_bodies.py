"""The UI's request bodies (sftlab/ui/bodies.py): every route walked with malformed bodies answers 400 with
`{"error": {"message", "field"}}`, never 500, and the keys it shares with `sftlab train` have the CLI's bounds."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("fastapi")
from fastapi.routing import APIRoute  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from sftlab.ui.app import create_app  # noqa: E402
from test_ui import LOCAL, work  # noqa: E402,F401  (the fixture)

HUGE = "x" * 300_000
WRONG = [None, True, -1, 1e308, "abc", HUGE, [1, "a"], {"k": [1]}, math.nan, math.inf]


@pytest.fixture
def api(work, monkeypatch):  # noqa: F811
    # Nothing a body lets through may start a process: the runner is never spawned.
    monkeypatch.setattr("sftlab.ui.manager.spawn", lambda *a, **k: 999_999)
    monkeypatch.setattr("sftlab.ui.jobs.spawn", lambda *a, **k: 999_999)
    monkeypatch.setattr("sftlab.ui.chat_models.ChatModels.stream", lambda *a, **k: iter(["hi"]))
    return TestClient(create_app(work / "runs", work), base_url=LOCAL, raise_server_exceptions=False)


def _post(c: TestClient, path: str, body: object) -> object:
    return c.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})  # NaN as NaN


def _api_routes(app: object) -> list[APIRoute]:
    """Every APIRoute of the app, those of included routers too (FastAPI may keep them inside the router)."""
    out, todo = [], list(app.routes)
    while todo:
        route = todo.pop(0)
        if isinstance(route, APIRoute):
            out.append(route)
        elif hasattr(route, "original_router"):
            todo += route.original_router.routes
    return [r for r in out if r.path.startswith("/api/")]


def _fields(route: APIRoute) -> list[str]:
    body = route.body_field
    return list(body.field_info.annotation.model_fields) if body is not None else []


def test_every_route_answers_malformed_bodies_with_a_400_that_names_the_field(api):
    routes = _api_routes(api.app)
    posts = [r for r in routes if "POST" in r.methods and r.body_field is not None]
    assert {r.path for r in posts} >= {"/api/runs", "/api/config/yaml", "/api/preview", "/api/data/check",
                                       "/api/chat", "/api/runs/{run_id:path}/eval", "/api/runs/{run_id:path}/export"}
    seen = 0
    for route in posts:
        path = route.path.replace("{run_id:path}", "done")
        for whole in ([], [{"config": {}}], "text", 3, None, {"unknown": 1}):
            r = _post(api, path, whole)
            assert r.status_code == 400, (path, whole, r.text)
            assert set(r.json()["error"]) <= {"message", "field"} and r.json()["error"]["message"]
        r = api.post(path, content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["message"] == "the request body is not valid JSON"
        for name in _fields(route):
            for value in WRONG:
                r = _post(api, path, {name: value})
                seen += 1
                assert r.status_code != 500, (path, name, str(value)[:40], r.text[:300])
                assert r.status_code in (200, 201, 400, 404, 409), (path, name, r.status_code)
                if r.status_code == 400:
                    assert r.json()["error"]["message"], (path, name)
    for route in routes:  # GETs, with junk in the id and the query
        if "GET" in route.methods:
            for junk in ("done/../../x%00", "%00", "x" * 5000, "done%5C..", "%2Fetc"):
                url = route.path.replace("{run_id:path}", junk) + "?after=abc&limit=-1"
                r = api.get(url)
                assert r.status_code != 500, (url[:80], r.text[:200])
    for page in ("/new?from=%00", "/new?from=../x", "/new?from=" + "x" * 5000, "/runs/%00", "/eval?run=%00"):
        assert api.get(page).status_code in (200, 404), page
    assert seen > 100


@pytest.mark.parametrize("path,body,field,says", [
    ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature",
     "`temperature` should be a valid number"),
    ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "temperature": math.nan}, "temperature",
     "must be a finite number"),
    ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature",
     "must be between 0 and 2"),
    ("/api/data/check", {"path": "data.json", "max_length": "abc"}, "max_length", "should be a valid integer"),
    ("/api/data/check", {"path": "data.json", "max_length": 0}, "max_length", "must be at least 2"),
    ("/api/runs/done/eval", {"data": "data.json", "limit": "abc"}, "limit", "should be a valid integer"),
    ("/api/runs/done/eval", {"data": "data.json", "limit": 0}, "limit", "must be at least 1"),
    ("/api/config/yaml", {"config": {}, "yaml": "stages: x"}, "yaml", "should be a valid dictionary"),
    ("/api/runs", {"config": {"datasets": ["data.json"]}, "name": "n" * 300}, "name", "300 characters long"),
    ("/api/runs", {"config": {"datasets": ["data.json"]}, "name": ".hidden"}, "name", "leading dot"),
    ("/api/runs", {"config": {"datasets": ["data.json"]}, "name": "a b"}, "name", "letters, digits"),
    ("/api/preview", {"config": {"datasets": ["data.json"], "model": "m" * 5000}}, "model", "File name too long"),
    ("/api/config/yaml", {"config": {"datasets": ["data.json"], "stages": [{"datasets": {"path": ["a"]}}]}}, "stages",
     "stages[1] (stage-1): `datasets[0].path`"),
    ("/api/runs", {"config": {"datasets": ["data.json"], "stages": [{"name": "a"}, {"template": "gone.jinja"}]}},
     "stages", "stages[2].template gone.jinja not found"),
])
def test_a_wrong_value_is_one_sentence_naming_its_field(api, path, body, field, says):
    r = _post(api, path, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field and says in r.json()["error"]["message"], r.json()


def test_the_data_check_refuses_what_the_command_line_refuses(api, cli, work):  # noqa: F811
    """`max_length: 1` in the UI and `--max-length 1` on the command line: both refused, by the same bound (the
    config's, which is what encoding needs: a token to predict from and the token predicted)."""
    result = cli("data", "check", str(work / "data.json"), "--max-length", "1")
    assert result.returncode != 0 and "must be at least 2" in result.stderr
    r = _post(api, "/api/data/check", {"path": "data.json", "max_length": 1})
    assert r.status_code == 400 and "must be at least 2" in r.json()["error"]["message"]

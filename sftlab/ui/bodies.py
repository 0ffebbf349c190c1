"""The body of every request the UI's API takes, as a pydantic model: the config keys it shares with `sftlab train`
take TrainConfig's own field (type, default, bounds: sftlab/config/train.py), the generation options the bounds
the command line's options have (sftlab/config/bounds.py), so the UI accepts exactly what the command line accepts. FastAPI checks each body
against its model before a route runs; `validation_error` turns what it finds into the API's one error shape,
`{"error": {"message", "field"}}` with HTTP 400."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from sftlab.config import DatasetSpec, TrainConfig
from sftlab.files import run_name_problem
from sftlab.config.checks import check
from sftlab.ui.jobs import EXPORT_FORMATS, EXPORT_QUANTS

PATH_CHARS = 4096  # (PATH_MAX on Linux)
TEXT_CHARS = 1_000_000
MAX_MESSAGES = 1000


def _blank_is_none(value: Any) -> Any:
    """A form's empty text box means "not given"."""
    return None if isinstance(value, str) and not value.strip() else value


Blank = BeforeValidator(_blank_is_none)
PathText = Annotated[str, StringConstraints(min_length=1, max_length=PATH_CHARS)]
OptionalPath = Annotated[Optional[PathText], Blank]
Text = Annotated[str, StringConstraints(max_length=TEXT_CHARS)]


def bounded(kind: Any, name: str) -> Any:
    """`kind` checked against the bounds of the key or option `name` (the same sentence the CLI gives)."""
    return Annotated[kind, AfterValidator(partial(check, name))]


def setting(name: str) -> Any:
    """TrainConfig's field `name` as a body field: its type and its bounds (the field's own metadata)."""
    field = TrainConfig.model_fields[name]
    return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation


def default(name: str) -> Any:
    return TrainConfig.model_fields[name].get_default(call_default_factory=True)


def _run_name(name: str) -> str:
    problem = run_name_problem(name)
    if problem:
        raise ValueError(f"the run name {problem}")
    return name


RunName = Annotated[Optional[Annotated[str, AfterValidator(_run_name)]], Blank]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfigBody(Body):
    """POST /api/runs, /api/config/yaml, /api/preview: a train config (checked by TrainConfig itself, with the
    sentences `sftlab train` prints), the values a form gives as YAML text, and the run's name."""

    config: dict[str, Any]
    yaml: dict[str, Text] = Field(default_factory=dict)
    name: RunName = None


class DataCheckBody(Body):
    """POST /api/data/check: `sftlab data check FILE --model M --template T --format F --max-length N`."""

    path: PathText
    model: OptionalPath = None
    template: Annotated[Optional[Annotated[str, StringConstraints(max_length=PATH_CHARS)]], Blank] = None
    format: Annotated[DatasetSpec.model_fields["format"].annotation, Blank] = None  # type: ignore[name-defined]
    max_length: setting("max_length") = default("max_length")  # type: ignore[valid-type]
    clusters: bool = False


class Message(Body):
    role: Literal["system", "user", "assistant"]
    content: Text = ""


class ChatBody(Body):
    """POST /api/chat: `sftlab chat --model M --temperature T --max-new-tokens N`, one answer to `messages`."""

    model: OptionalPath = None
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    system: Annotated[Optional[Text], Blank] = None
    # None: the model's own generation_config, else greedy with the repetition guard (as `sftlab chat`)
    temperature: Optional[bounded(float, "temperature")] = None  # type: ignore[valid-type]
    max_new_tokens: bounded(int, "max_new_tokens") = 256  # type: ignore[valid-type]


class EvalBody(Body):
    """POST /api/runs/{id}/eval: `sftlab eval --model RUN --data D --baseline B --limit N --max-new-tokens N`."""

    data: PathText
    baseline: OptionalPath = None
    limit: Annotated[Optional[bounded(int, "limit")], Blank] = None  # type: ignore[valid-type]
    max_new_tokens: bounded(int, "max_new_tokens") = 128  # type: ignore[valid-type]
    judge_url: Annotated[Optional[Annotated[str, StringConstraints(max_length=PATH_CHARS)]], Blank] = None
    judge_model: Annotated[Optional[Annotated[str, StringConstraints(max_length=PATH_CHARS)]], Blank] = None


class ExportBody(Body):
    """POST /api/runs/{id}/export: `sftlab export --model RUN --format F --quant Q [--no-verify]`."""

    format: Literal[EXPORT_FORMATS] = "gguf"  # type: ignore[valid-type]
    quant: Literal[EXPORT_QUANTS] = "q8_0"  # type: ignore[valid-type]
    verify: bool = True


# ---- the one error shape ------------------------------------------------------------------------------------

def validation_error(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """FastAPI's list of what is wrong with a request as `{"error": {"message", "field"}}`: the first problem, in
    one sentence, naming the body key (or query parameter) it is about."""
    err = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    loc = [part for part in err.get("loc", ()) if part not in ("body", "query", "path")]
    field = ".".join(str(p) for p in loc) if loc else None
    kind = err.get("type", "")
    if kind == "json_invalid":
        return {"error": {"message": "the request body is not valid JSON"}}
    if not loc:
        what = "a JSON object" if kind in ("model_attributes_type", "dict_type") else "valid"
        return {"error": {"message": f"the request body must be {what} ({err.get('msg', '')})"}}
    if kind == "missing":
        return {"error": {"message": f"`{field}` is required", "field": str(loc[0])}}
    if kind == "extra_forbidden":
        return {"error": {"message": f"unknown key `{field}`", "field": str(loc[0])}}
    msg = str(err.get("msg", "")).removeprefix("Value error, ").removeprefix("Input ")
    got = repr(err.get("input"))
    got = got if len(got) <= 80 else got[:79] + "…"
    return {"error": {"message": f"`{field}` {msg[:1].lower()}{msg[1:]} (got {got})", "field": str(loc[0])}}

"""`sftlab serve`: an OpenAI-compatible chat-completions server (FastAPI + uvicorn) for a model.

One model, one generation at a time: requests wait on a lock, so concurrent requests are all served
and never share generation state. Every request is checked and bounded before any work (check_request); errors
use OpenAI's shape {"error": {"message", "type", "param", "code"}}.
"""


import difflib
import hmac
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sftlab.errors import SftlabError, echo, echo_text, first_line
from sftlab.files import read_text
from sftlab.inference.generate import ContextExceeded, Generator, text_problem
from sftlab.config.checks import check
from sftlab.inference.replies import Piece, Reply, ToolCall


# Request models: strict (a JSON string is no number, 1 is no boolean) and closed (a key sftlab does not know is
# refused by name, never ignored); what OpenAI defines and sftlab does not implement is refused in UNSUPPORTED.
class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ContentPart(_Strict):
    model_config = ConfigDict(extra="allow")  # other part types (image_url …) are refused by name in text()

    type: str
    text: Optional[str] = None


class FunctionCall(_Strict):
    name: str
    arguments: Union[str, dict[str, Any]] = "{}"  # OpenAI sends JSON text; an object is taken too


class ToolCallIn(_Strict):
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionSpec(_Strict):
    model_config = ConfigDict(extra="allow")  # the template renders the whole function, whatever else it says

    name: str = Field(min_length=1)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None

    @field_validator("strict")
    @classmethod
    def _no_strict(cls, value: Any) -> Any:
        if value:
            raise ValueError("must be false or left out: strict schemas need constrained decoding, which sftlab serve "
                             "does not do")
        return value


class ToolSpec(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Union[str, list[ContentPart], None] = None
    tool_calls: Optional[list[ToolCallIn]] = None  # an assistant's earlier calls
    tool_call_id: Optional[str] = None  # a tool result's call
    name: Optional[str] = None
    reasoning_content: Optional[str] = None  # an assistant's earlier trace (Qwen3's template reads it)
    # OpenAI's fields of an earlier assistant message that no template renders: taken only empty
    refusal: Optional[str] = None
    audio: Optional[dict[str, Any]] = None
    function_call: Optional[dict[str, Any]] = None

    def text(self, index: int) -> str:
        if isinstance(self.content, list):
            other = [p.type for p in self.content if p.type != "text"]
            if other:  # dropping them would answer a different question than the one asked
                raise ApiError(400, f"content part type '{echo_text(other[0], 40)}' is not supported: this model reads "
                               "text only", code="unsupported_content", param=f"messages[{index}].content")
            for j, p in enumerate(self.content):
                where = f"messages[{index}].content[{j}]"
                if p.text is None:
                    raise ApiError(400, f"`{where}.text` is required", code="invalid_value", param=f"{where}.text")
                for key in p.model_extra or {}:
                    raise ApiError(400, f"`{where}.{echo_text(key, 40)}` is not a parameter sftlab serve knows",
                                   code="unknown_parameter", param=f"{where}.{echo_text(key, 40)}")
            return "".join(p.text or "" for p in self.content)
        return self.content or ""

    def for_template(self, index: int) -> dict[str, Any]:
        """The message as chat templates read it: tool-call arguments as a mapping (templates write them with
        `tojson`; JSON text would be written as one quoted string)."""
        from sftlab.data.reasoning import tool_calls
        from sftlab.errors import RowError

        for key, why in (("refusal", "an earlier refusal cannot be rendered; send it as the content"),
                         ("audio", "this model reads text only"), ("function_call", "send `tool_calls`")):
            if getattr(self, key):
                raise ApiError(400, f"`messages[{index}].{key}` is not supported by sftlab serve: {why}",
                               code="unsupported_parameter", param=f"messages[{index}].{key}")
        out: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": self.text(index)}
        if self.tool_calls:  # normalised as a data row's calls are (sftlab.data.reasoning)
            try:
                out["tool_calls"] = tool_calls([c.model_dump(exclude_none=True) for c in self.tool_calls],
                                               f"messages[{index}].tool_calls")
            except RowError as e:
                raise ApiError(400, f"{e.field} {e.reason}", code="invalid_value", param=e.field) from None
        for key in ("tool_call_id", "name", "reasoning_content"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


class StreamOptions(_Strict):
    include_usage: Optional[bool] = None


class ChatRequest(_Strict):
    model: Optional[str] = None
    messages: list[ChatMessage]
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    temperature: Optional[float] = None  # None: the model's generation_config, else OpenAI's default of 1
    top_p: Optional[float] = None
    repetition_penalty: Optional[float] = None  # vLLM's extra parameter; None: the server's default
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    seed: Optional[int] = Field(default=None, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed takes
    n: Optional[int] = None  # one choice per request (a larger n is refused, not ignored)
    tools: Optional[list[ToolSpec]] = None
    # "required" and a named function would need constrained decoding: refused, not ignored
    tool_choice: Optional[Any] = None

    # The bounds chat and eval apply too (sftlab/config/bounds.py).
    @field_validator("max_tokens", "max_completion_tokens", "temperature", "top_p", "repetition_penalty")
    @classmethod
    def _within_limits(cls, value: Any, info: Any) -> Any:
        return check("max_new_tokens" if "tokens" in info.field_name else info.field_name, value)

    @field_validator("n")
    @classmethod
    def _one(cls, value: Any) -> Any:
        if value is not None and value != 1:
            raise ValueError("must be 1: sftlab serve writes one choice per request")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _auto_or_none(cls, value: Any) -> Any:
        if value not in (None, "auto", "none"):
            raise ValueError("must be 'auto' or 'none': 'required' and a named function need constrained decoding, "
                             "which sftlab serve does not do")
        return value


# Bounds of one request, checked before any work (docs/evaluation-and-serving.md, "Serving").
MAX_BODY_BYTES = 4 * 1024 * 1024  # a 128k-token prompt is well under 1 MiB of JSON
MAX_MESSAGES = 4096
MAX_STOPS, MAX_STOP_CHARS = 4, 1000  # OpenAI's "up to 4 sequences"

# OpenAI's chat-completion parameters sftlab does not implement: each refused, naming it, unless it is null or its
# default (JSON texts here: the value that asks for nothing more than what sftlab does).
UNSUPPORTED: dict[str, tuple[tuple[str, ...], str]] = {
    "logprobs": (("false",), "it returns no log probabilities"),
    "top_logprobs": ((), "it returns no log probabilities"),
    "logit_bias": (("{}",), "it applies no token biases"),
    "frequency_penalty": (("0", "0.0"), "it has no frequency penalty; `repetition_penalty` (vLLM's) acts"),
    "presence_penalty": (("0", "0.0"), "it has no presence penalty; `repetition_penalty` (vLLM's) acts"),
    "response_format": (('{"type": "text"}',), "JSON mode and structured outputs need constrained decoding, which "
                                               "it does not do"),
    "parallel_tool_calls": (("true",), "a model that writes several calls cannot be held to one"),
    "modalities": (('["text"]',), "this model writes text only"),
    "audio": ((), "this model writes text only"),
    "functions": ((), "the deprecated functions API; send `tools`"),
    "function_call": ((), "the deprecated functions API; send `tool_choice`"),
    "reasoning_effort": ((), "a model's reasoning is set by its chat template (`--template-kwargs`)"),
    "verbosity": ((), "it cannot set a model's verbosity"),
    "prediction": ((), "it does not use predicted outputs"),
    "web_search_options": ((), "it does not search the web"),
    "store": (("false",), "it stores no completions"),
    "metadata": ((), "it stores no completions"),
    "service_tier": (('"auto"', '"default"'), "it has one tier"),
    "user": ((), "it keeps no records of end users"),
    "safety_identifier": ((), "it keeps no records of end users"),
    "prompt_cache_key": ((), "it keeps no prompt cache"),
    "prompt_cache_retention": ((), "it keeps no prompt cache"),
    "prompt_cache_options": ((), "it keeps no prompt cache"),
    "moderation": ((), "it runs no moderation"),
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        # (a lone surrogate echoed from the request would make the JSON response itself fail to encode)
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


def _path(loc: tuple[Any, ...]) -> str:
    """A pydantic error's location as the request's path (`messages[0].content`), without the union members'
    names pydantic adds (`str`, `list[ContentPart]`)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _FIELDS or not _UNION_TAG.search(str(part)) and str(part) not in _TYPE_NAMES:
            out += f".{echo_text(str(part), 40)}" if out else echo_text(str(part), 40)
    return out


_TYPE_NAMES = {"str", "int", "float", "bool", "dict", "list"}
_UNION_TAG = re.compile(r"[\[\]]|^function-")
_KINDS = {"string_type": "a string", "int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
          "bool_type": "a boolean", "list_type": "a list", "dict_type": "an object", "model_type": "an object"}


def _invalid(e: ValidationError) -> ApiError:
    """A validation error as one sentence naming the parameter (`param` too, as OpenAI's errors do)."""
    errors = e.errors()
    err = errors[0]
    where = _path(tuple(err["loc"]))
    if err["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(str(err["loc"][-1]), sorted(_FIELDS | set(UNSUPPORTED)), n=1, cutoff=0.75)
        did = f"; did you mean `{hint[0]}`?" if hint else ""
        return ApiError(400, f"`{where}` is not a parameter sftlab serve knows{did}", code="unknown_parameter",
                        param=where)
    if err["type"] == "missing":
        return ApiError(400, f"`{where}` is required", code="invalid_value", param=where)
    kinds = [_KINDS.get(x["type"]) for x in errors if _path(tuple(x["loc"])) == where]
    if where.endswith("content") and len(kinds) > 1:
        what = "must be a string or a list of content parts"
    elif len(kinds) > 1 and all(kinds):
        what = "must be " + " or ".join(dict.fromkeys(k for k in kinds if k))
    elif kinds and kinds[0]:
        what = f"must be {kinds[0]}"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        what = msg[0].lower() + msg[1:]
    return ApiError(400, f"`{where}` {what} (got {echo(err.get('input'))})", code="invalid_value", param=where)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:  # json.loads would keep the last silently
            raise _Repeated(key)
        seen[key] = value
    return seen


class _Repeated(ValueError):
    pass


_FIELDS = {name for m in (ChatRequest, ChatMessage, ContentPart, ToolSpec, FunctionSpec, ToolCallIn, FunctionCall,
                          StreamOptions) for name in m.model_fields}


def check_request(payload: Any) -> ChatRequest:
    """A request body's JSON checked before any work: an object of valid text, not nested too deep, no parameter
    sftlab does not implement, then its fields (ChatRequest) and the bounds of its messages and stop strings.
    ApiError (400, in OpenAI's shape, naming the parameter) otherwise."""
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object")
    problem = text_problem(payload)
    if problem:
        where, what = problem
        raise ApiError(400, f"`{where}` {what}" if where else f"the request body {what}", code="invalid_value",
                       param=where or None)
    for name, (defaults, why) in UNSUPPORTED.items():
        value = payload.get(name)
        if value is not None and json.dumps(value, sort_keys=True) not in defaults:
            takes = f" (it takes only {' or '.join(defaults)})" if defaults else ""
            raise ApiError(400, f"`{name}` is not supported by sftlab serve: {why}{takes}",
                           code="unsupported_parameter",
                           param=name)
    known = {k: v for k, v in payload.items() if k not in UNSUPPORTED}
    messages = known.get("messages")
    if isinstance(messages, list) and not messages:
        raise ApiError(400, "`messages` must have at least one message", code="invalid_value", param="messages")
    if isinstance(messages, list) and len(messages) > MAX_MESSAGES:
        raise ApiError(400, f"`messages` has {len(messages)} messages; sftlab serve takes at most {MAX_MESSAGES}",
                       code="invalid_value", param="messages")
    try:
        req = ChatRequest(**known)
    except ValidationError as e:
        raise _invalid(e) from None
    if req.stream_options is not None and not req.stream:
        raise ApiError(400, "`stream_options` is only allowed with `stream: true`", code="invalid_value",
                       param="stream_options")
    if None not in (req.max_tokens, req.max_completion_tokens) and req.max_tokens != req.max_completion_tokens:
        raise ApiError(400, f"`max_tokens` ({req.max_tokens}) and `max_completion_tokens` "
                       f"({req.max_completion_tokens}) "
                       "disagree: give one of them", code="invalid_value", param="max_completion_tokens")
    stops = [req.stop] if isinstance(req.stop, str) else req.stop or []
    if len(stops) > MAX_STOPS:
        raise ApiError(400, f"`stop` has {len(stops)} strings; sftlab serve takes at most {MAX_STOPS}",
                       code="invalid_value", param="stop")
    for i, s in enumerate(stops):
        where = "stop" if isinstance(req.stop, str) else f"stop[{i}]"
        if not s:
            raise ApiError(400, f"`{where}` is empty: a stop string must have at least one character",
                           code="invalid_value", param=where)
        if len(s) > MAX_STOP_CHARS:
            raise ApiError(400, f"`{where}` is {len(s)} characters long; sftlab serve takes stop strings of at most "
                           f"{MAX_STOP_CHARS}", code="invalid_value", param=where)
    for i, m in enumerate(req.messages):
        m.for_template(i)  # refuses content it cannot read
    return req


@dataclass
class Completion:
    content: str
    reasoning: str
    tool_calls: list[ToolCall]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str

    def message(self) -> dict[str, Any]:
        """The choice's message in OpenAI's shape (content null beside tool calls, as OpenAI sends it)."""
        out: dict[str, Any] = {"role": "assistant", "content": self.content or (None if self.tool_calls else "")}
        if self.reasoning:
            out["reasoning_content"] = self.reasoning
        if self.tool_calls:
            out["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        return out


def _failed(e: BaseException) -> str:
    return f"the generation failed ({first_line(e, with_type=True)})"


def _stops(stop: str | list[str] | None) -> list[str]:
    """The request's stop strings (check_request refused empty ones, too many and too long)."""
    return [] if stop is None else [stop] if isinstance(stop, str) else list(stop)


class StopTrimmer:
    """Streams text while holding back what could be the start of a stop string; cuts at a stop."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=0)
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buffer += piece
        cut = min((i for i in (self.buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.buffer, self.stopped = self.buffer[:cut], "", True
            return out
        keep = self.hold - 1 if self.hold else 0
        out = self.buffer[: len(self.buffer) - keep] if keep else self.buffer
        self.buffer = self.buffer[len(out):]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out


class Server:
    """One model behind the API: requests rendered and generated through sftlab.inference.generate, one at a time."""

    def __init__(self, generator: Generator, name: str, repetition_penalty: float | None = None):
        """`repetition_penalty`: for requests that give none (None: the model's, else the greedy guard)."""
        self.gen, self.name, self.repetition_penalty = generator, name, repetition_penalty
        self.lock = threading.Lock()
        self.context = generator.context

    def tools(self, req: ChatRequest) -> list[dict[str, Any]] | None:
        """The request's tools as the template renders them; none with tool_choice "none" (the model is not to
        call one, so it is not offered one)."""
        if not req.tools or req.tool_choice == "none":
            return None
        if self.gen.tool_family is None:
            raise ApiError(400, "this model's chat template writes no tool calls sftlab can read (Hermes/Qwen "
                           "<tool_call>, Llama 3.1 JSON, Mistral [TOOL_CALLS]): send the request without tools",
                           code="unsupported_tools")
        return [t.model_dump(exclude_none=True) for t in req.tools]

    def _inputs(self, req: ChatRequest) -> tuple[Any, int, list[dict[str, Any]] | None]:
        messages = [m.for_template(i) for i, m in enumerate(req.messages)]
        tools = self.tools(req)
        try:
            prompt = self.gen.prompt(messages, tools)
        except ContextExceeded as e:  # (more text than the context holds, found before tokenizing)
            raise ApiError(400, str(e), code="context_length_exceeded", param="messages") from None
        except SftlabError as e:  # a template that rejects the conversation (e.g. roles out of order)
            raise ApiError(400, f"the chat template rejected the messages: {first_line(e)}") from None
        n = len(prompt.ids)
        option = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        asked = req.max_completion_tokens or req.max_tokens
        try:  # before any generation: the prompt and the answer asked for within the model's positions
            self.gen.check_room(n, asked, option)
        except ContextExceeded as e:
            raise ApiError(400, str(e), code="context_length_exceeded", param=option if asked else "messages") from None
        max_new = asked or max(1, min(512, self.context - n))
        return prompt, max_new, tools

    def temperature(self, req: ChatRequest) -> float | None:
        """The request's temperature; none given (None): the model's generation_config, else greedy with the
        repetition guard — what `sftlab chat` answers with, so the same question gets the same answer in both."""
        return req.temperature

    def _options(self, req: ChatRequest, max_new: int) -> dict[str, Any]:
        penalty = req.repetition_penalty if req.repetition_penalty is not None else self.repetition_penalty
        options: dict[str, Any] = dict(max_new_tokens=max_new,
                                       **self.gen.sampling(self.temperature(req), req.top_p, penalty))
        # Stop strings are cut by StopTrimmer, which ends the generation at the next token; transformers' own
        # stop_strings tables take memory of vocabulary size times the strings' length (56 GiB for one long string).
        return options

    def complete(self, req: ChatRequest) -> Completion:
        """The whole reply at once: the stream below, gathered."""
        pieces, info, _ = self.stream(req)
        reply = Reply()
        for p in pieces:
            reply.add(p)
        if "error" in info:
            raise ApiError(500, info["error"], type_="server_error")
        return Completion(reply.content, reply.reasoning, reply.tool_calls, info["prompt_tokens"],
                          info["completion_tokens"], info["finish_reason"])

    def stream(self, req: ChatRequest) -> tuple[Iterator[Piece], dict[str, Any], threading.Event]:
        """The reply's pieces (reasoning, answer text, whole tool calls) as they are generated; `info` gets usage
        and finish_reason (or error) once done; setting the event stops the generation (the client went away)."""
        prompt, max_new, tools = self._inputs(req)
        ids = prompt.ids
        info: dict[str, Any] = {"prompt_tokens": len(ids)}
        reader = self.gen.reader(prompt, [t["function"]["name"] for t in tools or []])

        def done(new: list[int] | None, error: Exception | None = None) -> None:
            if new is None:
                info["error"] = _failed(error)
                return
            info["completion_tokens"] = len(new)
            info["finish_reason"] = "stop" if self.gen.ended(new) or len(new) < max_new else "length"

        seed = req.seed if self.temperature(req) != 0 else None
        cancel = threading.Event()
        generated = self.gen.stream(ids, done=done, lock=self.lock, seed=seed, cancel=cancel,
                                    **self._options(req, max_new))

        def pieces() -> Iterator[Piece]:
            trimmer = StopTrimmer(_stops(req.stop))
            called = False
            try:
                for piece in generated:
                    for p in reader.feed(trimmer.feed(piece)):
                        called |= p.kind == "tool_call"
                        yield p
                    if trimmer.stopped:
                        break  # a stop string: no need to generate further
            finally:
                generated.close()  # ends the generation if we stop early (a stop string, a client gone)
            for p in reader.feed(trimmer.flush()) + reader.finish():
                called |= p.kind == "tool_call"
                yield p
            if trimmer.stopped:
                info["finish_reason"] = "stop"
            if called and "error" not in info:
                info["finish_reason"] = "tool_calls"

        return pieces(), info, cancel


def create_app(server: Server, api_key: str | None = None) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="sftlab serve", docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 404:
            error = ApiError(404, f"no route {request.url.path}", code="not_found")
        elif e.status_code == 405:
            error = ApiError(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed")
        else:
            error = ApiError(e.status_code, str(e.detail))
        return JSONResponse(error.body(), status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _server_error(_request: Request, e: Exception) -> JSONResponse:
        return JSONResponse(ApiError(500, _failed(e), type_="server_error").body(), status_code=500)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise ApiError(401, "missing or incorrect API key (send `Authorization: Bearer KEY`)",
                           code="invalid_api_key")

    @app.get("/v1/models")
    def models(request: Request) -> dict[str, Any]:
        check_key(request)
        return {"object": "list", "data": [{"id": server.name, "object": "model", "created": 0, "owned_by": "sftlab"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        check_key(request)
        raw = await _body(request)
        try:
            payload = json.loads(raw, object_pairs_hook=_unique_keys)
        except _Repeated as e:
            key = echo_text(str(e), 40)
            raise ApiError(400, f"the request body gives the key `{key}` twice", code="invalid_value",
                           param=key) from None
        except RecursionError:
            raise ApiError(400, "the request body is not valid JSON (nested too deeply)") from None
        except ValueError as e:  # (JSONDecodeError, UnicodeDecodeError, an integer of too many digits)
            problem = f"{e.__class__.__name__}: {echo_text(str(e))}"
            raise ApiError(400, f"the request body is not valid JSON ({problem})") from None
        req = check_request(payload)
        if req.model is not None and req.model != server.name:
            raise ApiError(404, f"the model {echo(req.model)} does not exist; this server serves '{server.name}'",
                           code="model_not_found", param="model")
        return await _respond(req)

    async def _body(request: Request) -> bytes:
        """The body, read no further than MAX_BODY_BYTES (a larger one is refused before it is all in memory)."""
        declared = request.headers.get("content-length", "")
        chunks, size = [], int(declared) if declared.isdigit() and len(declared) < 20 else 0
        if size <= MAX_BODY_BYTES:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    break
                chunks.append(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes, the most sftlab serve reads",
                           code="request_too_large")
        return b"".join(chunks)

    async def _respond(req: ChatRequest) -> Any:
        from starlette.concurrency import run_in_threadpool

        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        name = req.model or server.name
        if not req.stream:
            c = await run_in_threadpool(server.complete, req)
            return {
                "id": rid, "object": "chat.completion", "created": created, "model": name,
                "choices": [{"index": 0, "message": c.message(), "finish_reason": c.finish_reason, "logprobs": None}],
                "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                          "total_tokens": c.prompt_tokens + c.completion_tokens},
            }
        pieces, info, cancel = await run_in_threadpool(server.stream, req)

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict | None = None) -> str:
            body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            if usage is not None:
                body["usage"] = usage
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        async def events() -> AsyncIterator[str]:
            from starlette.concurrency import iterate_in_threadpool

            try:
                yield chunk({"role": "assistant", "content": ""})
                calls = 0
                async for p in iterate_in_threadpool(pieces):
                    if p.kind == "tool_call":  # one delta with the whole call (OpenAI's clients join the deltas)
                        yield chunk({"tool_calls": [p.call.to_openai(calls)]})
                        calls += 1
                    else:
                        yield chunk({"reasoning_content" if p.kind == "reasoning" else "content": p.text})
                if "error" in info:  # OpenAI's shape for a stream that fails midway
                    error = ApiError(500, info["error"], type_="server_error")
                    yield f"data: {json.dumps(error.body(), ensure_ascii=False)}\n\n"
                else:
                    p, c = info["prompt_tokens"], info.get("completion_tokens", 0)
                    usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
                    # Without stream_options the last chunk carries the usage; include_usage asks for OpenAI's own
                    # usage chunk (no choices), and include_usage false for none.
                    wants = req.stream_options.include_usage if req.stream_options else None
                    yield chunk({}, info.get("finish_reason", "stop"), usage if wants is None else None)
                    if wants:
                        body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                                "choices": [], "usage": usage}
                        yield f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
                yield "data: [DONE]\n\n"
            finally:  # also when the client went away (the task is cancelled): stop generating, release the model
                cancel.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


API_KEY_ENV = "SFTLAB_API_KEY"


def resolve_api_key(api_key: str | None = None, api_key_file: str | None = None) -> str | None:
    """The key from --api-key, else --api-key-file (first line), else $SFTLAB_API_KEY (a key on the
    command line is visible to every user in `ps`; a file or the environment is not)."""
    if api_key:
        return api_key
    if api_key_file:
        lines = read_text(api_key_file, "API key file (--api-key-file)").splitlines()
        key = lines[0].strip() if lines else ""
        if not key:
            raise SftlabError(f"--api-key-file {api_key_file}: the file's first line is empty")
        return key
    return os.environ.get(API_KEY_ENV) or None


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          escape: bool = True, precision: str = "auto", default_system: str | None = None,
          repetition_penalty: float | None = None, template_kwargs: dict[str, Any] | None = None,
          name: str | None = None) -> None:
    """`name`: the model id clients ask for and /v1/models lists (default: `model` as given)."""
    import uvicorn

    from sftlab.inference.generate import load_generator

    server = Server(load_generator(model, escape=escape, precision=precision, default_system=default_system,
                                   template_kwargs=template_kwargs), name=name or model,
                    repetition_penalty=repetition_penalty)
    uvicorn.run(create_app(server, api_key), host=host, port=port, log_level="warning")

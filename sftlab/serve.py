"""`sftlab serve`: an OpenAI-compatible chat-completions server (FastAPI + uvicorn) for a model.

One model, one generation at a time: requests wait on a lock, so concurrent requests are all served
and never share generation state. Errors use OpenAI's shape {"error": {"message", "type", "code"}}.
"""


import hmac
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sftlab.config import explain
from sftlab.errors import SftlabError, first_line
from sftlab.files import read_text
from sftlab.generate import ContextExceeded, Generator
from sftlab.config.checks import check
from sftlab.replies import Piece, Reply, ToolCall


class ContentPart(BaseModel):
    type: str
    text: Optional[str] = None


class FunctionCall(BaseModel):
    name: str
    arguments: Union[str, dict[str, Any]] = "{}"  # OpenAI sends JSON text; an object is taken too


class ToolCallIn(BaseModel):
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None


class ToolSpec(BaseModel):
    type: Literal["function"]
    function: FunctionSpec


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Union[str, list[ContentPart], None] = None
    tool_calls: Optional[list[ToolCallIn]] = None  # an assistant's earlier calls
    tool_call_id: Optional[str] = None  # a tool result's call
    name: Optional[str] = None
    reasoning_content: Optional[str] = None  # an assistant's earlier trace (Qwen3's template reads it)

    def text(self) -> str:
        if isinstance(self.content, list):
            other = [p.type for p in self.content if p.type != "text"]
            if other:  # dropping them would answer a different question than the one asked
                raise ApiError(400, f"content part type '{other[0]}' is not supported: this model reads text only",
                               code="unsupported_content")
            return "".join(p.text or "" for p in self.content)
        return self.content or ""

    def for_template(self, index: int) -> dict[str, Any]:
        """The message as chat templates read it: tool-call arguments as a mapping (templates write them with
        `tojson`; JSON text would be written as one quoted string)."""
        from sftlab.data.reasoning import tool_calls
        from sftlab.errors import RowError

        out: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": self.text()}
        if self.tool_calls:  # normalised as a data row's calls are (sftlab.data.reasoning)
            try:
                out["tool_calls"] = tool_calls([c.model_dump(exclude_none=True) for c in self.tool_calls],
                                               f"messages[{index}].tool_calls")
            except RowError as e:
                raise ApiError(400, f"{e.field} {e.reason}", code="invalid_value") from None
        for key in ("tool_call_id", "name", "reasoning_content"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: Optional[str] = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    temperature: Optional[float] = None  # None: the model's generation_config, else OpenAI's default of 1
    top_p: Optional[float] = None
    repetition_penalty: Optional[float] = None  # vLLM's extra parameter; None: the server's default
    stop: Union[str, list[str], None] = None
    stream: bool = False
    seed: Optional[int] = Field(default=None, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed takes
    n: int = Field(default=1, ge=1, le=1)  # one choice per request (a larger n is refused, not ignored)
    tools: Optional[list[ToolSpec]] = None
    # "required" and a named function would need constrained decoding: refused, not ignored
    tool_choice: Optional[Literal["auto", "none"]] = None

    # The bounds chat and eval apply too (sftlab/config/bounds.py).
    @field_validator("max_tokens", "max_completion_tokens", "temperature", "top_p", "repetition_penalty")
    @classmethod
    def _within_limits(cls, value: Any, info: Any) -> Any:
        return check("max_new_tokens" if "tokens" in info.field_name else info.field_name, value)


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": None}}


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
    if stop is None:
        return []
    return [s for s in ([stop] if isinstance(stop, str) else stop) if s]


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
    """One model behind the API: requests rendered and generated through sftlab.generate, one at a time."""

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
        except SftlabError as e:  # a template that rejects the conversation (e.g. roles out of order)
            raise ApiError(400, f"the chat template rejected the messages: {first_line(e)}") from None
        n = len(prompt.ids)
        max_new = req.max_completion_tokens or req.max_tokens or max(1, min(512, self.context - n))
        try:
            self.gen.check_room(n, max_new)
        except ContextExceeded as e:
            raise ApiError(400, str(e), code="context_length_exceeded") from None
        return prompt, max_new, tools

    def temperature(self, req: ChatRequest) -> float | None:
        """The request's temperature; none given: the model's generation_config (None), or OpenAI's default of 1
        where the model's config does not sample (as vLLM does)."""
        if req.temperature is not None:
            return req.temperature
        return None if self.gen.sampling()["do_sample"] else 1.0

    def _options(self, req: ChatRequest, max_new: int) -> dict[str, Any]:
        penalty = req.repetition_penalty if req.repetition_penalty is not None else self.repetition_penalty
        options: dict[str, Any] = dict(max_new_tokens=max_new,
                                       **self.gen.sampling(self.temperature(req), req.top_p, penalty))
        stops = _stops(req.stop)
        if stops:
            options.update(stop_strings=stops, tokenizer=self.gen.tokenizer)
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
        raw = await request.body()
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON ({e.__class__.__name__}: {e})") from None
        if not isinstance(payload, dict):
            raise ApiError(400, "the request body must be a JSON object")
        try:
            req = ChatRequest(**payload)
        except ValidationError as e:
            raise ApiError(400, explain(e, "the request", ChatRequest.model_fields),
                           code="invalid_value" if e.errors()[0]["loc"] else None) from None
        if req.model is not None and req.model != server.name:
            raise ApiError(404, f"the model '{req.model}' does not exist; this server serves '{server.name}'",
                           code="model_not_found")
        for i, m in enumerate(req.messages):
            m.for_template(i)  # refuses content it cannot read before any work starts
        return await _respond(req)

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
                    yield chunk({}, info.get("finish_reason", "stop"), usage)
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
          repetition_penalty: float | None = None, template_kwargs: dict[str, Any] | None = None) -> None:
    import uvicorn

    from sftlab.generate import load_generator

    server = Server(load_generator(model, escape=escape, precision=precision, default_system=default_system,
                                   template_kwargs=template_kwargs), name=model,
                    repetition_penalty=repetition_penalty)
    uvicorn.run(create_app(server, api_key), host=host, port=port, log_level="warning")

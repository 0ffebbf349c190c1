"""/api/chat: one answer of a model, streamed as server-sent events."""

from __future__ import annotations

from typing import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from sftlab import jsonsafe
from sftlab.defaults import DEFAULT_MODEL
from sftlab.errors import SftlabError, first_line
from sftlab.ui.bodies import ChatBody
from sftlab.ui.context import UI


def router(ui: UI) -> APIRouter:
    router = APIRouter()

    @router.post("/api/chat")
    async def chat(body: ChatBody) -> StreamingResponse:
        """`data: {"text": …}` pieces, then `data: {"done": true}` (or `{"error": …}`)."""
        model = ui.model(body.model) or DEFAULT_MODEL
        messages = [{"role": m.role, "content": m.content} for m in body.messages]
        if body.system:
            messages.insert(0, {"role": "system", "content": body.system})

        async def events() -> AsyncIterator[str]:
            try:
                pieces = await run_in_threadpool(ui.chat_models.stream, model, messages, body.temperature,
                                                 body.max_new_tokens)
                async for piece in iterate_in_threadpool(pieces):
                    yield f"data: {jsonsafe.dumps({'text': piece}, ensure_ascii=False)}\n\n"
                yield f"data: {jsonsafe.dumps({'done': True})}\n\n"
            except Exception as e:  # noqa: BLE001 - said in the page, in one sentence
                message = str(e) if isinstance(e, SftlabError) else f"the generation failed ({first_line(e, with_type=True)})"
                yield f"data: {jsonsafe.dumps({'error': message}, ensure_ascii=False)}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    return router

"""Chat with a model: streaming, multi-turn, with the model's own chat template."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

from sftlab.errors import SftlabError


@dataclass
class ChatSession:
    model: Any
    tokenizer: Any
    system: str | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    history: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not getattr(self.tokenizer, "chat_template", None):
            raise SftlabError("the model's tokenizer has no chat template; chat needs one")
        self.model.eval()

    def messages_for(self, text: str) -> list[dict[str, str]]:
        """The conversation the model sees when answering `text`: system, earlier turns, the new message."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history + [{"role": "user", "content": text}]

    def reply(self, text: str) -> Iterator[str]:
        """Stream the answer to one user message, piece by piece; the turn is kept for the next one."""
        import torch
        from transformers import TextIteratorStreamer

        messages = self.messages_for(text)
        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {"do_sample": False}
        kwargs = dict(**inputs, streamer=streamer, max_new_tokens=self.max_new_tokens,
                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id, **sampling)

        def generate() -> None:
            with torch.no_grad():
                self.model.generate(**kwargs)

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        pieces = []
        for piece in streamer:
            pieces.append(piece)
            yield piece
        worker.join()
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": "".join(pieces).strip()}]


def open_session(model: str | None, **options: Any) -> ChatSession:
    from transformers import AutoTokenizer

    from sftlab.models import load_model, model_path

    path = model_path(model)
    return ChatSession(load_model(path), AutoTokenizer.from_pretrained(path), **options)

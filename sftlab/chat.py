"""Chat with a model: streaming, multi-turn, with the model's own chat template."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from sftlab.generate import Generator, check_options


@dataclass
class ChatSession:
    generator: Generator
    system: str | None = None
    max_new_tokens: int = 256
    temperature: float | None = None  # None: the model's generation_config, else greedy (generate.sampling_options)
    top_p: float | None = None
    repetition_penalty: float | None = None
    history: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_options(self.max_new_tokens, self.temperature, self.top_p, self.repetition_penalty)

    def messages_for(self, text: str) -> list[dict[str, str]]:
        """The conversation the model sees when answering `text`: system, earlier turns, the new message."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history + [{"role": "user", "content": text}]

    def reply(self, text: str) -> Iterator[str]:
        """Stream the answer to one user message, piece by piece; the turn is kept for the next one."""
        ids = self.generator.prompt_ids(self.messages_for(text))
        self.generator.check_room(len(ids), self.max_new_tokens, "--max-new-tokens")
        sampling = self.generator.sampling(self.temperature, self.top_p, self.repetition_penalty)
        pieces = []
        for piece in self.generator.stream(ids, max_new_tokens=self.max_new_tokens, **sampling):
            pieces.append(piece)
            yield piece
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": "".join(pieces).strip()}]


def open_session(model: str | None, escape: bool = True, precision: str = "auto", default_system: str | None = None,
                 **options: Any) -> ChatSession:
    from sftlab.generate import load_generator

    return ChatSession(load_generator(model, escape=escape, precision=precision, default_system=default_system),
                       **options)

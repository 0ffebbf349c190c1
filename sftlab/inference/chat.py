"""Chat with a model: streaming, multi-turn, with the model's own chat template."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from sftlab.errors import SftlabError
from sftlab.inference.generate import Generator, check_options, text_problem
from sftlab.inference.replies import Piece, Reply


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

    def reply(self, text: str) -> Iterator[Piece]:
        """Stream the reply to one user message, piece by piece: its reasoning trace (a `<think>` block) apart from
        its answer. The turn is kept for the next one, the trace as the message's reasoning_content (templates
        that show earlier traces read it; Qwen3's leaves it out)."""
        problem = text_problem(text, "the message")  # (named as the user typed it, not by its place in the prompt)
        if problem:
            raise SftlabError(" ".join(problem))
        prompt = self.generator.prompt(self.messages_for(text))
        self.generator.check_room(len(prompt.ids), self.max_new_tokens, "--max-new-tokens")
        sampling = self.generator.sampling(self.temperature, self.top_p, self.repetition_penalty)
        reader, reply = self.generator.reader(prompt), Reply()
        stream = self.generator.stream(prompt.ids, max_new_tokens=self.max_new_tokens, **sampling)
        for piece in _pieces(stream, reader):
            reply.add(piece)
            yield piece
        answer: dict[str, str] = {"role": "assistant", "content": reply.content}
        if reply.reasoning:
            answer["reasoning_content"] = reply.reasoning
        self.history += [{"role": "user", "content": text}, answer]

    def ask(self, text: str) -> Reply:
        """The whole reply to one user message (reasoning and answer apart)."""
        reply = Reply()
        for piece in self.reply(text):
            reply.add(piece)
        return reply


def _pieces(stream: Iterator[str], reader: Any) -> Iterator[Piece]:
    for text in stream:
        yield from reader.feed(text)
    yield from reader.finish()


def open_session(model: str | None, escape: bool = True, precision: str = "auto", default_system: str | None = None,
                 template_kwargs: dict[str, Any] | None = None, **options: Any) -> ChatSession:
    from sftlab.inference.generate import load_generator

    return ChatSession(load_generator(model, escape=escape, precision=precision, default_system=default_system,
                                      template_kwargs=template_kwargs), **options)

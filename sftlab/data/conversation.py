"""Conversation and Message: what every input format becomes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Message:
    role: str
    content: str
    # None means "follow the train_on mode"; False/True force it for this message.
    train: bool | None = None
    weight: float | None = None
    tool_calls: list[dict[str, Any]] | None = None
    name: str | None = None
    # Alpaca keeps instruction and input apart so its template can write "### Input:" on its own.
    parts: dict[str, str] | None = None
    # An assistant message's reasoning trace (reasoning.py): None for none, "" for an empty one (<think></think>).
    reasoning: str | None = None
    # A tool message's call id (OpenAI's tool_call_id; Mistral's template requires it).
    tool_call_id: str | None = None

    def instruction_input(self) -> tuple[str, str]:
        """A user message's instruction and input (an alpaca row keeps them apart; otherwise the content)."""
        parts = self.parts or {}
        return parts.get("instruction", self.content), parts.get("input", "")

    def to_template_dict(self) -> dict[str, Any]:
        """The dict a chat template sees (the shape `apply_chat_template` takes, an OpenAI chat message):
        reasoning as `reasoning_content` (ChatTemplate.render gives it to each template the way it reads it),
        tool calls as `[{"type": "function", "function": {"name": …, "arguments": {…}}, "id"?: …}]`."""
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.reasoning is not None:
            d["reasoning_content"] = self.reasoning
        if self.tool_calls:
            d["tool_calls"] = self.tool_calls
        if self.name:
            d["name"] = self.name
        if self.tool_call_id:
            d["tool_call_id"] = self.tool_call_id
        if self.parts:
            d.update(self.parts)
        return d


@dataclass
class Conversation:
    messages: list[Message]
    tools: list[dict[str, Any]] | None = None
    # Provenance: every error and every dropped example can be traced to its row.
    source: str = "<memory>"
    row: int = 0
    # Continued pre-training text: every token trained, EOS appended, no template.
    is_text: bool = False

    @property
    def assistant_indices(self) -> list[int]:
        return [i for i, m in enumerate(self.messages) if m.role == "assistant"]

    def turns(self) -> list[tuple[str, str, str]]:
        """(instruction, input, answer) of each assistant answer, the instruction and input being those of the
        user message before it (an alpaca row's instruction and input stay apart). Text: one answer, the text."""
        if self.is_text:
            return [("", "", self.messages[0].content)] if self.messages else []
        out, user = [], ("", "")
        for m in self.messages:
            if m.role == "user":
                user = m.instruction_input()
            elif m.role == "assistant" and (m.content or not m.tool_calls):
                out.append((*user, m.content))
        return out

    def prompt_texts(self) -> list[str]:
        """Every non-assistant text: system prompts, tool results, users' instructions and inputs."""
        if self.is_text:
            return []
        out = []
        for m in self.messages:
            if m.role == "user":
                out += [p for p in m.instruction_input() if p]
            elif m.role != "assistant":
                out.append(m.content)
        return out

    def last_instruction(self) -> tuple[str, str]:
        """The last user message's instruction and input."""
        user = next((m for m in reversed(self.messages) if m.role == "user"), None) if not self.is_text else None
        return user.instruction_input() if user is not None else ("", "")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"messages": [_message_dict(m) for m in self.messages]}
        if self.tools:
            d["tools"] = self.tools
        return d


def _message_dict(m: Message) -> dict[str, Any]:
    d = m.to_template_dict()
    if m.train is not None:
        d["train"] = m.train
    if m.weight is not None:
        d["weight"] = m.weight
    return d

"""Encoding time of one conversation of 1,000 / 4,000 / 16,000 turns (the default model and template).

    .venv/bin/python benchmarks/long_conversation.py

Each assistant turn's span needs the rendered prefix up to it; rendering every prefix whole costs
turns², so a conversation renders only the turns that start before the max_length truncation point
(plus one). Printed: seconds per conversation at max_length 1024 (training's default) and 4096, and,
for 1,000 turns, the time when every prefix is rendered (the old behaviour) for comparison.
"""

from __future__ import annotations

import time

import sftlab.data.encode as enc
from sftlab.data.conversation import Conversation, Message
from sftlab.data.templates import template_for
from sftlab.models import load_tokenizer


def conversation(turns: int) -> Conversation:
    return Conversation([Message("user" if k % 2 == 0 else "assistant", f"Turn {k}: a short line, 第{k}轮。")
                         for k in range(turns)])


def seconds(encoder: enc.Encoder, conv: Conversation) -> float:
    start = time.perf_counter()
    result = encoder.encode([conv])
    assert len(result.examples) == 1
    return time.perf_counter() - start


def main() -> None:
    tok = load_tokenizer(None)
    chat = template_for(None, tok, [conversation(2)])
    for max_length in (1024, 4096):
        encoder = enc.Encoder(tok, chat, max_length=max_length)
        for turns in (1000, 4000, 16000):
            print(f"max_length {max_length:>5}, {turns:>6} turns: {seconds(encoder, conversation(turns)):7.2f} s")
    enc.LONG_CONVERSATION_TURNS = 10**9
    print(f"every prefix rendered, 1000 turns: {seconds(enc.Encoder(tok, chat, max_length=1024), conversation(1000)):.2f} s")


if __name__ == "__main__":
    main()

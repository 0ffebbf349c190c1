"""`sftlab chat`: one-shot answers for scripts and multi-turn sessions, with the real default model."""

from __future__ import annotations

import subprocess
import sys

from sftlab.chat import open_session
import pytest

pytestmark = pytest.mark.slow  # real trainings, models, servers and subprocess CLIs


def test_chat_prompt_answers_once_and_exits():
    r = subprocess.run(
        [sys.executable, "-m", "sftlab", "chat", "--prompt", "What is the capital of France?", "--max-new-tokens", "16", "--precision", "fp32"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_chat_session_is_multi_turn():
    session = open_session(None, system="You are a helpful assistant.", max_new_tokens=12)
    first = "".join(session.reply("My name is Ada. Remember it."))
    assert first.strip()
    assert [m["role"] for m in session.history] == ["user", "assistant"]
    # The second question is asked with the whole conversation so far (a 135M model's recall is not
    # what is tested here; that the context reaches it is).
    assert session.messages_for("What is my name?") == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "My name is Ada. Remember it."},
        {"role": "assistant", "content": first.strip()},
        {"role": "user", "content": "What is my name?"},
    ]
    assert "".join(session.reply("What is my name?")).strip()
    assert len(session.history) == 4


def test_a_cut_chinese_character_is_never_emitted_as_u_fffd():
    """"开发的人工龘" is 5 Qwen2 tokens, the last two the bytes of 龘: an answer cut after the first of them
    (max_new_tokens) must end at "人工", in a whole answer and in a stream."""
    import torch

    from conftest import tokenizer
    from sftlab.generate import _streamer, complete_text

    tok = tokenizer("qwen2")
    ids = [100013, 100623, 48692, 82912]
    assert tok.decode(ids).endswith("\ufffd")  # what a plain decode gives
    assert complete_text(tok.decode(ids)) == "开发的人工"
    streamer = _streamer(tok)
    streamer.put(torch.tensor([[1, 2]]))  # the prompt, skipped
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    assert "".join(streamer) == "开发的人工"

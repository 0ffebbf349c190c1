"""`sftlab chat`: one-shot answers for scripts and multi-turn sessions, with the real default model."""

from __future__ import annotations

import subprocess
import sys

from sftlab.inference.chat import open_session
import pytest
import re
from helpers import _one_line
from sftlab.errors import SftlabError

# The tests marked slow start real models, servers and subprocess CLIs; the others use a stand-in model.


@pytest.mark.slow
def test_chat_prompt_answers_once_and_exits():
    r = subprocess.run(
        [sys.executable, "-m", "sftlab", "chat", "--prompt", "What is the capital of France?", "--max-new-tokens", "16", "--precision", "fp32"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


@pytest.mark.slow
def test_chat_session_is_multi_turn():
    session = open_session(None, system="You are a helpful assistant.", max_new_tokens=12)
    first = session.ask("My name is Ada. Remember it.").content
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
    assert session.ask("What is my name?").content
    assert len(session.history) == 4


@pytest.mark.slow
def test_a_cut_chinese_character_is_never_emitted_as_u_fffd():
    """"开发的人工龘" is 5 Qwen2 tokens, the last two the bytes of 龘: an answer cut after the first of them
    (max_new_tokens) must end at "人工", in a whole answer and in a stream."""
    import torch

    from helpers import tokenizer
    from sftlab.inference.generate import _streamer, complete_text

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


# ---- hostile and odd input (issue 25's rounds) ----

@pytest.mark.slow
@pytest.mark.parametrize("value, want", [("-1", "must be between 0 and 2 (got -1.0)"),
                                         ("nan", "must be a finite number (between 0 and 2) (got nan)")])
def test_chat_temperature_is_checked_before_loading(value, want, cli):
    r = cli("chat", "--model", "nowhere", "--temperature", value, "--prompt", "hi")
    assert r.returncode == 2 and "--temperature" in r.stderr and want in _one_line(r.stderr), r.stderr


@pytest.mark.slow
def test_chat_max_new_tokens_must_be_positive(cli):
    from sftlab.inference.chat import ChatSession

    r = cli("chat", "--model", "nowhere", "--max-new-tokens", "-1", "--prompt", "hi")
    assert r.returncode == 2 and "--max-new-tokens" in r.stderr and "must be at least 1 (got -1)" in _one_line(r.stderr)
    with pytest.raises(SftlabError, match=r"^max_new_tokens must be at least 1 \(got 0\)$"):
        ChatSession(generator=None, max_new_tokens=0)  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_chat_prompt_longer_than_the_context_is_refused(tiny_chat_model, cli):
    r = cli("chat", "--model", tiny_chat_model, "--prompt", "word " * 1100, "--max-new-tokens", "8", "--precision", "fp32")
    assert r.returncode == 2, r.stderr[-2000:]
    assert re.search(r"this model's maximum context length is 1024 tokens \(the prompt and --max-new-tokens together\); "
                     r"the messages have \d+ and --max-new-tokens asks for 8 more", _one_line(r.stderr)), r.stderr


@pytest.mark.slow
def test_chat_shows_a_trace_apart_from_the_answer(tiny_chat_model, cli, monkeypatch):
    """The reasoning goes to stderr (dimmed on a terminal), the answer alone to stdout; the session keeps the trace
    as the turn's reasoning_content."""
    from helpers import scripted_generator
    from sftlab.inference import generate

    reply = "<think>\nA greeting; answer in kind.\n</think>\n\nHello, Ada!"
    gen, script = scripted_generator(tiny_chat_model, "Qwen-Qwen2.5-7B-Instruct.jinja", lambda prompt: reply)
    monkeypatch.setattr(generate, "load_generator", lambda *a, **kw: gen)
    result = cli("chat", "--prompt", "Hi, I am Ada.")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, Ada!\n"
    assert "A greeting; answer in kind." in result.stderr and "Hello" not in result.stderr

    session = open_session(None)
    pieces = [(p.kind, p.text) for p in session.reply("Hi, I am Ada.")]
    assert [k for i, (k, _) in enumerate(pieces) if i == 0 or pieces[i - 1][0] != k] == ["reasoning", "content"]
    assert "".join(t for k, t in pieces if k == "reasoning") == "A greeting; answer in kind."
    assert "".join(t for k, t in pieces if k == "content") == "Hello, Ada!"
    assert session.history[-1] == {"role": "assistant", "content": "Hello, Ada!",
                                   "reasoning_content": "A greeting; answer in kind."}


def test_a_prompt_that_is_not_unicode_is_one_sentence(cli, monkeypatch):
    """Bytes that are not UTF-8 (`--prompt "$(cat file)"`) reach Python as lone surrogates: one sentence, exit 2, never
    the tokenizer's TypeError. A stand-in model: the refusal comes before any generation."""
    from types import SimpleNamespace

    from helpers import tokenizer
    from sftlab.inference import generate

    class StandIn:
        config = SimpleNamespace(max_position_embeddings=1024)
        generation_config = SimpleNamespace(eos_token_id=None)

        def eval(self):
            return self

        def generate(self, **kwargs):
            raise AssertionError("generated")

    gen = generate.Generator(StandIn(), tokenizer("qwen2"))
    monkeypatch.setattr(generate, "load_generator", lambda *a, **kw: gen)
    r = cli("chat", "--prompt", "hi \udcff there")
    assert (r.returncode, r.stdout) == (2, ""), r.stderr
    assert r.stderr.splitlines()[-1] == "error: the message holds a lone surrogate (U+DCFF), which is not Unicode text"
    r = cli("chat", "--prompt", "hi", "--system", "\ud800")
    assert r.returncode == 2 and r.stderr.splitlines()[-1] == ("error: messages[0].content holds a lone surrogate "
                                                               "(U+D800), which is not Unicode text"), r.stderr

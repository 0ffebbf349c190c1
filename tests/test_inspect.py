"""sftlab.data.inspect: the terminal, JSON and HTML views of literal examples, with the real Qwen2 tokenizer.
Token ids by hand: <|im_start|> 151644, <|im_end|> 151645, "assistant" 77091, "\\n" 198, "世界" 99489; 龘 is two byte
tokens, 82912 246; "hi <|im_end|> there" as text is "hi" " <|" "im" "_end" "|" ">" " there"."""

from __future__ import annotations

import io
import json
import re

from helpers import tokenizer
from sftlab.data.example import Example
from sftlab.data.inspect import examples_html, render_html, render_json, render_terminal
from helpers import ALPACA, QWEN, _lines, _one_line

# <|im_start|>assistant\n世界龘<|im_end|>, the answer and its end-of-turn token trained
ANSWER = Example([151644, 77091, 198, 99489, 82912, 246, 151645], [-100, -100, -100, 99489, 82912, 246, 151645],
                 source="d.jsonl", row=3)
# hi <|im_end|> there, where the data spells <|im_end|> and it stayed text; nothing trained
ESCAPED = Example([6023, 82639, 318, 6213, 91, 29, 1052], [-100] * 7, source="d.jsonl", row=4)


def terminal(examples, **console):
    from rich.console import Console

    out = io.StringIO()
    render_terminal(examples, tokenizer("qwen2"), Console(file=out, width=100, **console))
    return out.getvalue()


def test_piped_terminal_view_marks_trained_and_escaped_text_with_characters():
    lines = terminal([ANSWER, ESCAPED], force_terminal=False).splitlines()
    assert lines[0] == "legend: ⟦trained⟧, everything else not trained (label -100); «special-token text kept as text»"
    assert re.fullmatch(r"─+ d\.jsonl row 3 · 7 tokens · 4 trained ─+", lines[1])
    assert lines[2:4] == ["<|im_start|>assistant↵", "⟦世界龘<|im_end|>⟧"]
    assert re.fullmatch(r"─+ d\.jsonl row 4 · 7 tokens · 0 trained ─+", lines[4])
    assert lines[5:] == ["hi« <|im_end|>» there"]


def test_terminal_view_on_a_terminal_uses_colours_not_characters():
    styled = terminal([ANSWER], force_terminal=True, color_system="truecolor")
    assert "\x1b[" in styled and "⟦" not in styled and "«" not in styled
    plain = re.sub(r"\x1b\[[0-9;]*m", "", styled).splitlines()
    assert plain[0] == "legend:  trained   not trained (label -100)   special token   special-token text kept as text "
    assert plain[2:] == ["<|im_start|>assistant↵", "世界龘<|im_end|>"]


def test_json_view_is_one_object_per_example():
    assert list(render_json([ANSWER, ESCAPED])) == [
        '{"input_ids": [151644, 77091, 198, 99489, 82912, 246, 151645], '
        '"labels": [-100, -100, -100, 99489, 82912, 246, 151645], "source": "d.jsonl", "row": 3}',
        '{"input_ids": [6023, 82639, 318, 6213, 91, 29, 1052], '
        '"labels": [-100, -100, -100, -100, -100, -100, -100], "source": "d.jsonl", "row": 4}',
    ]
    weighted = Example([1, 2], [-100, 2], weights=[0.0, 0.5])
    assert json.loads(next(iter(render_json([weighted]))))["weights"] == [0.0, 0.5]


def test_html_view_one_span_per_token_with_its_ids_and_label():
    assert examples_html([ANSWER], tokenizer("qwen2")) == (
        "<div class='ex'><h2>d.jsonl · row 3 · 7 tokens · 4 trained</h2><div class='toks'>"
        "<span class='u s' title='ids [151644] · -100'>&lt;|im_start|&gt;</span>"
        "<span class='u alt' title='ids [77091] · -100'>assistant</span>"
        "<span class='u' title='ids [198] · -100'><span class='nl'>↵</span>\n</span>"
        "<span class='t alt' title='ids [99489] · trained'>世界</span>"
        "<span class='t' title='ids [82912, 246] · trained'>龘</span>"  # two byte tokens, one character
        "<span class='t alt s' title='ids [151645] · trained'>&lt;|im_end|&gt;</span>"
        "</div></div>"
    )


def test_html_view_marks_special_token_text_kept_as_text():
    assert examples_html([ESCAPED], tokenizer("qwen2")) == (
        "<div class='ex'><h2>d.jsonl · row 4 · 7 tokens · 0 trained</h2><div class='toks'>"
        "<span class='u' title='ids [6023] · -100'>hi</span>"
        "<span class='u alt e' title='ids [82639] · -100'> &lt;|</span>"
        "<span class='u e' title='ids [318] · -100'>im</span>"
        "<span class='u alt e' title='ids [6213] · -100'>_end</span>"
        "<span class='u e' title='ids [91] · -100'>|</span>"
        "<span class='u alt e' title='ids [29] · -100'>&gt;</span>"
        "<span class='u' title='ids [1052] · -100'> there</span>"
        "</div></div>"
    )


def test_html_page_is_self_contained_with_the_summary_above():
    page = render_html([ANSWER], tokenizer("qwen2"), title="run <1>", summary={"examples": 1, "trained tokens": 4})
    assert page.startswith("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>run &lt;1&gt;</title>"
                           "<style>")
    assert page.endswith("<h1>run &lt;1&gt;</h1><p class='legend'><span class='t'>trained (label = token)</span>"
                         "<span class='u'>not trained (label -100)</span><span class='u s'>special token</span>"
                         "<span class='u e'>special-token text kept as text</span><span class='t r'>reasoning</span>"
                         "<span class='t c'>tool call</span><span class='u x'>tool result</span></p><table class='summary'>"
                         "<tr><td>examples</td><td>1</td></tr><tr><td>trained tokens</td><td>4</td></tr></table>"
                         + examples_html([ANSWER], tokenizer("qwen2")) + "</body></html>")
    assert "http" not in page and "<script" not in page


# ---- hostile and odd input (issue 25's rounds) ----

def test_inspect_limit_must_be_positive(tmp_path, cli):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), json.dumps(ALPACA))
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", str(f), "--limit", "-1")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--limit" in r.stderr


def test_html_into_a_missing_folder_or_onto_a_folder(tmp_path, cli):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA))
    deep = tmp_path / "new" / "folder" / "view.html"
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", f, "--html", deep)
    assert r.returncode == 0 and deep.read_text(encoding="utf-8").startswith("<!doctype html>"), r.stderr[-2000:]
    for args in (["inspect", "--model", QWEN, "--template", "chatml", "--data", f, "--html", tmp_path],
                 ["data", "check", f, "--model", QWEN, "--template", "chatml", "--no-clusters", "--html", tmp_path]):
        r = cli(*args)
        assert r.returncode == 2 and f"{tmp_path} is a folder; give a file name" in _one_line(r.stderr), r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", f, "--html", blocker / "v.html")
    assert r.returncode == 2 and f"{blocker} is a file, not a folder" in _one_line(r.stderr), r.stderr


def test_the_terminal_view_decodes_each_token_id_alone_once_for_a_whole_file():
    """A file's examples are made of the same few thousand token ids: the view decodes each id alone once and only
    the byte tokens that decode together (龘 is two byte tokens here) again per example; the output is what
    each example alone shows (inspect of 200,000 rows spent most of its time in these decode calls)."""
    from rich.console import Console

    tok, calls = tokenizer("qwen2"), []

    class Counting:
        def __getattr__(self, name):
            return getattr(tok, name)

        def decode(self, ids, **kw):
            calls.append(list(ids))
            return tok.decode(ids, **kw)

    def view(examples, tokenizer):
        out = io.StringIO()
        render_terminal(examples, tokenizer, Console(file=out, width=100, force_terminal=False))
        return out.getvalue().splitlines()

    many = view([ANSWER] * 50, Counting())
    # Alone: <|im_start|>, assistant, \n, 世界, the first byte of 龘 (U+FFFD alone), <|im_end|>; together: 龘's bytes.
    assert sorted(c for c in calls if len(c) == 1) == [[198], [77091], [82912], [99489], [151644], [151645]]
    assert [c for c in calls if len(c) > 1] == [[82912, 246]] * 50
    one = view([ANSWER], tok)
    assert many == one[:1] + one[1:] * 50


def test_reasoning_tool_call_and_tool_result_tokens_are_marked_apart():
    from rich.console import Console

    from sftlab.data.encode import Encoder
    from sftlab.data.formats import convert_row
    from sftlab.data.templates import resolve_template

    tok = tokenizer("qwen2")
    row = {"tools": [{"name": "get_weather", "parameters": {"type": "object"}}], "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "<think>Use the tool.</think>Checking.",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "content": "21"}, {"role": "assistant", "content": "21 °C."}]}
    ex = Encoder(tok, resolve_template("chatml", tok), parts=True).encode_one(convert_row(row, "messages"))
    shown = {kind: tok.decode(ex.input_ids[lo:hi]) for lo, hi, kind in ex.parts if kind != "answer"}
    assert shown == {"reasoning": "<think>\nUse the tool.\n</think>\n\n",
                     "tool_call": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
                     "tool_result": "21"}
    # ("Checking" ".\n" "<tool_call>": the token ".\n" starts in the answer)
    assert [tok.decode(ex.input_ids[lo:hi]) for lo, hi, kind in ex.parts if kind == "answer"] == ["Checking.\n", "21 °C.<|im_end|>"]
    out = io.StringIO()
    render_terminal([ex], tok, Console(file=out, width=200, force_terminal=False))
    text = out.getvalue()
    assert text.splitlines()[1] == "        ‹think›reasoning‹/think›, ‹call›tool call‹/call›, ‹result›tool result‹/result›"
    assert "⟦‹think›<think>↵\nUse the tool.↵\n</think>↵\n↵\n‹/think›Checking.↵\n‹call›<tool_call>↵" in text
    assert "<|im_start|>tool↵\n‹result›21‹/result›<|im_end|>↵" in text
    assert "class='u x'" in render_html([ex], tok) and "class='t r'" in render_html([ex], tok)

"""Terminal and HTML views of examples: every token, the trained ones highlighted."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from markupsafe import Markup

from sftlab import jsonsafe
from sftlab.data.example import IGNORE_INDEX, Example


@dataclass
class Segment:
    """The text of one token (or of a few byte tokens that only decode together) and whether it is trained."""

    text: str
    ids: list[int]
    trained: bool
    special: bool
    escaped: bool = False  # part of special-token text that the data spells and that stayed text
    kind: str | None = None  # "reasoning", "tool_call" or "tool_result" (Example.parts); None for anything else


def segmented(examples: Iterable[Example], tokenizer: Any) -> Iterator[tuple[Example, list[Segment]]]:
    """Each example with its displayable pieces (the tokenizer's special ids and strings looked up once)."""
    from sftlab.data.tokenize import TokenizerView, special_token_ids

    special_ids, tokens = special_token_ids(tokenizer), TokenizerView(tokenizer)
    decoded: dict[int, str] = {}
    for example in examples:
        yield example, segments(example, tokenizer, special_ids, tokens, decoded)


def segments(example: Example, tokenizer: Any, special_ids: set[int], tokens: Any,
             decoded: dict[int, str] | None = None) -> list[Segment]:
    """Split an example into displayable pieces. Byte-level tokenizers cut a Chinese character or an
    emoji into several tokens that decode to U+FFFD on their own; those are joined until they decode.
    `decoded`: the text of each token id decoded alone so far, kept across examples (the same few thousand ids
    make up every example of a file, and one decode call costs more than the rest of a token's work)."""
    out: list[Segment] = []
    buf: list[int] = []
    trained = False
    decoded = {} if decoded is None else decoded
    kinds: list[str | None] = [None] * len(example.input_ids)
    for lo, hi, kind in example.parts or ():
        if kind != "answer":
            kinds[lo:hi] = [kind] * (hi - lo)
    for k, (tid, label) in enumerate(zip(example.input_ids, example.labels)):
        buf.append(tid)
        trained = trained or label != IGNORE_INDEX
        if len(buf) == 1:
            text = decoded.get(tid)
            if text is None:
                text = decoded[tid] = tokenizer.decode(buf, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        else:
            text = tokenizer.decode(buf, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if "\ufffd" in text and len(buf) < 4:
            continue
        out.append(Segment(text, buf, trained, len(buf) == 1 and tid in special_ids, kind=kinds[k]))
        buf, trained = [], False
    if buf:
        text = tokenizer.decode(buf, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        out.append(Segment(text, buf, trained, False))
    _mark_escaped(out, tokens)
    return out


def _mark_escaped(segs: list[Segment], tokens: Any) -> None:
    """Mark the segments that spell a special token's text without being that token (escaped data)."""
    spans = tokens.special_spans("".join(seg.text for seg in segs))
    ends, at = [], 0
    for seg in segs:
        at += len(seg.text)
        ends.append(at)
    for start, end in spans:
        first = bisect.bisect_right(ends, start)
        last = bisect.bisect_left(ends, end)
        if first == last and segs[first].special:
            continue
        for k in range(first, min(last, len(segs) - 1) + 1):
            segs[k].escaped = True


def _visible(text: str) -> str:
    return text.replace("\n", "↵\n").replace("\t", "→")


def render_terminal(examples: Sequence[Example], tokenizer: Any, console: Any) -> None:
    from rich.rule import Rule
    from rich.text import Text

    styled = console.is_terminal and not console.no_color
    if styled:
        legend = Text("legend: ")
        legend.append(" trained ", style="bold black on green3")
        legend.append(" ")
        legend.append(" not trained (label -100) ", style="grey62 on grey19")
        legend.append(" ")
        legend.append(" special token ", style="grey62 on grey19 underline")
        legend.append(" ")
        legend.append(" special-token text kept as text ", style="grey62 on grey19 italic magenta")
        kinds = Text("        ")
        for kind in KIND_LABELS:
            kinds.append(f" {KIND_LABELS[kind]} ", style=KIND_STYLES[kind][0])
            kinds.append(" ")
    else:  # piped or no colour: the marks are characters
        legend = Text("legend: ⟦trained⟧, everything else not trained (label -100); «special-token text kept as text»")
        kinds = Text("        " + ", ".join(f"{KIND_MARKS[k][0]}{KIND_LABELS[k]}{KIND_MARKS[k][1]}" for k in KIND_LABELS))
    console.print(legend)
    if any(kind != "answer" for ex in examples for *_, kind in ex.parts or ()):
        console.print(kinds)
    for ex, segs in segmented(examples, tokenizer):
        # The title as text, never markup (a file name may hold brackets); one print per example, the token line
        # unhighlighted (a print costs more than the example's tokens do).
        title = console.render_str(f"{ex.source} row {ex.row} · {len(ex)} tokens · {ex.trained_tokens} trained",
                                   markup=False, highlight=styled)
        console.print(Rule(title, style="cyan"), _token_line(segs, styled), highlight=False)


def _token_line(segs: list[Segment], styled: bool) -> Any:
    from rich.text import Text

    if not styled:
        parts: list[str] = []
        trained = escaped = False
        kind = None
        for seg in segs:
            if kind and seg.kind != kind:
                parts.append(KIND_MARKS[kind][1])
            if escaped and not seg.escaped:
                parts.append("»")
            if trained and not seg.trained:
                parts.append("⟧")
            if seg.trained and not trained:
                parts.append("⟦")
            if seg.kind and seg.kind != kind:
                parts.append(KIND_MARKS[seg.kind][0])
            if seg.escaped and not escaped:
                parts.append("«")
            parts.append(_visible(seg.text))
            trained, escaped, kind = seg.trained, seg.escaped, seg.kind
        parts.append(("»" if escaped else "") + (KIND_MARKS[kind][1] if kind else "") + ("⟧" if trained else ""))
        return Text("".join(parts))
    pieces = []
    for k, seg in enumerate(segs):
        if seg.kind:
            style = KIND_STYLES[seg.kind][0 if seg.trained else 1]
        elif seg.trained:
            style = "bold black on green3" if k % 2 == 0 else "bold black on green1"
        else:
            style = "grey62 on grey19" if k % 2 == 0 else "grey70 on grey23"
        if seg.special:
            style += " underline"
        if seg.escaped:
            style += " italic magenta"
        pieces.append((_visible(seg.text), style))
    return _styled_text(pieces)


def _styled_text(pieces: list[tuple[str, str]]) -> Any:
    """One Text of styled pieces, its spans laid at once (a Text.append per token is most of a large file's view).
    Text removes control characters from what it is given; where the pieces hold some, they are appended one by
    one so that each span still covers its own piece."""
    from rich.control import strip_control_codes
    from rich.text import Span, Text

    whole = "".join(piece for piece, _ in pieces)
    if strip_control_codes(whole) != whole:
        text = Text()
        for piece, style in pieces:
            text.append(piece, style=style)
        return text
    spans, at = [], 0
    for piece, style in pieces:
        spans.append(Span(at, at + len(piece), style))
        at += len(piece)
    return Text(whole, spans=spans)


# The parts of an answer shown apart (Example.parts): their names, piped marks, and (trained, untrained) styles.
KIND_LABELS = {"reasoning": "reasoning", "tool_call": "tool call", "tool_result": "tool result"}
KIND_MARKS = {"reasoning": ("‹think›", "‹/think›"), "tool_call": ("‹call›", "‹/call›"),
              "tool_result": ("‹result›", "‹/result›")}
KIND_STYLES = {"reasoning": ("bold black on dark_sea_green2", "grey70 on grey27"),
               "tool_call": ("bold black on light_goldenrod2", "grey70 on grey27"),
               "tool_result": ("bold black on plum2", "plum2 on grey19")}


def render_json(examples: Iterable[Example]) -> Iterable[str]:
    for ex in examples:
        yield jsonsafe.dumps(ex.to_dict(), ensure_ascii=False)  # (one line each)


# Chinese text needs a font that has it: the usual ones of Linux, macOS and Windows, named before the generic family
# (a machine with none of them shows boxes; Debian's fonts-noto-cjk package provides the first).
CJK_FONTS = "'Noto Sans CJK SC','Source Han Sans SC','PingFang SC','Microsoft YaHei','WenQuanYi Micro Hei'"

TOKEN_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',""" + CJK_FONTS + """,sans-serif;margin:2rem;color:#222;background:#fafafa}
h1{font-size:1.4rem}.summary{margin-bottom:1.5rem}.summary td{padding:.1rem .8rem .1rem 0}
.ex{background:#fff;border:1px solid #ddd;border-radius:6px;margin:0 0 1.2rem;padding:.8rem 1rem}
.ex h2{font-size:.95rem;margin:0 0 .6rem;color:#555;font-weight:600}
.toks{font-family:ui-monospace,'SFMono-Regular',Menlo,Consolas,'Noto Sans Mono CJK SC',""" + CJK_FONTS + """,monospace;white-space:pre-wrap;word-break:break-word;line-height:1.9}
.toks span{border-radius:3px;padding:1px 0}.u{background:#eceff1;color:#78909c}.u.alt{background:#e1e6e9}
.t{background:#a5d6a7;color:#102a12}.t.alt{background:#81c784}.s{outline:1px solid #546e7a}
.t.r{background:#c8e6c9;color:#1b5e20;font-style:italic}.t.c{background:#ffe082;color:#4e3b00}
.u.x{background:#f3e5f5;color:#6a1b9a}.t.x{background:#ce93d8;color:#2a0a33}.u.r{background:#e8f5e9;color:#689f38}
.nl{color:#b0bec5}.e{color:#ad1457;font-style:italic;text-decoration:underline dotted}.legend span{padding:2px 6px;border-radius:3px;margin-right:.6rem}
"""


# Every HTML fragment below is a markupsafe.Markup template (the escaping Jinja2 uses): each value formatted into
# one, and each piece joined by Markup(...).join, is escaped unless it is Markup itself, so text from data files
# (a row's `<svg onload=…>`, a file name) can only ever show as text.
LEGEND = Markup("<p class='legend'><span class='t'>trained (label = token)</span><span class='u'>not trained (label -100)</span>"
                "<span class='u s'>special token</span><span class='u e'>special-token text kept as text</span>"
                "<span class='t r'>reasoning</span><span class='t c'>tool call</span>"
                "<span class='u x'>tool result</span></p>")
_NEWLINE = Markup("<span class='nl'>↵</span>\n")


def html_page(title: str, css: str, body: Sequence[Any]) -> str:
    """A self-contained page (inline CSS, no script, no network); `body`'s pieces are escaped unless Markup."""
    return str(Markup("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
                      "<style>{css}</style></head><body><h1>{title}</h1>{body}</body></html>").format(
        title=title, css=Markup(css), body=Markup("").join(body)))


def render_html(examples: Sequence[Example], tokenizer: Any, title: str = "sftlab · trained tokens",
                summary: dict[str, Any] | None = None) -> str:
    """Trained tokens green, the rest grey, token boundaries shaded; the summary's counts above."""
    rows = Markup("").join(Markup("<tr><td>{}</td><td>{}</td></tr>").format(k, v) for k, v in (summary or {}).items())
    return html_page(title, TOKEN_CSS, [LEGEND, Markup("<table class='summary'>{}</table>").format(rows) if rows else "",
                                        Markup(examples_html(examples, tokenizer))])


_KIND_CLASS = {"reasoning": "r", "tool_call": "c", "tool_result": "x"}


def examples_html(examples: Sequence[Example], tokenizer: Any) -> str:
    """The token view of examples as an HTML fragment (also embedded in the data-check report)."""
    parts = []
    for ex, segs in segmented(examples, tokenizer):
        parts.append(Markup("<div class='ex'><h2>{} · row {} · {} tokens · {} trained</h2><div class='toks'>").format(
            ex.source, ex.row, len(ex), ex.trained_tokens))
        for k, seg in enumerate(segs):
            cls = (("t" if seg.trained else "u") + (" alt" if k % 2 else "") + (" s" if seg.special else "")
                   + (" e" if seg.escaped else "") + (f" {_KIND_CLASS[seg.kind]}" if seg.kind else ""))
            tip = (f"ids {seg.ids}" + (" · trained" if seg.trained else " · -100")
                   + (f" · {KIND_LABELS[seg.kind]}" if seg.kind else ""))
            text = _NEWLINE.join(seg.text.split("\n"))
            parts.append(Markup("<span class='{}' title='{}'>{}</span>").format(cls, tip, text))
        parts.append(Markup("</div></div>"))
    return str(Markup("").join(parts))

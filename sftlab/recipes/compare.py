"""What changes, token by token, when a recipe of another tool is trained with sftlab: the first conversations encoded
the tool's way (source_templates.encode_as_source) and sftlab's way (the Encoder with the run's data settings), and
the differences that matter, named by kind (a default system prompt, which end-of-turn tokens are trained, turn
markers, tool turns, reasoning, tokens at the seams of separately tokenized pieces)."""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from difflib import SequenceMatcher
from typing import Any, Sequence

from sftlab.config.data import DataSettings
from sftlab.data.conversation import Conversation
from sftlab.data.encode import Encoder
from sftlab.data.example import IGNORE_INDEX
from sftlab.data.templates import ChatTemplate, template_for
from sftlab.data.tokenize import special_token_ids
from sftlab.errors import SftlabError, shown
from sftlab.recipes import source_templates as st

KINDS = ("system_prompt", "end_of_turn_trained", "eos_trained", "newline_after_end_trained", "markers", "tool_turns",
         "reasoning", "seam_tokens", "other")
# Long enough for any conversation compared: truncation is reported apart, never compared.
_NO_TRUNCATION = 10**9
_THINK = ("<think>", "</think>")


@dataclass
class Difference:
    kind: str
    conversation: int  # 0-based index in the conversations given
    source_text: str  # the differing span on each side, shown short on one line
    sftlab_text: str
    source_trained: int  # trained tokens in the span, each side
    sftlab_trained: int
    count: int = 1  # the same difference found this many times in the conversation
    note: str = ""  # a sentence, where the span alone does not say it


@dataclass
class Counts:
    """One conversation's counts, both sides."""

    index: int
    source_tokens: int = 0
    sftlab_tokens: int = 0
    source_trained: int = 0
    sftlab_trained: int = 0
    identical: bool = False
    not_compared: str = ""


@dataclass
class Comparison:
    tool: str
    template: str
    sftlab_template: str
    conversations: list[Counts] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    not_compared: str = ""

    def lines(self) -> list[str]:
        """The comparison for the console: short plain sentences."""
        who = st.TOOL_NAMES.get(self.tool, self.tool)
        head = f"{who} template '{self.template}' against sftlab ({self.sftlab_template})"
        if self.not_compared:
            return [f"{head}: not compared: {self.not_compared}"]
        done = [c for c in self.conversations if not c.not_compared]
        same = sum(c.identical for c in done)
        if not done:
            out = [f"{head}: none of the {len(self.conversations)} conversations could be compared"]
        elif same == len(done):
            out = [f"{head}: identical on {same}/{len(done)} conversations"]
        else:
            out = [f"{head}: different on {len(done) - same}/{len(done)} conversations"]
        for c in self.conversations:
            if c.not_compared:
                out.append(f"conversation {c.index + 1}: not compared: {c.not_compared}")
                continue
            if c.identical:
                continue
            out += [f"conversation {c.index + 1}: {_sentence(d, who)}"
                    for d in self.differences if d.conversation == c.index]
            out.append(f"conversation {c.index + 1}: trained tokens: {who} {c.source_trained} of {c.source_tokens}, "
                       f"sftlab {c.sftlab_trained} of {c.sftlab_tokens}")
        out.append(f"sftlab keeps {self.sftlab_template} and its masks (docs/data.md, \"The masking contract\")")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "template": self.template, "sftlab_template": self.sftlab_template,
                "not_compared": self.not_compared or None,
                "conversations": [asdict(c) for c in self.conversations],
                "differences": [asdict(d) for d in self.differences]}


def _sentence(d: Difference, who: str) -> str:
    count = f" ({d.count}×)" if d.count > 1 else ""
    lead = f"{d.kind}{count}: "
    if d.note:
        return lead + d.note
    if d.kind == "seam_tokens":
        return lead + f"the same text tokenized as {d.source_text} by {who} and {d.sftlab_text} by sftlab"
    if d.source_text == d.sftlab_text:
        trained, not_trained = (who, "sftlab") if d.source_trained > d.sftlab_trained else ("sftlab", who)
        return lead + f"'{d.source_text}' is trained by {trained}, not by {not_trained}"
    src = f"'{d.source_text}'" if d.source_text else "nothing"
    ours = f"'{d.sftlab_text}'" if d.sftlab_text else "nothing"
    counts = (f" (trained tokens: {who} {d.source_trained}, sftlab {d.sftlab_trained})"
              if d.source_trained or d.sftlab_trained else "")
    return lead + f"{who} writes {src} where sftlab writes {ours}{counts}"


def compare(tool: str, template_name: str, conversations: Sequence[Conversation], tokenizer: Any,
            settings: DataSettings | None, *, n: int = 3, source_options: dict[str, Any] | None = None) -> Comparison:
    """The first `n` conversations encoded as `tool` would with its template `template_name` (and its options,
    `source_options`: encode_as_source's keywords) and as sftlab does with `settings`; what is not reproduced is
    said in `not_compared`, never raised."""
    settings = settings or DataSettings()
    chosen = list(conversations)[:n]
    result = Comparison(tool, template_name, _sftlab_template_name(settings))
    options = dict(source_options or {})
    reason = _unsupported(tool, template_name, options)
    if reason:
        result.not_compared = reason
        return result
    try:
        chat = template_for(settings.template, tokenizer, chosen, settings.default_system, settings.template_kwargs)
        encoder = Encoder(tokenizer, chat, max_length=_NO_TRUNCATION, train_on=settings.train_on,
                          escape=settings.escape_special_tokens, train_reasoning=settings.train_reasoning)
    except SftlabError as e:
        result.not_compared = f"sftlab cannot encode these conversations: {e}"
        return result
    defaults = (_source_default_system(tool, template_name, tokenizer), _sftlab_default_system(chat))
    for index, conv in enumerate(chosen):
        _compare_one(result, index, conv, tokenizer, encoder, options, defaults, settings.max_length)
    return result


def _sftlab_template_name(settings: DataSettings) -> str:
    return "the model's own template" if settings.template is None else f"template '{settings.template}'"


def _unsupported(tool: str, template_name: str, options: dict[str, Any]) -> str:
    if tool not in st.TOOLS:
        return f"unknown tool '{tool}' (known: {', '.join(st.TOOLS)})"
    if template_name not in st.template_names(tool):
        return (f"{st.TOOL_NAMES[tool]}'s template '{template_name}' is not reproduced here (reproduced: "
                f"{', '.join(st.template_names(tool))})")
    known = set(inspect.signature(st.encode_as_source).parameters)
    known -= {"tool", "template_name", "conversation", "tokenizer"}
    unknown = sorted(set(options) - known)
    if unknown:
        return f"{', '.join(unknown)}: not an option this comparison knows"
    return ""


def _source_default_system(tool: str, template_name: str, tokenizer: Any) -> str | None:
    if tool == "llamafactory":
        return st.LLAMAFACTORY[template_name].default_system or None
    source = st.AXOLOTL.get(template_name) if tool == "axolotl" else None
    source = source or getattr(tokenizer, "chat_template", None)
    if not isinstance(source, str):
        return None
    return ChatTemplate(source=source, name=template_name, special_tokens={}).default_system


def _sftlab_default_system(chat: ChatTemplate | None) -> str | None:
    if chat is None:
        return None
    return chat.system_override if chat.system_override is not None else chat.default_system


def _compare_one(result: Comparison, index: int, conv: Conversation, tokenizer: Any, encoder: Encoder,
                 options: dict[str, Any], defaults: tuple[str | None, str | None], max_length: int) -> None:
    row = Counts(index)
    result.conversations.append(row)
    try:
        src_ids, src_labels = st.encode_as_source(result.tool, result.template, conv, tokenizer, **options)
    except st.SourceSkips as e:
        result.differences.append(Difference("other", index, "", "", 0, 0, note=str(e)))
        return
    except SftlabError as e:
        row.not_compared = str(e)
        return
    encoded = encoder.encode([conv], num_proc=1)
    if encoded.dropped or not encoded.examples:
        reason = encoded.dropped[0].reason if encoded.dropped else "no example"
        result.differences.append(Difference("other", index, "", "", 0, 0, note=f"sftlab drops it: {reason}"))
        return
    example = encoded.examples[-1]
    source, ours = _Side(tokenizer, src_ids, src_labels), _Side(tokenizer, example.input_ids, example.labels)
    row.source_tokens, row.sftlab_tokens = len(src_ids), len(example.input_ids)
    row.source_trained, row.sftlab_trained = source.trained_count, ours.trained_count
    found = _differences(index, conv, source, ours, defaults, st.TOOL_NAMES[result.tool])
    if len(encoded.examples) > 1:
        found.append(Difference("other", index, "", "", 0, 0, note=(
            f"sftlab splits it into {len(encoded.examples)} examples, one per answer (its template rewrites earlier "
            "turns); compared with the last")))
    if max(len(src_ids), len(example.input_ids)) > max_length:
        found.append(Difference("other", index, "", "", 0, 0, note=(
            f"longer than max_length ({max_length} tokens): compared whole, truncation is not compared")))
    result.differences += found
    row.identical = not found


class _Side:
    """One side's tokens as text: each token's piece, where it starts in the text, whether it is trained."""

    def __init__(self, tokenizer: Any, ids: Sequence[int], labels: Sequence[int]):
        self.ids = [int(i) for i in ids]
        self.trained = [int(x) != IGNORE_INDEX for x in labels]
        self.pieces = _pieces(tokenizer, self.ids)
        self.starts = [0]
        for p in self.pieces:
            self.starts.append(self.starts[-1] + len(p))
        self.text = "".join(self.pieces)
        self.special = special_token_ids(tokenizer)
        self.eos = tokenizer.eos_token_id
        self.eos_text = tokenizer.eos_token or ""

    @property
    def trained_count(self) -> int:
        return sum(self.trained)

    def span(self, i1: int, i2: int) -> tuple[int, int, str]:
        """The characters of tokens i1..i2-1: (start, end, text)."""
        a, b = self.starts[i1], self.starts[i2]
        return a, b, self.text[a:b]


def _pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each token's text, as the text grows when it is added (a character spread over several byte tokens belongs to
    the token that completes it), decoded with a few tokens of context so a SentencePiece word start reads right."""
    backend = tokenizer.backend_tokenizer
    pieces: list[str] = []
    done = 0  # tokens whose text is out
    for k in range(len(ids)):
        ctx = max(0, done - 4)
        before = backend.decode(ids[ctx:done], skip_special_tokens=False)
        after = backend.decode(ids[ctx : k + 1], skip_special_tokens=False)
        if after.endswith("\ufffd") and k + 1 < len(ids):
            pieces.append("")  # an incomplete character: its text comes with the token that completes it
            continue
        alone = after[len(before):] if after.startswith(before) else backend.decode([ids[k]], skip_special_tokens=False)
        pieces.append(alone)
        done = k + 1
    return pieces


# --- finding and naming the differences ---------------------------------------------------------------------------

def _differences(index: int, conv: Conversation, source: _Side, ours: _Side,
                 defaults: tuple[str | None, str | None], who: str) -> list[Difference]:
    """The two token sequences aligned by their texts: runs of the same tokens compared by what they train, the rest
    by text (the same text cut differently is a seam; other text is grouped by where it lies in the conversation)."""
    ops = SequenceMatcher(None, source.pieces, ours.pieces, autojunk=False).get_opcodes()
    places = _Places(conv, source.text), _Places(conv, ours.text)
    found: list[Difference] = []
    groups: dict[tuple[str, int], list[tuple[int, int, int, int]]] = {}
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            found += _same_tokens(index, source, ours, i1, i2, j1, places[0])
        elif source.span(i1, i2)[2] == ours.span(j1, j2)[2]:
            found.append(Difference("seam_tokens", index, _token_list(source, i1, i2), _token_list(ours, j1, j2),
                                    sum(source.trained[i1:i2]), sum(ours.trained[j1:j2])))
        else:
            a, b, _ = ours.span(j1, j2)
            groups.setdefault(places[1].slot(a, b), []).append((i1, i2, j1, j2))
    for slot, spans in groups.items():
        i1, i2, j1, j2 = spans[0][0], spans[-1][1], spans[0][2], spans[-1][3]
        src, mine = source.span(i1, i2)[2], ours.span(j1, j2)[2]
        kind = _text_kind(conv, slot, src, mine, source, defaults)
        if _newline_after_end(source, i1, i2, j1, j2) or _newline_after_end(ours, j1, j2, i1, i2):
            kind = "newline_after_end_trained"
        if kind == "system_prompt":  # the prompts themselves say it better than the characters that differ
            src, mine = defaults[0] or "", defaults[1] or ""
        found.append(Difference(kind, index, shown(src), shown(mine), sum(source.trained[i1:i2]),
                                sum(ours.trained[j1:j2])))
    return _merged(_gathered(found, who))


class _Places:
    """Where each message's text lies in a side's text (found in order; a text a template changes is not found)."""

    def __init__(self, conv: Conversation, text: str):
        self.ranges: list[tuple[int, int, int, str]] = []  # (start, end, message, "content" | "reasoning")
        self.roles = [m.role for m in conv.messages]
        at = 0
        for k, m in enumerate(conv.messages):
            for what, value in (("reasoning", m.reasoning), ("content", m.content)):
                found = text.find(value, at) if value else -1
                if found >= 0:
                    self.ranges.append((found, found + len(value), k, what))
                    at = found + len(value)

    def slot(self, a: int, b: int) -> tuple[str, int]:
        """("content" or "reasoning", k) for a span in that text of message k, else ("before", k): among the
        markers in front of message k's text (k one past the last message: after every text)."""
        for start, end, k, what in self.ranges:
            if (a < end and b > start) or (a == b and start < a < end):
                return what, k
            if b <= start:
                return "before", k
        return "before", (self.ranges[-1][2] + 1 if self.ranges else 0)

    def what(self, a: int) -> tuple[str, int] | None:
        return next(((what, k) for start, end, k, what in self.ranges if start <= a < end), None)

    def role(self, k: int) -> str:
        return self.roles[k]


def _is_tool(conv: Conversation, k: int) -> bool:
    m = conv.messages[k] if 0 <= k < len(conv.messages) else None
    return m is not None and (m.role == "tool" or bool(m.tool_calls))


def _text_kind(conv: Conversation, slot: tuple[str, int], src: str, ours: str, source: _Side,
               defaults: tuple[str | None, str | None]) -> str:
    where, k = slot
    has_system = bool(conv.messages) and conv.messages[0].role == "system"
    first = 1 if has_system else 0  # the first message after the system prompt
    if where == "reasoning" or any(t in src or t in ours for t in _THINK):
        return "reasoning"
    if (where == "before" and k <= first) or (has_system and k == 0):
        if not has_system and defaults[0] != defaults[1] and any(d and (d in src or d in ours) for d in defaults):
            return "system_prompt"
        if conv.tools:
            return "tool_turns"
    if _is_tool(conv, k) or (where == "before" and _is_tool(conv, k - 1)):
        return "tool_turns"
    if source.eos_text and {src, ours} == {"", source.eos_text}:
        return "eos_trained"
    return "markers" if where == "before" else "other"


def _newline_after_end(side: _Side, i1: int, i2: int, o1: int, o2: int) -> bool:
    """Whitespace written and trained after an end-of-turn token by this side alone (LLaMA-Factory's alpaca answers
    end in EOS and "\\n\\n")."""
    return (o1 == o2 and i2 > i1 > 0 and side.ids[i1 - 1] in side.special and not side.span(i1, i2)[2].strip()
            and any(side.trained[i1:i2]))


def _same_tokens(index: int, source: _Side, ours: _Side, i1: int, i2: int, j1: int,
                 places: _Places) -> list[Difference]:
    """Tokens of the same text: the same text as other ids, or trained on one side only (runs of one kind)."""
    found: list[Difference] = []
    run: list[int] = []
    for k in range(i1, i2):
        t = j1 + k - i1
        if source.ids[k] != ours.ids[t]:
            found.append(Difference("seam_tokens", index, _token_list(source, k, k + 1), _token_list(ours, t, t + 1),
                                    int(source.trained[k]), int(ours.trained[t])))
        if source.trained[k] == ours.trained[t]:
            run = []
            continue
        kind = _label_kind(source, ours, k, t, places)
        if run and found and found[-1].kind == kind and run[-1] == k - 1:
            run.append(k)
        else:
            run = [k]
            found.append(Difference(kind, index, "", "", 0, 0))
        text = shown(source.span(run[0], run[-1] + 1)[2])
        found[-1] = Difference(kind, index, text, text, sum(source.trained[r] for r in run),
                               sum(ours.trained[r + t - k] for r in run))
    return found


def _label_kind(source: _Side, ours: _Side, k: int, t: int, places: _Places) -> str:
    """What a token trained on one side only is: the end of an answer (a special token right after trained text,
    the whitespace after it), reasoning, or other text of an answer or of the prompt."""
    def answer_before(n: int) -> bool:  # the token n back is answer text: sftlab trains it, or it is an answer's
        if k - n < 0 or t - n < 0:
            return False
        where = places.what(source.starts[k - n])
        return ours.trained[t - n] or (where is not None and places.role(where[1]) == "assistant")

    token = source.ids[k]
    if token in source.special and answer_before(1):
        return "eos_trained" if token == source.eos else "end_of_turn_trained"
    if not source.pieces[k].strip() and k > 0 and source.ids[k - 1] in source.special and answer_before(2):
        return "newline_after_end_trained"
    where = places.what(source.starts[k])
    if (where is not None and where[0] == "reasoning") or any(x in source.pieces[k] for x in _THINK):
        return "reasoning"
    return _ANSWER if where is not None and places.role(where[1]) == "assistant" else _PROMPT


# Kinds of "other" text trained on one side only, gathered into one difference per conversation (_gathered).
_ANSWER, _PROMPT = "answer text", "prompt text"


def _gathered(found: list[Difference], who: str) -> list[Difference]:
    """Prompt and answer text trained on one side only, one difference per kind and side (the spans are many where
    a tool trains the whole prompt)."""
    out = [d for d in found if d.kind not in (_ANSWER, _PROMPT)]
    for kind in (_PROMPT, _ANSWER):
        for ours_trains in (False, True):
            spans = [d for d in found if d.kind == kind and (d.sftlab_trained > d.source_trained) == ours_trains]
            if not spans:
                continue
            tokens = sum(max(d.source_trained, d.sftlab_trained) for d in spans)
            trained, other = ("sftlab", who) if ours_trains else (who, "sftlab")
            what = ("the prompt (system and user turns, tool results, turn markers)" if kind == _PROMPT
                    else "answer text")
            out.append(Difference("other", spans[0].conversation, spans[0].source_text, spans[0].sftlab_text,
                                  sum(d.source_trained for d in spans), sum(d.sftlab_trained for d in spans),
                                  note=f"{tokens} token{'s' * (tokens != 1)} of {what} {'are' if tokens != 1 else 'is'} "
                                       f"trained by {trained}, not by {other} (the first: '{spans[0].source_text}')"))
    return out


def _token_list(side: _Side, i1: int, i2: int) -> str:
    return shown(" ".join(repr(p) for p in side.pieces[i1:i2]))


def _merged(found: list[Difference]) -> list[Difference]:
    """The same difference (kind and texts) found several times in a conversation, counted once."""
    out: dict[tuple[str, str, str], Difference] = {}
    for d in found:
        key = (d.kind, d.source_text, d.sftlab_text)
        if key in out:
            out[key].count += 1
            out[key].source_trained += d.source_trained
            out[key].sftlab_trained += d.sftlab_trained
        else:
            out[key] = d
    return sorted(out.values(), key=lambda d: KINDS.index(d.kind))


def imported_comparison(imported: Any, n: int = 3) -> list[str]:
    """`sftlab import`'s comparison: the recipe's own template (its tool's rendering and masks) against the config's
    on the first `n` conversations of its first dataset, as console lines; where the model's tokenizer or the data
    cannot be read here, one line saying so (the import itself stands)."""
    from pydantic import ValidationError

    from sftlab.config.train import DatasetSpec, TrainConfig
    from sftlab.data.pipeline import Source, load_sources
    from sftlab.models import load_tokenizer

    if imported.source_template is None or n <= 0:
        return []
    tool, name = imported.source_template
    head = f"template: {st.TOOL_NAMES[tool]}'s {name!r} against sftlab's"
    try:
        config = TrainConfig(**imported.config)
        tokenizer = load_tokenizer(config.model)
        conversations, _ = load_sources([Source.of(DatasetSpec(**imported.config["datasets"][0]))])
    except (SftlabError, ValidationError, OSError, KeyError, IndexError, ValueError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        return [f"{head}: not compared (the model's tokenizer or the first dataset cannot be read here: {shown(why, 200)}; "
                "give --model a local model to compare)"]
    return [f"{head}:", *(f"  {line}" for line in compare(tool, name, conversations, tokenizer, config.data, n=n).lines())]

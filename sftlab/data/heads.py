"""Rows for task heads: labelled rows (classification) and preference pairs (reward models) → token ids.

A classification row is `{text, label}` or a conversation plus `label` (`messages`, `conversations`, or
`instruction`/`input`, or `prompt`): a conversation is rendered with the chat template, so the head reads the text
a chat with the model would show it (ending in a user turn: with the generation prompt, where the answer would
start). A preference row is `{prompt or messages, chosen, rejected}` — the common preference format (TRL's): the
prompt a string (one user turn) or a list of messages, each answer a string (one assistant turn) or a list of
messages; or only `chosen` and `rejected`, each a whole conversation. Both answers are rendered after the same
prompt.

Special-token text in the data stays text (the escaping contract). A row longer than max_length is dropped and
counted (the head reads the last token: a cut text would be scored on text it never saw whole), never cut.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from sftlab.data.conversation import Message
from sftlab.data.formats import convert_row, json_type
from sftlab.data.load import check_row, read_rows
from sftlab.data.tokenize import TokenizerView, tokenizer_adds_bos
from sftlab.errors import RowError, SftlabError, shown

TASKS = ("classification", "reward")
# The keys that hold a labelled row's text, in the order they are looked for.
_TEXT_KEYS = ("text", "messages", "conversations", "instruction", "prompt")


@dataclass
class LabelledRow:
    """A row to classify: its messages (None for plain text), its text, and its label as written."""

    source: str
    row: int
    label: Any
    text: str | None = None
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None


@dataclass
class PairRow:
    """A preference pair: the prompt's messages and the two answers' messages after it."""

    source: str
    row: int
    prompt: list[dict[str, Any]]
    chosen: list[dict[str, Any]]
    rejected: list[dict[str, Any]]


@dataclass
class HeadData:
    """Encoded rows of one task and what happened to every row read."""

    task: str
    examples: list[dict[str, Any]] = field(default_factory=list)  # the Trainer's rows
    rows: int = 0
    dropped: list[dict[str, Any]] = field(default_factory=list)  # {source, row, reason}
    tokens: int = 0
    labels: Counter = field(default_factory=Counter)  # classification: examples per label name

    def report(self) -> dict[str, Any]:
        reasons = Counter(d["reason"] for d in self.dropped)
        out: dict[str, Any] = {"task": self.task, "rows_read": self.rows, "examples": len(self.examples),
                               "dropped": len(self.dropped), "drop_reasons": dict(reasons),
                               "dropped_rows": self.dropped[:100], "tokens": self.tokens}
        if self.task == "classification":
            out["labels"] = dict(sorted(self.labels.items()))
        return out


def label_name(value: Any, where: str = "label") -> str:
    """A label as a head names it: a string, a whole number or a boolean, written as text (JSON for booleans)."""
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        if value != value.strip():
            # ' 1' next to 1 would silently be two labels.
            given = shown(value)
            raise RowError(f"label '{given}' has spaces around it; write it without them ('{given}' and "
                           f"'{shown(value.strip())}' would be two labels)", field=where)
        return value
    if isinstance(value, str):
        raise RowError("is empty", field=where)
    if isinstance(value, float):
        raise RowError(f"must be a string, a whole number or a boolean for a classification head, got a number "
                       f"({value!r})", field=where)
    raise RowError(f"must be a string, a whole number or a boolean for a classification head, got {json_type(value)} "
                   "(structured JSON labels are scored on a generative model's answers: docs/heads.md)", field=where)


def row_label(row: LabelledRow) -> str:
    """label_name of a read row; its error names the row's file and row."""
    try:
        return label_name(row.label)
    except RowError as e:
        raise e.located(row.source, row.row) from None


def _turns(value: Any, where: str, role: str) -> list[dict[str, Any]]:
    """A prompt or an answer: a string is one message of `role`, a list is messages as the `messages` format has
    them (errors name the field as the row has it: `chosen[1].content`)."""
    if isinstance(value, str):
        if not value.strip():
            raise RowError("is empty", field=where)
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value:
        try:
            conv = convert_row({"messages": value}, "messages")
        except RowError as e:
            raise RowError(e.reason, field=(e.field or "messages").replace("messages", where, 1)) from None
        return [_message(m) for m in conv.messages]
    if isinstance(value, list):
        raise RowError("is an empty list", field=where)
    raise RowError(f"must be a string or a list of messages, got {json_type(value)}", field=where)


def _message(m: Message) -> dict[str, Any]:
    return m.to_template_dict()


def labelled_row(row: Any, source: str, number: int) -> LabelledRow:
    """One classification row, or a RowError naming file, row and field."""
    try:
        if not isinstance(row, dict):
            raise RowError(f"must be an object with a text and a 'label', got {json_type(row)}")
        check_row(row)
        if "label" not in row or row["label"] is None:
            raise RowError("missing field: a classification row needs a label", field="label")
        if not isinstance(row["label"], (dict, list)):  # (structured labels: a generative model is scored on them)
            label_name(row["label"])
        out = LabelledRow(source, number, row["label"])
        key = next((k for k in _TEXT_KEYS if k in row and row[k] is not None), None)
        if key is None:
            raise RowError("a classification row needs its text: one of " + ", ".join(f"'{k}'" for k in _TEXT_KEYS))
        if key == "text":
            if not isinstance(row["text"], str):
                raise RowError(f"must be a string, got {json_type(row['text'])}", field="text")
            if not row["text"].strip():
                raise RowError("is empty", field="text")
            out.text = row["text"]
        elif key in ("messages", "conversations"):
            conv = convert_row(row, "messages" if key == "messages" else "sharegpt")
            out.messages, out.tools = [_message(m) for m in conv.messages], conv.tools
        elif key == "instruction":
            conv = convert_row({**row, "output": ""}, "alpaca")
            out.messages, out.tools = [_message(m) for m in conv.messages[:-1]], conv.tools
        else:
            out.messages = _turns(row["prompt"], "prompt", "user")
        return out
    except RowError as e:
        raise e.located(source, number) from None


def pair_row(row: Any, source: str, number: int) -> PairRow:
    """One preference pair, or a RowError naming file, row and field."""
    try:
        if not isinstance(row, dict):
            raise RowError(f"must be an object with 'chosen' and 'rejected', got {json_type(row)}")
        check_row(row)
        for key in ("chosen", "rejected"):
            if row.get(key) is None:
                raise RowError("missing field: a preference row needs 'chosen' and 'rejected'", field=key)
        key = "prompt" if row.get("prompt") is not None else "messages" if row.get("messages") is not None else None
        if key == "messages" and not isinstance(row[key], list):
            raise RowError(f"must be a list of messages, got {json_type(row[key])}", field=key)
        prompt = _turns(row[key], key, "user") if key else []
        chosen, rejected = _turns(row["chosen"], "chosen", "assistant"), _turns(row["rejected"], "rejected", "assistant")
        if chosen == rejected:
            raise RowError("is the same as 'rejected': a pair must prefer one answer over another", field="chosen")
        return PairRow(source, number, prompt, chosen, rejected)
    except RowError as e:
        raise e.located(source, number) from None


def read_task_rows(path: str | Path, task: str) -> tuple[list[Any], int]:
    """Every row of one file as LabelledRow or PairRow (the first bad row is one sentence), and the rows read."""
    source = str(path)
    rows, rejects = read_rows(path)
    if rejects:
        raise SftlabError(f"{source}: {rejects[0].reason}")
    parse = labelled_row if task == "classification" else pair_row
    return [parse(r, source, k) for k, r in enumerate(rows, start=1)], len(rows)


class HeadEncoder:
    """Token ids of task rows, rendered as a chat with the model would render them."""

    def __init__(self, tokenizer: Any, chat: Any, escape: bool = True, max_length: int = 1024):
        self.tokens = TokenizerView(tokenizer, escape=escape)
        self.chat = chat
        self.max_length = max_length
        self.bos = [tokenizer.bos_token_id] if tokenizer_adds_bos(tokenizer) else []

    def text_ids(self, text: str) -> list[int]:
        """A plain text: its own tokens (special-token text stays text), behind the tokenizer's BOS if it adds one."""
        if self.tokens.escape:
            return self.bos + self.tokens.encode_marked(text, [])[0].tolist()
        return self.bos + self.tokens.backend.encode(text, add_special_tokens=False).ids

    def conversation_ids(self, messages: Sequence[dict[str, Any]], tools: Any = None) -> list[int]:
        if self.chat is None:
            raise SftlabError("conversations for a task head are rendered with a chat template, and this model's "
                              "tokenizer has none: set `template:` (a built-in name or a .jinja file)")
        prompt = messages[-1]["role"] != "assistant"
        return self.tokens.encode_rendered(
            lambda value: self.chat.render(value[0], value[1], add_generation_prompt=prompt), (list(messages), tools))

    def labelled(self, row: LabelledRow) -> list[int]:
        return self.text_ids(row.text) if row.text is not None else self.conversation_ids(row.messages, row.tools)

    def too_long(self, ids: list[int]) -> str | None:
        if len(ids) > self.max_length:
            return f"longer than max_length={self.max_length} ({len(ids)} tokens)"
        return None


def encode_classification(rows: Sequence[LabelledRow], encoder: HeadEncoder, label_ids: dict[str, int],
                          rows_read: int, unseen: str = "raise") -> HeadData:
    """Classification rows → {input_ids, labels}. A label outside `label_ids` is one sentence (unseen='raise')."""
    data = HeadData("classification", rows=rows_read)
    for r in rows:
        name = row_label(r)
        if name not in label_ids:
            if unseen == "raise":
                known = sorted(label_ids)
                listed = ", ".join(shown(k) for k in known[:20]) + (f", … {len(known) - 20} more" if len(known) > 20 else "")
                raise RowError(f"label '{shown(name)}' is not one the model was trained on ({listed})",
                               r.source, r.row, "label")
        ids = encoder.labelled(r)
        problem = encoder.too_long(ids)
        if problem:
            data.dropped.append({"source": r.source, "row": r.row, "reason": problem})
            continue
        data.examples.append({"input_ids": ids, "labels": label_ids[name], "row": r.row, "source": r.source})
        data.labels[name] += 1
        data.tokens += len(ids)
    return data


def encode_pairs(rows: Sequence[PairRow], encoder: HeadEncoder, rows_read: int) -> HeadData:
    """Preference pairs → {chosen_ids, rejected_ids}; a pair where either side is too long is dropped whole."""
    data = HeadData("reward", rows=rows_read)
    for r in rows:
        chosen = encoder.conversation_ids(r.prompt + r.chosen)
        rejected = encoder.conversation_ids(r.prompt + r.rejected)
        problem = encoder.too_long(chosen) or encoder.too_long(rejected)
        if problem:
            data.dropped.append({"source": r.source, "row": r.row, "reason": problem})
            continue
        data.examples.append({"chosen_ids": chosen, "rejected_ids": rejected, "row": r.row, "source": r.source})
        data.tokens += len(chosen) + len(rejected)
    return data


def label_names(rows: Sequence[LabelledRow]) -> list[str]:
    """The label names of the data, sorted (numerically where every name is a whole number)."""
    names = {row_label(r) for r in rows}
    # ASCII digits only: int() refuses '²' (which str.isdigit() accepts) and '--1'; such names sort as text.
    if all(_WHOLE_NUMBER.fullmatch(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,4000}")

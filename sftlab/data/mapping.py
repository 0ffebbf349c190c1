"""A data file's own names → one of sftlab's five formats: which columns hold the instruction, the output, the
messages …, which keys of a turn hold its role and content, and which role values mean user, assistant, system, tool
or a function call (the shapes LLaMA-Factory's dataset_info.json `columns`/`tags` and axolotl's `field_messages` /
`message_property_mappings` / `roles` describe).

A row is renamed into the format's own names before its converter reads it (formats.py, unchanged), and a row
error's field is renamed back, so a sentence names the field as the file spells it (docs/data.md, "Your own column
names")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from sftlab.config.data import FORMAT_FIELDS, MESSAGE_KEYS
from sftlab.data import fields
from sftlab.errors import RowError, SftlabError, echo, shown

FIELDS = FORMAT_FIELDS  # (the fields a format reads, by the name `columns` maps from)

# The formats whose rows hold a list of turns: the list's field, each turn's role and content keys, and the value
# each sftlab role is written as there.
_TURNS: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "sharegpt": ("conversations", {"role": "from", "content": "value"},
                 {"user": "human", "assistant": "gpt", "system": "system", "tool": "observation",
                  "function_call": "function_call"}),
    "messages": ("messages", {"role": "role", "content": "content"},
                 {"user": "user", "assistant": "assistant", "system": "system", "tool": "tool"}),
}


@dataclass(frozen=True)
class RowMapping:
    """`columns`: sftlab field → the file's column; `message_keys`: role/content → the turn's key; `roles`: the
    file's role value → sftlab role. Empty mappings leave a row as it is."""

    columns: tuple[tuple[str, str], ...] = ()
    message_keys: tuple[tuple[str, str], ...] = ()
    roles: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.columns or self.message_keys or self.roles)

    def to_dict(self) -> dict[str, Any]:
        """As the config spells it (for the encode cache's key and reports)."""
        roles: dict[str, list[str]] = {}
        for value, role in self.roles:
            roles.setdefault(role, []).append(value)
        return {"columns": dict(self.columns), "message_keys": dict(self.message_keys), "roles": roles}

    def check(self, fmt: str, source: str) -> None:
        """The mapping fits the file's format (given or detected), or one sentence naming the file and the key."""
        for name, _ in self.columns:
            if name not in FIELDS[fmt]:
                raise SftlabError(f"{source}: columns: format '{fmt}' has no field '{shown(name)}' "
                                  f"(its fields: {', '.join(FIELDS[fmt])})")
        if (self.message_keys or self.roles) and fmt not in _TURNS:
            key = "message_keys" if self.message_keys else "roles"
            raise SftlabError(f"{source}: {key} are for rows of turns (format sharegpt or messages), "
                              f"not format '{fmt}'")
        for value, role in self.roles:
            if role not in _TURNS[fmt][2]:  # (roles outside a format of turns were refused above)
                raise SftlabError(f"{source}: roles: format '{fmt}' has no role '{role}' (a function call is an "
                                  "assistant turn's tool_calls in format messages; use format sharegpt for turns "
                                  "whose content is the call)")

    def renamed_keys(self, keys: list[str]) -> list[str]:
        """A row's keys as the format names them (for detecting the format from a first row)."""
        mapped = {col: name for name, col in self.columns}
        names = {name for name, _ in self.columns}
        return [mapped[k] if k in mapped else k for k in keys if k in mapped or k not in names]

    def apply(self, row: dict[str, Any], fmt: str) -> dict[str, Any]:
        """The row in the format's own names (the file's row is not changed)."""
        if not self:
            return row
        renamed = {name for name, _ in self.columns} | {col for _, col in self.columns}
        out = {k: v for k, v in row.items() if k not in renamed}
        out.update((name, row[col]) for name, col in self.columns if col in row)
        if fmt in _TURNS and (self.message_keys or self.roles):
            field = _TURNS[fmt][0]
            if out.get(field) is not None:
                out[field] = self._turns(fields.maybe_json(out[field], self.field(field, fmt)), fmt)
        return out

    def _turns(self, turns: Any, fmt: str) -> Any:
        if not isinstance(turns, list):
            return turns  # (the converter says what it must be)
        _, own, values = _TURNS[fmt]
        keys = {**dict(MESSAGE_KEYS_DEFAULT[fmt]), **dict(self.message_keys)}
        roles = dict(self.roles)
        out = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict):
                out.append(turn)
                continue
            new = {k: v for k, v in turn.items() if k not in (keys["role"], keys["content"], *own.values())}
            for key in MESSAGE_KEYS:
                if keys[key] in turn:
                    new[own[key]] = turn[keys[key]]
            value = turn.get(keys["role"])
            if roles and isinstance(value, str):
                if value not in roles:
                    listed = ", ".join(f"'{shown(v, 30)}'" for v in list(roles)[:12])
                    raise RowError(f"'{shown(value)}' is not one of the role values the mapping names ({listed})",
                                   field=f"{self.field(_TURNS[fmt][0], fmt)}[{i}].{shown(keys['role'])}")
                new[own["role"]] = values[roles[value]]
            out.append(new)
        return out

    def field(self, name: str, fmt: str) -> str:
        """A field of the format (`conversations[2].from`) as the file spells it (`dialog[2].role`)."""
        match = re.fullmatch(r"([^.\[]+)(.*)", name, re.S)
        if not self or not match:
            return name
        head, rest = match.groups()
        head = dict(self.columns).get(head, head)
        if fmt in _TURNS and head == self.field_column(_TURNS[fmt][0]):
            own = _TURNS[fmt][1]
            keys = {**dict(MESSAGE_KEYS_DEFAULT[fmt]), **dict(self.message_keys)}
            back = {own[k]: keys[k] for k in MESSAGE_KEYS}
            rest = re.sub(r"^(\[\d+\]\.)([^.\[]+)", lambda m: m.group(1) + back.get(m.group(2), m.group(2)), rest)
        return head + rest

    def field_column(self, name: str) -> str:
        return dict(self.columns).get(name, name)

    def located(self, error: RowError, fmt: str) -> RowError:
        """A converter's error with its field in the file's names."""
        if not self or error.field is None:
            return error
        return RowError(error.reason, field=self.field(error.field, fmt))


# What a turn's keys are called when message_keys names only one of them.
MESSAGE_KEYS_DEFAULT: dict[str, tuple[tuple[str, str], ...]] = {
    fmt: tuple(keys.items()) for fmt, (_, keys, _) in _TURNS.items()}


def from_spec(columns: Optional[Mapping[str, str]] = None, message_keys: Optional[Mapping[str, str]] = None,
              roles: Optional[Mapping[str, Any]] = None) -> RowMapping:
    """A RowMapping from the config's three keys (checked by DatasetSpec: names known, values strings)."""
    by_value: dict[str, str] = {}
    for role, values in (roles or {}).items():
        for value in [values] if isinstance(values, str) else values:
            if value in by_value and by_value[value] != role:
                raise SftlabError(f"roles: the value {echo(value)} is listed for both '{by_value[value]}' and "
                                  f"'{role}'")
            by_value[value] = role
    return RowMapping(tuple((columns or {}).items()), tuple((message_keys or {}).items()), tuple(by_value.items()))

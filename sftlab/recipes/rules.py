"""The records a recipe is translated with, and the one engine that applies them.

A tool's module (llamafactory.py, axolotl.py, trl.py) is a table: each `Rule` says what one of the tool's keys
becomes in sftlab and what it means there; each `Default` says what the tool does when a key is left out and
sftlab would do otherwise. `translate` walks every key of a recipe (nested ones by dotted name), so the report
holds every key the recipe has, each mapped, ignored or unsupported with its reason: nothing is dropped unsaid."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Optional

from sftlab.errors import echo

Status = Literal["mapped", "ignored", "unsupported"]


@dataclass
class Item:
    """One key of the recipe: what became of it (`to`: the sftlab key it set, if any) and why."""

    key: str
    status: Status
    to: Optional[str]
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "status": self.status, "to": self.to, "why": self.why}


@dataclass
class Imported:
    """A recipe read into sftlab: the config keys (`TrainConfig(**config)` accepts them), the report (one item per
    key of the recipe), notes (what the tool does by default that the config now says, and what needs a hand), and
    the tool's own chat template, by name, for a comparison with the model's (None where the recipe names none)."""

    tool: str
    config: dict[str, Any]
    report: list[Item]
    notes: list[str] = field(default_factory=list)
    source_template: Optional[tuple[str, str]] = None


class Unmapped(Exception):
    """Raised by a rule's conversion: this value sets no sftlab key (sftlab does the same without one, it does not
    matter, or sftlab has no equal); the key is reported as `status` with `why`, and the config is left alone."""

    def __init__(self, status: Status, why: str):
        super().__init__(why)
        self.status = status
        self.why = why


def same(value: Any, recipe: Mapping[str, Any]) -> Any:
    return value


@dataclass(frozen=True)
class Rule:
    """A key of another tool (a dotted name; `[]` stands for any list index, `*` for any one key) and what it
    becomes: `to`, the sftlab key set to `convert(value, recipe)`; or, with `to` None, nothing (`status`: mapped
    where sftlab does the same without a key, ignored, or unsupported). `convert` may raise `Unmapped` for a value
    with another outcome. `why` says what the key means in the tool and in sftlab; "{value}" in it is the value
    given."""

    key: str
    to: Optional[str]
    why: str
    convert: Callable[[Any, Mapping[str, Any]], Any] = same
    status: Status = "mapped"

    def matches(self, key: str) -> bool:
        return _pattern(self.key).fullmatch(key) is not None


@dataclass(frozen=True)
class Default:
    """What the tool does when the recipe leaves `source` out (or empty) and sftlab's own default differs: the
    config gets `to: value(recipe)` and a note says so."""

    source: str | tuple[str, ...]
    to: str
    value: Callable[[Mapping[str, Any]], Any]
    why: str

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,) if isinstance(self.source, str) else self.source


@functools.lru_cache(maxsize=None)
def _pattern(key: str) -> re.Pattern[str]:
    return re.compile(re.escape(key).replace(r"\[\]", r"\[\d+\]").replace(r"\*", r"[^.\[]+"))


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A recipe's keys as dotted names with their values: mappings are walked (`special_tokens.pad_token`), lists of
    mappings too (`datasets[0].path`); any other value (a list of names, a number) is one key's value."""
    if isinstance(value, dict) and value:
        out = []
        for k, v in value.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = []
        for i, v in enumerate(value):
            out += flatten(v, f"{prefix}[{i}]")
        return out
    return [(prefix, value)]


def shown(value: Any) -> str:
    """A recipe's value as a reason quotes it (true, false and null as YAML writes them)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return echo(value, 60)


def set_key(config: dict[str, Any], dotted: str, value: Any) -> None:
    """config[a][b] = value for "a.b", mappings made on the way."""
    *parents, last = dotted.split(".")
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def empty(value: Any) -> bool:
    """A key written without a value (`wandb_project:` in axolotl's examples): the tool reads it as not set."""
    return value is None or value == "" or value == [] or value == {}


def translate(recipe: Mapping[str, Any], rules: list[Rule], tool: str, skip: tuple[str, ...] = ()
              ) -> tuple[dict[str, Any], list[Item]]:
    """Every key of `recipe` (but those under `skip`, which the tool's module reports itself) through the first
    rule that matches it: the config it sets and one item per key. A key no rule names is reported unsupported."""
    config: dict[str, Any] = {}
    items = []
    for key, value in flatten(dict(recipe)):
        if any(key == s or key.startswith(s + ".") or key.startswith(s + "[") for s in skip):
            continue
        rule = next((r for r in rules if r.matches(key)), None)
        if rule is None and empty(value):  # (`special_tokens:` left empty: a mapping whose keys the rules name)
            rule = next((Rule(key, None, "") for r in rules if r.key.startswith(key + ".")), None)
        items.append(_apply(rule, key, value, recipe, config, tool))
    return config, items


def _apply(rule: Optional[Rule], key: str, value: Any, recipe: Mapping[str, Any], config: dict[str, Any],
           tool: str) -> Item:
    if rule is None:
        if empty(value):
            return Item(key, "ignored", None, f"left empty, so it sets nothing (not a key of {tool}'s that sftlab's "
                                              "importer knows)")
        return Item(key, "unsupported", None, f"not a key of {tool}'s that sftlab's importer knows: nothing in the "
                                              "config comes from it; check what it does and set the sftlab key by hand")
    why = rule.why.replace("{value}", shown(value))
    if empty(value):
        return Item(key, "ignored", None, f"left empty: {tool} reads it as not set")
    if rule.to is None and rule.convert is same:
        return Item(key, rule.status, None, why)
    try:
        converted = rule.convert(value, recipe)
    except Unmapped as e:
        return Item(key, e.status, None, e.why.replace("{value}", shown(value)))
    if rule.to is None:  # (a conversion that accepts the value without setting anything)
        return Item(key, rule.status, None, why)
    set_key(config, rule.to, converted)
    return Item(key, "mapped", rule.to, why)


def apply_defaults(config: dict[str, Any], recipe: Mapping[str, Any], defaults: list[Default], tool: str,
                   own: Mapping[str, Any]) -> list[str]:
    """The tool's defaults for the keys the recipe leaves out (where the config has no value from another key, and
    the tool's value is not sftlab's own default, `own`): set in the config, each said in a note."""
    notes = []
    for d in defaults:
        if any(not empty(recipe.get(s)) for s in d.sources) or _has(config, d.to):
            continue
        value = d.value(recipe)
        if d.to in own and own[d.to] == value:
            continue
        set_key(config, d.to, value)
        given = " or ".join(f"`{s}`" for s in d.sources)
        notes.append(f"{d.to}: {shown(value)}, as {tool} does without {given} ({d.why})")
    return notes


def _has(config: Mapping[str, Any], dotted: str) -> bool:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


# ---- conversions the tables share --------------------------------------------------------------------------------

def number(value: Any, recipe: Mapping[str, Any]) -> float:
    """A number as YAML may give it: PyYAML reads `5e-5` (no dot) as text, which the tools convert themselves."""
    if isinstance(value, bool):
        raise Unmapped("unsupported", "{value} is not a number")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise Unmapped("unsupported", "{value} is not a number") from None
    return int(out) if out.is_integer() and not isinstance(value, float) else out


def whole(value: Any, recipe: Mapping[str, Any]) -> int:
    out = number(value, recipe)
    if not float(out).is_integer():
        raise Unmapped("unsupported", "{value} is not a whole number; sftlab counts this key in whole steps")
    return int(out)


def switch(on: Any, off: str = "off, as in sftlab") -> Callable[[Any, Mapping[str, Any]], Any]:
    """A true/false key: true becomes `on` (a value, a conversion, or an Unmapped to raise), false is reported
    ignored with `off`."""
    return choice({True: on, False: Unmapped("ignored", off)}, "{value}: true or false")


def of_recipe(decide: Callable[[Mapping[str, Any]], Any]) -> Callable[[Any, Mapping[str, Any]], Any]:
    """A conversion that reads the whole recipe, not the key's own value (the method several keys decide together)."""
    return lambda value, recipe: decide(recipe)


def choice(table: Mapping[Any, Any], otherwise: str, status: Status = "unsupported"
           ) -> Callable[[Any, Mapping[str, Any]], Any]:
    """A conversion by table: a value found there becomes the table's value (a function there is called with the
    value and the recipe; an `Unmapped` there is raised); any other value is reported with `otherwise`."""
    def convert(value: Any, recipe: Mapping[str, Any]) -> Any:
        key = value.lower() if isinstance(value, str) else value
        if isinstance(key, (list, dict)) or key not in table:
            raise Unmapped(status, otherwise)
        out = table[key]
        if isinstance(out, Unmapped):
            raise out
        return out(value, recipe) if callable(out) else out
    return convert


def names(value: Any) -> list[str]:
    """A list of names as the tools write one: a list, or one string with commas ("q_proj,v_proj")."""
    if isinstance(value, str):
        return [n.strip() for n in value.split(",") if n.strip()]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]

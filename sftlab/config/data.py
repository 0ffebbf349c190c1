"""DataSettings: every key that changes the examples a data file becomes (template, truncation, masking, mixing,
cleaning …), one section that training, inspect, eval's held-out loss and the UI's preview hand to
`sftlab.data.pipeline.build_examples` whole (and data check and clean, which measure rows with it), adjusted with
`model_copy(update=…)` where a caller differs.
`cache_key()` is made of its fields, so a new field is in the encode cache's key without anyone listing it."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, field_validator

from sftlab.config.bounds import SEED, Limit
from sftlab.config.fields import BOOKKEEPING, WHAT, OptionalCount, setting
from sftlab.defaults import DATA_CHECKS, MAX_LENGTH, MAX_LENGTH_HELP
from sftlab.errors import SftlabError, echo

# Fields that change how examples are made or laid out afterwards, not what they are: not in the cache key.
# (packing is applied to the examples the cache holds; num_proc only shares the encoding among processes.)
NOT_IN_CACHE_KEY = frozenset({"packing", "num_proc"})


# A data file's own names, mapped by a dataset's `columns`, `message_keys` and `roles` (sftlab/data/mapping.py):
# the fields of sftlab's formats, the keys of a turn, and the roles a turn can have.
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "input", "output", "system", "history", "tools"),
    "sharegpt": ("conversations", "system", "tools"),
    "messages": ("messages", "tools"),
    "prompt-completion": ("prompt", "completion", "system"),
    "text": ("text",),
}
MAPPED_FIELDS = tuple(dict.fromkeys(f for names in FORMAT_FIELDS.values() for f in names))
MESSAGE_KEYS = ("role", "content")
MAPPED_ROLES = ("user", "assistant", "system", "tool", "function_call")


# Names a template is rendered with by sftlab itself (and transformers' render), never a template option.
_RESERVED_KWARGS = {"messages", "tools", "documents", "add_generation_prompt", "continue_final_message",
                    "raise_exception", "strftime_now", "bos_token", "eos_token", "unk_token", "pad_token", "sep_token",
                    "cls_token", "mask_token", "loop", "namespace", "range", "dict", "lipsum", "cycler", "joiner"}


def check_template_kwargs(value: Any, label: str = "template_kwargs") -> dict[str, Any]:
    """A template_kwargs mapping as given (`{enable_thinking: false}`), checked: names that are Jinja
    identifiers and not the variables every render sets, values that JSON can hold."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SftlabError(f"{label} must be a mapping of template variables to values (e.g. {{enable_thinking: false}})")
    for name, v in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SftlabError(f"{label}: {echo(name)} is not a template variable name (letters, digits and _)")
        if name in _RESERVED_KWARGS:
            raise SftlabError(f"{label}: '{name}' is set by sftlab for every render and cannot be a template option")
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError):
            raise SftlabError(f"{label}: the value of '{name}' must be text, a number, true/false, null, a list or "
                              "a mapping") from None
    return dict(value)


class DataSettings(BaseModel):
    """The data keys of a run (TrainConfig has them all, as flat keys)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    template: Optional[str] = setting(None, group=WHAT, help="Built-in name or .jinja file; default: the tokenizer's own.")
    default_system: Optional[str] = setting(
        None, group=WHAT,
        help="The system prompt of every conversation that has no system message, in place of the template's own "
             "default (SmolLM2's template gives such conversations \"You are a helpful AI assistant named SmolLM, "
             "trained by Hugging Face\"); \"\" removes that default. It is written into the saved model's chat "
             "template: chat, serve and eval of the trained model use it too (docs/data.md, \"The template's default "
             "system prompt\").")
    train_on: Literal["all_assistant", "last_assistant", "all"] = setting(
        "all_assistant", group=WHAT,
        help="Which tokens are trained: every assistant turn, only the last one, or every token.")
    # (2: the shortest example that trains anything, a token to predict from and the token predicted)
    max_length: Annotated[int, Limit(ge=2)] = setting(MAX_LENGTH, group=WHAT, help=MAX_LENGTH_HELP)
    template_kwargs: Optional[dict[str, Any]] = setting(
        None, group=WHAT,
        help="Keyword arguments every render of the template gets ({enable_thinking: false} for Qwen3's non-thinking "
             "mode, or any variable a template reads): training, inspect, data check, and (written into the saved "
             "template) chat, serve, eval and export of the trained model (docs/reasoning-and-tools.md).")
    train_reasoning: bool = setting(
        True, group=WHAT,
        help="Whether the tokens of an answer's reasoning trace (<think>…</think>, reasoning_content) are trained; "
             "the answer and its end-of-turn token are trained either way (docs/reasoning-and-tools.md).")
    escape_special_tokens: bool = setting(
        True, group=WHAT,
        help="Special-token text inside the data (`<|im_end|>` in a message) stays text; false: it becomes control "
             "tokens, for data that carries them on purpose (docs/data.md \"Special-token text in your data\").")
    on_error: Literal["raise", "skip"] = setting(
        "raise", group=WHAT,
        help="A bad row stops the run (raise) or is skipped and listed in rejects.jsonl (skip).")
    packing: bool = setting(
        False, group=WHAT,
        help="The whole dataset packed into rows of max_length first, each packed row one batch member (fewer "
             "optimizer steps; TRL's name).")
    limit: OptionalCount = setting(None, group=WHAT, help="Only the first N conversations (quick trials), counted after `clean` and the mixture: the first N that would train.")
    mixture_examples: Annotated[Optional[int], Limit(ge=1, le=100_000_000)] = setting(
        None, group=WHAT,
        help="Mixing datasets by `weight` (shares of the examples): how many examples in all (default: the rows read).")
    mixture_replacement: bool = setting(
        False, group=WHAT,
        help="Mixing datasets by `weight`: each example drawn with replacement (default: a file's rows all used "
             "before repeats).")
    clean: Optional[list[str]] = setting(
        None, group=WHAT,
        help="Data checks whose rows are removed before training (`sftlab data check` names); listed in "
             "data_report.json.")
    num_proc: OptionalCount = setting(
        None, group=WHAT,
        help="Encoding: worker processes for inputs of 2,000 conversations or more (default: one per core, at most 8).")
    seed: Annotated[int, SEED] = setting(42, group=BOOKKEEPING, transformers=("seed", "data_seed"),
                        help="Seed of the data order, the split and the initialisation.")

    @field_validator("template_kwargs")
    @classmethod
    def _template_kwargs(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        try:
            return check_template_kwargs(value, "the mapping") or None
        except SftlabError as e:
            raise ValueError(str(e)) from None

    @field_validator("clean")
    @classmethod
    def _known_checks(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None:
            for name in value:
                if name not in DATA_CHECKS:
                    raise ValueError(f"unknown check '{name}'; choose from {', '.join(DATA_CHECKS)}")
        return value

    def cache_key(self) -> dict[str, Any]:
        """The fields that determine the examples, by name (encode_cache hashes them with the files, the
        tokenizer and the template)."""
        return self.model_dump(mode="json", exclude=set(NOT_IN_CACHE_KEY))

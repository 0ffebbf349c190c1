"""Chat templates: the built-in ones, resolving which one to use, and rendering.

Rendering goes through transformers' public `render_jinja_template`, the function
`tokenizer.apply_chat_template` renders with (same filters, same globals, same special-token
variables), so a template renders here exactly as it renders there (tests/test_templates.py compares
the two on every built-in template and the shipped data).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from sftlab.errors import SftlabError, first_line

log = logging.getLogger("sftlab")

BUILTIN_TEMPLATES = ("chatml", "qwen", "llama2", "llama3", "phi3", "alpaca", "plain")

# Literal markers that must be one token of the tokenizer for the template to fit the model.
# ([INST] and <<SYS>> are plain text even in Llama 2's own vocabulary, so they are not checked.)
_MARKER = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def builtin_template(name: str) -> str:
    return resources.files("sftlab").joinpath("templates", f"{name}.jinja").read_text(encoding="utf-8")


@dataclass
class ChatTemplate:
    """A Jinja chat template bound to a tokenizer's special tokens."""

    source: str
    name: str
    special_tokens: dict[str, str]

    @cached_property
    def handles_tool_calls(self) -> bool:
        return "tool_calls" in self.source

    @cached_property
    def handles_tools(self) -> bool:
        """Whether the template renders the tool definitions (the `tools` variable)."""
        return re.search(r"\btools\b", self.source) is not None

    def render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = False,
    ) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        try:
            rendered, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=self.source,
                                                add_generation_prompt=add_generation_prompt, **self.special_tokens)
            return rendered[0]
        except Exception as e:  # noqa: BLE001 - template errors are the template's, not ours
            raise SftlabError(f"chat template '{self.name}' failed to render: {first_line(e)}") from None

    def end_of_turn(self, special_strings: list[str]) -> str | None:
        """The special token the template writes right after an assistant answer (ChatML's <|im_end|>,
        Llama 3's <|eot_id|>), found by rendering a probe turn; None when it writes none (Alpaca: the
        masking contract adds EOS there)."""
        probe = "sftlab end-of-turn probe"
        user = [{"role": "user", "content": "hi"}]
        try:
            prompt = self.render(user, add_generation_prompt=True)
            upto = self.render([*user, {"role": "assistant", "content": probe}])
        except SftlabError:
            return None
        at = upto.find(probe, len(prompt) if upto.startswith(prompt) else 0)
        if at < 0:
            return None
        rest = upto[at + len(probe) :]
        found = [(rest.find(s), s) for s in special_strings if s and rest.find(s) >= 0]
        if not found:
            return None
        where, token = min(found, key=lambda f: (f[0], -len(f[1])))
        return token if not rest[:where].strip() else None

    def markers(self) -> list[str]:
        """Special-looking literals the template writes (for the does-it-fit-the-model check)."""
        return sorted(set(_MARKER.findall(self.source)))


def template_for(template: str | ChatTemplate | None, tokenizer: Any, conversations: Any) -> ChatTemplate | None:
    """The template to encode these conversations with: the one given, else the resolved one; None
    when every conversation is plain text (continued pre-training needs no template)."""
    if isinstance(template, ChatTemplate):
        return template
    if any(not c.is_text for c in conversations):
        return resolve_template(template, tokenizer)
    return None


def resolve_template(template: str | None, tokenizer: Any, warn: bool = True) -> ChatTemplate:
    """The template to use: a built-in name, a .jinja file, or (None) the tokenizer's own."""
    if template is None:
        source = getattr(tokenizer, "chat_template", None)
        if isinstance(source, dict):  # several named templates; 'default' is the chat one
            source = source.get("default")
        if not source:
            raise SftlabError(
                "the tokenizer has no chat template; set template to one of "
                f"{', '.join(BUILTIN_TEMPLATES)} or a path to a .jinja file"
            )
        name = "tokenizer's own"
    elif template in BUILTIN_TEMPLATES:
        source, name = builtin_template(template), template
    elif template.endswith(".jinja"):
        path = Path(template)
        if not path.is_file():
            raise SftlabError(f"{template}: template file not found")
        source, name = path.read_text(encoding="utf-8"), template
    else:
        raise SftlabError(
            f"unknown template '{template}'; use one of {', '.join(BUILTIN_TEMPLATES)} or a path to a .jinja file"
        )
    chat = ChatTemplate(source=source, name=name, special_tokens=special_token_variables(tokenizer))
    if warn:
        warn_if_mismatched(chat, tokenizer)
    return chat


def special_token_variables(tokenizer: Any) -> dict[str, str]:
    """bos_token, eos_token, … as apply_chat_template passes them to the template."""
    out = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"):
        value = getattr(tokenizer, key, None)
        if value is not None:
            out[key] = str(value)
    return out


def mismatched_markers(chat: ChatTemplate, tokenizer: Any, extra: Sequence[str] = ()) -> dict[str, int]:
    """Markers of the template (then `extra`, those a custom template declares) that the tokenizer does not
    know as one token, with their token counts, in the order the template first writes them."""
    bad = {}
    where = lambda m: (chat.source.find(m) if m in chat.source else len(chat.source), m)  # noqa: E731
    for marker in sorted(dict.fromkeys([*chat.markers(), *extra]), key=where):
        ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            bad[marker] = len(ids)
    return bad


def warn_if_mismatched(chat: ChatTemplate, tokenizer: Any) -> None:
    bad = mismatched_markers(chat, tokenizer)
    if bad:
        listed = ", ".join(f"'{m}' ({n} tokens)" for m, n in bad.items())
        log.warning(
            "template '%s' does not match this tokenizer: %s %s not single tokens; "
            "the model will not recognise its turn markers (`sftlab train` adds them as new tokens)",
            chat.name,
            listed,
            "is" if len(bad) == 1 else "are",
        )

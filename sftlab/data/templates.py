"""Chat templates: the built-in ones, resolving which one to use, and rendering.

Rendering goes through transformers' public `render_jinja_template`, the function
`tokenizer.apply_chat_template` renders with (same filters, same globals, same special-token
variables), so a template renders here exactly as it renders there (tests/test_templates.py compares
the two on every built-in template and the shipped data).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from typing import Any, Sequence

from sftlab.config.data import check_template_kwargs  # (checked where the config checks it)
from sftlab.data.fields import MAX_DEPTH, TOO_DEEP, depth
from sftlab.data.reasoning import template_messages
from sftlab.errors import SftlabError, first_line, shown
from sftlab.files import read_text

log = logging.getLogger("sftlab")

BUILTIN_TEMPLATES = ("chatml", "qwen", "llama2", "llama3", "phi3", "alpaca", "plain")

PROBE_ANSWER = "sftlab probe answer"  # the answer of the conversation a template is probed with

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
    # Set by with_default_system: the system prompt given to conversations without one ("" for none), and the
    # template's own default that it replaces (None when the template has none).
    system_override: str | None = None
    replaced_system: str | None = None
    # Set on the first render that needs it: the template takes tool-call arguments as JSON text, not a mapping.
    _arguments_as_text: bool = field(default=False, repr=False, compare=False)

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

        # Reasoning and tool calls the way this template reads them (reasoning.py), for every caller alike.
        messages = template_messages(messages, self.source, self._arguments_as_text)

        def render(msgs: list[dict[str, Any]]) -> str:
            rendered, _ = render_jinja_template(conversations=[msgs], tools=tools, chat_template=self.source,
                                                add_generation_prompt=add_generation_prompt, **self.special_tokens)
            return rendered[0]

        try:
            return render(messages)
        except Exception as e:  # noqa: BLE001 - template errors are the template's, not ours
            error = e
        if not self._arguments_as_text and any(m.get("tool_calls") for m in messages):
            # A template that writes a call's arguments as text (functionary's `... + arguments`): JSON text then.
            try:
                text = render(template_messages(messages, self.source, arguments_as_text=True))
                self._arguments_as_text = True
                return text
            except Exception:  # noqa: BLE001
                pass
        raise SftlabError(f"chat template '{self.name}' failed to render: {first_line(error)}") from None

    def probe_turn(self) -> tuple[str, str] | None:
        """(the generation prompt, the whole conversation) of one exchange whose answer is PROBE_ANSWER; None where
        the template cannot render that conversation (one that needs a system message, say)."""
        user = [{"role": "user", "content": "hi"}]
        try:
            return (self.render(user, add_generation_prompt=True),
                    self.render([*user, {"role": "assistant", "content": PROBE_ANSWER}]))
        except SftlabError:
            return None

    @cached_property
    def always_prompts(self) -> bool:
        """Whether the template writes its generation prompt after every conversation, asked for or not
        (Command-R7B's does): the text after a turn's end is then the next prompt, never part of the answer."""
        # Told apart from a template that writes no generation prompt at all by what follows a user turn: another
        # user turn continues the text of one alone there, but not after a generation prompt.
        user = [{"role": "user", "content": "hi"}]
        try:
            alone = self.render(user)
            return (alone == self.render(user, add_generation_prompt=True)
                    and not self.render([*user, {"role": "user", "content": "hello"}]).startswith(alone))
        except SftlabError:
            return False

    def end_of_turn(self, special_strings: list[str]) -> str | None:
        """The special token the template writes right after an assistant answer (ChatML's <|im_end|>,
        Llama 3's <|eot_id|>), found by rendering a probe turn; None when it writes none (Alpaca: the
        masking contract adds EOS there)."""
        turn = self.probe_turn()
        if turn is None:
            return None
        prompt, upto = turn
        probe = PROBE_ANSWER
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

    @cached_property
    def default_system(self) -> str | None:
        """The system prompt the template writes into a conversation that has none (SmolLM2's "You are a helpful AI
        assistant named SmolLM, trained by Hugging Face", Qwen2's "You are a helpful assistant"); None when it writes
        none. Found by rendering, so it holds for any template: with a system message a conversation renders as
        A + system + B; when the same conversation without one renders as A + X + B, X is the default."""
        user = [{"role": "user", "content": _PROBE_USER}]
        try:
            without = self.render(user)
            with_system = self.render([{"role": "system", "content": _PROBE_SYSTEM}, *user])
        except SftlabError:
            return None
        at = with_system.find(_PROBE_SYSTEM)
        if at < 0:  # the template drops system messages
            return None
        before, after = with_system[:at], with_system[at + len(_PROBE_SYSTEM) :]
        if len(without) < len(before) + len(after) or not (without.startswith(before) and without.endswith(after)):
            return None
        return without[len(before) : len(without) - len(after)] or None


_PROBE_SYSTEM = "sftlab probe: the system message"
_PROBE_USER = "sftlab probe: the user message"


def with_default_system(chat: ChatTemplate, text: str | None) -> ChatTemplate:
    """`chat` giving every conversation without a system message `text` as its system message: the `default_system`
    setting. None leaves the template as it is. A text replaces the template's own default system prompt (or adds
    one where it has none). "" removes the template's default: such a conversation gets an empty system message,
    which a ChatML template such as SmolLM2's or Qwen2's renders as an empty system turn
    (`<|im_start|>system\n<|im_end|>\n`); a template without a default is left as it is.

    The rule is written into the template itself (a few Jinja lines in front of it), so the tokenizer saved with a
    trained model carries it: chat, serve, eval and any other program that renders the saved template give the
    model the system prompt it was trained with."""
    if text is None:
        return chat
    own = chat.default_system
    if text == (own or ""):
        return chat
    prologue = ("{#- sftlab default_system: the system message of a conversation that has none -#}\n"
                "{%- if messages and messages[0]['role'] != 'system' %}"
                f"{{%- set messages = [{{'role': 'system', 'content': {json.dumps(text, ensure_ascii=False)}}}] + messages %}}"
                "{%- endif %}")
    # (Jinja's trim_blocks drops a newline right after the prologue's last tag: one the template starts with stays.)
    source = prologue + ("\n" if chat.source.startswith("\n") else "") + chat.source
    wrapped = ChatTemplate(source, chat.name, chat.special_tokens, system_override=text, replaced_system=own)
    if text and wrapped.default_system != text:
        raise SftlabError(f"chat template '{chat.name}' does not render a system message at the start of a "
                          "conversation, so default_system cannot give one; leave default_system unset")
    if not text and wrapped.default_system is not None:
        raise SftlabError(f"chat template '{chat.name}' writes its system prompt \"{own}\" even for an empty system "
                          "message, so default_system \"\" cannot remove it; give another system prompt instead")
    return wrapped


def _jinja_literal(value: Any) -> str:
    """`value` written as a Jinja expression."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_jinja_literal(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {_jinja_literal(v)}" for k, v in value.items()) + "}"


def with_template_kwargs(chat: ChatTemplate, kwargs: dict[str, Any] | None) -> ChatTemplate:
    """`chat` rendering as if given these keyword arguments (`enable_thinking: false`): the `template_kwargs`
    setting. Like default_system, the values are written into the template itself as defaults (a few Jinja lines
    in front of it), so every render — training, inspect, data check, and chat, serve, eval and export of the
    saved model — sees them; a caller that passes the variable itself (a chat request's chat_template_kwargs)
    still overrides it."""
    for k, v in (kwargs or {}).items() if isinstance(kwargs, dict) else ():
        if depth(v) > MAX_DEPTH:  # (before anything recurses into it: JSON, the Jinja literal, Jinja's parser)
            raise SftlabError(f"{_KWARGS}: the value of '{shown(str(k))}' is {TOO_DEEP}")
    kwargs = check_template_kwargs(kwargs)
    if not kwargs:
        return chat
    # A name the template never reads from its context would change nothing: a typo, a variable the template sets
    # itself, or a word of Jinja's own (`none`, `True`: `{% set none = 1 %}` cannot even compile).
    options = sorted(template_options(chat) - _RENDER_VARIABLES)
    for k in sorted(kwargs):
        if k not in options:
            listed = ", ".join(options[:20]) + (f", … {len(options) - 20} more" if len(options) > 20 else "")
            raise SftlabError(f"{_KWARGS}: chat template '{chat.name}' never reads '{k}', so it would change nothing; "
                              + (f"the options it reads: {listed}" if options else "it reads no options"))
    lines = "".join(f"{{%- if {k} is not defined %}}{{%- set {k} = {_jinja_literal(v)} %}}{{%- endif %}}"
                    for k, v in sorted(kwargs.items()))
    prologue = "{#- sftlab template_kwargs: the template's options as training set them -#}\n" + lines
    source = prologue + ("\n" if chat.source.startswith("\n") else "") + chat.source
    out = ChatTemplate(source, chat.name, chat.special_tokens, chat.system_override, chat.replaced_system)
    # Values the template cannot take (a number where it loops over a list): refused here, once, naming the option,
    # rather than as every row's render error. (A template that fails without them too fails per row, as before.)
    for probe in _PROBES:
        try:
            chat.render(*probe)
        except SftlabError:
            continue
        try:
            out.render(*probe)
        except SftlabError as e:
            given = shown(json.dumps(kwargs, ensure_ascii=False), 200)
            raise SftlabError(f"{_KWARGS} {given} break chat template '{chat.name}': it fails to render: "
                              f"{str(e).split(': ', 1)[-1]}") from None
    check_answer_span(out)
    return out


_KWARGS = "template_kwargs (--template-kwargs)"
# The variables every render is given (config.data refuses them as template_kwargs), never a template's options.
_RENDER_VARIABLES = {"messages", "tools", "documents", "add_generation_prompt", "continue_final_message",
                     "bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"}
# Conversations a template's options are tried on: a prompt, and an exchange.
_PROBES = (([{"role": "user", "content": "hi"}], None, True),
           ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": PROBE_ANSWER}], None, False))


def template_options(chat: ChatTemplate) -> set[str]:
    """The variables a template reads from its context (Jinja's undeclared variables, parsed the way
    apply_chat_template compiles it): the render's own and the template's options."""
    from jinja2 import TemplateSyntaxError, meta
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        env = _compile_jinja_template(chat.source).environment
        return meta.find_undeclared_variables(env.parse(chat.source))
    except TemplateSyntaxError as e:
        raise SftlabError(f"chat template '{chat.name}' is not valid Jinja: {first_line(e)}") from None


def system_prompt_use(chat: ChatTemplate | None, conversations: Sequence[Any]) -> dict[str, Any] | None:
    """What the template does for the conversations that have no system message, for the data report: how many of
    them, the system prompt they get and where it comes from ("template" or "default_system", with the template's
    own it replaces); None when they get none (or all have one)."""
    if chat is None:
        return None
    chats = [c for c in conversations if not c.is_text]
    without = sum(1 for c in chats if not c.messages or c.messages[0].role != "system")
    if not without:
        return None
    if chat.system_override is None:
        if chat.default_system is None:
            return None
        return {"conversations": without, "of": len(chats), "system": chat.default_system, "from": "template",
                "template": chat.name}
    return {"conversations": without, "of": len(chats), "system": chat.system_override, "from": "default_system",
            "template": chat.name, "replaces": chat.replaced_system}


def system_prompt_line(use: dict[str, Any]) -> str:
    """system_prompt_use as the one line train, inspect and data check print."""
    lead = f"{use['conversations']} of {use['of']} conversations have no system message"
    if use["from"] == "template":
        which = "the tokenizer's own template" if use["template"] == "tokenizer's own" else f"template '{use['template']}'"
        return (f"{lead}; {which} gives them its default system prompt \"{use['system']}\" "
                "(default_system / --default-system replaces it, \"\" removes it)")
    instead = f" instead of the template's \"{use['replaces']}\"" if use.get("replaces") else ""
    if not use["system"]:
        return f"{lead}; default_system \"\" gives them an empty system message{instead}"
    return f"{lead}; default_system gives them the system prompt \"{use['system']}\"{instead}"


def template_for(template: str | ChatTemplate | None, tokenizer: Any, conversations: Any,
                 default_system: str | None = None, template_kwargs: dict[str, Any] | None = None) -> ChatTemplate | None:
    """The template to encode these conversations with: the one given, else the resolved one, with
    `template_kwargs` and `default_system` applied (with_template_kwargs, with_default_system); None when every
    conversation is plain text (continued pre-training needs no template)."""
    if isinstance(template, ChatTemplate):
        return with_default_system(with_template_kwargs(template, template_kwargs), default_system)
    if any(not c.is_text for c in conversations):
        chat = with_template_kwargs(resolve_template(template, tokenizer), template_kwargs)
        return with_default_system(chat, default_system)
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
        source, name = read_text(template, "template file"), template
    else:
        raise SftlabError(
            f"unknown template '{template}'; use one of {', '.join(BUILTIN_TEMPLATES)} or a path to a .jinja file"
        )
    chat = ChatTemplate(source=source, name=name, special_tokens=special_token_variables(tokenizer))
    check_answer_span(chat)
    if warn:
        warn_if_mismatched(chat, tokenizer)
    return chat


def check_answer_span(chat: ChatTemplate) -> None:
    """Refuse a template whose answer span (masking contract: from the end of the generation prompt to the end of
    the answer) would hold more than the answer: one that writes nothing, or leaves the answer out, or writes an
    assistant header although add_generation_prompt writes nothing at all (the header would be trained as the
    answer's first words, and at inference the model would be prompted without it).

    Text between a generation prompt that writes something and the answer is the model's own output, trained as
    part of the answer: Qwen3's empty trace `<think>\n\n</think>\n\n` (what the model writes to answer without
    thinking), gpt-oss' `<|channel|>final<|message|>`, Command-R7B's `<|START_RESPONSE|>`, functionary's `all\n`."""
    turn = chat.probe_turn()
    if turn is None:
        return  # a template that needs another conversation shape: its own errors come with the data
    (prompt, full), probe = turn, PROBE_ANSWER
    if not full.strip():
        raise SftlabError(f"chat template '{chat.name}' renders nothing: it writes no messages")
    if probe not in full:
        raise SftlabError(f"chat template '{chat.name}' does not write the assistant's answer (message content)")
    if not full.startswith(prompt):
        return  # prefix-unstable templates are handled per conversation (SPEC: split into one example per turn)
    header = full[len(prompt) : full.index(probe, len(prompt)) if probe in full[len(prompt):] else len(full)]
    if header.strip() and _writes_no_generation_prompt(chat, prompt) and not chat.always_prompts:
        raise SftlabError(
            f"chat template '{chat.name}' writes {header.strip()!r} before an answer but not for "
            "add_generation_prompt: it would be trained as part of every answer and missing at inference; write it "
            "in the template under `{% if add_generation_prompt %}`")


def _writes_no_generation_prompt(chat: ChatTemplate, prompt: str) -> bool:
    """Whether add_generation_prompt adds nothing to the probe's prompt (the template ignores it)."""
    try:
        return chat.render([{"role": "user", "content": "hi"}]) == prompt
    except SftlabError:
        return False


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

"""How other SFT tools write and mask a conversation: their chat formats as data (one record per template) and
`encode_as_source`, which gives the token ids and labels (-100: not trained) a tool would train on a Conversation.

Read from the tools' own code, at these commits:
- LLaMA-Factory (hiyouga/LLaMA-Factory ff6d4d12eeb035d6ce06805a5733dd7b29f2ac30): src/llamafactory/data/template.py
  (register_template records, Template._encode, ReasoningTemplate, Llama2Template), formatter.py, tool_utils.py,
  converter.py (SharegptDatasetConverter: which role sequences it keeps), processor/supervised.py (the labels).
- axolotl (axolotl-ai-cloud/axolotl 067b021c8b87a9e5e380b9173c704cf7340e30f5):
  src/axolotl/prompt_strategies/chat_template.py (ChatTemplateStrategy, StrategyLoader's defaults) and
  src/axolotl/utils/chat_templates/templates/*.jinja.
- TRL (huggingface/trl f2cd57710ae345ea6428ae95363267fcf38a3dc8): trl/trainer/sft_trainer.py (tokenize_fn, the
  labels built from assistant_masks), trl/data_utils.py (_tokenize).

What is not reproduced is refused with a sentence (SftlabError), never approximated: truncation (LLaMA-Factory's
cutoff_len, axolotl's sequence_len), packing, LLaMA-Factory's `openai` converter (it adds "detailed thinking off" to
system prompts), templates with `efficient_eos`, axolotl's per-token training details and TRL's substitute training
template. A conversation the tool itself would skip raises SourceSkips.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sftlab.data.conversation import Conversation, Message
from sftlab.errors import SftlabError

IGNORE = -100
TOOLS = ("llamafactory", "axolotl", "trl")
TOOL_NAMES = {"llamafactory": "LLaMA-Factory", "axolotl": "axolotl", "trl": "TRL"}


class SourceSkips(SftlabError):
    """The source tool itself would leave this conversation out of training (it says why)."""


# --- LLaMA-Factory ------------------------------------------------------------------------------------------------

# A slot that is a token id of the tokenizer rather than text (LLaMA-Factory writes {"bos_token"} / {"eos_token"}).
BOS, EOS = ("bos_token",), ("eos_token",)
Slot = Any  # str (with "{{content}}") or BOS / EOS

# ReasoningTemplate's default thought words (template.py: register_template, thought_words default).
THOUGHT = ("<think>\n", "\n</think>\n\n")


@dataclass(frozen=True)
class LfTemplate:
    """One `register_template(...)` of LLaMA-Factory, its unset formatters filled as register_template fills them."""

    name: str
    user: tuple[Slot, ...] = ("{{content}}",)
    assistant: tuple[Slot, ...] = ("{{content}}", EOS)
    system: tuple[Slot, ...] = ("{{content}}",)
    # None: the assistant's slots (register_template's default FunctionFormatter).
    function: tuple[Slot, ...] | None = None
    # None: the user's slots (format_observation defaults to format_user).
    observation: tuple[Slot, ...] | None = None
    prefix: tuple[Slot, ...] = ()
    default_system: str = ""
    stop_words: tuple[str, ...] = ()
    replace_eos: bool = False
    tool_format: str = "default"  # the ToolFormatter and FunctionFormatter of format_tools / format_function
    reasoning: bool = False  # template_class=ReasoningTemplate
    system_in_first_user: bool = False  # template_class=Llama2Template

    @property
    def function_slots(self) -> tuple[Slot, ...]:
        return self.function if self.function is not None else self.assistant

    @property
    def observation_slots(self) -> tuple[Slot, ...]:
        return self.observation if self.observation is not None else self.user


_IM_USER = "<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"
_IM_SYSTEM = "<|im_start|>system\n{{content}}<|im_end|>\n"
_QWEN_OBSERVATION = "<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
_L3_USER = ("<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n")

LLAMAFACTORY: dict[str, LfTemplate] = {t.name: t for t in (
    # template.py lines 716-724
    LfTemplate("alpaca", user=("### Instruction:\n{{content}}\n\n### Response:\n",),
               assistant=("{{content}}", EOS, "\n\n"),
               default_system="Below is an instruction that describes a task. Write a response that appropriately "
                              "completes the request.\n\n"),
    # template.py lines 778-787
    LfTemplate("chatml", user=(_IM_USER,), assistant=("{{content}}<|im_end|>\n",), system=(_IM_SYSTEM,),
               observation=("<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n",),
               stop_words=("<|im_end|>", "<|im_start|>"), replace_eos=True),
    # template.py lines 909-915
    LfTemplate("default", user=("Human: {{content}}", EOS, "\nAssistant:"), assistant=("{{content}}", EOS, "\n"),
               system=("System: {{content}}", EOS, "\n")),
    # template.py lines 935-938
    LfTemplate("empty", assistant=("{{content}}",)),
    # template.py lines 1463-1468 (Llama2Template: the system text goes in front of the first user message)
    LfTemplate("llama2", user=(BOS, "[INST] {{content}} [/INST]"), system=("<<SYS>>\n{{content}}\n<</SYS>>\n\n",),
               system_in_first_user=True),
    # template.py lines 1481-1506
    LfTemplate("llama3", user=(_L3_USER,), assistant=("{{content}}<|eot_id|>",),
               system=("<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>",),
               function=("{{content}}<|eot_id|>",),
               observation=("<|start_header_id|>ipython<|end_header_id|>\n\n{{content}}<|eot_id|>"
                            "<|start_header_id|>assistant<|end_header_id|>\n\n",),
               prefix=(BOS,), stop_words=("<|eot_id|>", "<|eom_id|>"), replace_eos=True, tool_format="llama3"),
    # template.py lines 1982-1989
    LfTemplate("phi", user=("<|user|>\n{{content}}<|end|>\n<|assistant|>\n",), assistant=("{{content}}<|end|>\n",),
               system=("<|system|>\n{{content}}<|end|>\n",), stop_words=("<|end|>",), replace_eos=True),
    # template.py lines 2041-2054
    LfTemplate("qwen", user=(_IM_USER,), assistant=("{{content}}<|im_end|>\n",), system=(_IM_SYSTEM,),
               function=("{{content}}<|im_end|>\n",), observation=(_QWEN_OBSERVATION,), tool_format="qwen",
               default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
               stop_words=("<|im_end|>",), replace_eos=True),
    # template.py lines 2058-2071 (ReasoningTemplate)
    LfTemplate("qwen3", user=(_IM_USER,), assistant=("{{content}}<|im_end|>\n",), system=(_IM_SYSTEM,),
               function=("{{content}}<|im_end|>\n",), observation=(_QWEN_OBSERVATION,), tool_format="qwen",
               stop_words=("<|im_end|>",), replace_eos=True, reasoning=True),
    # template.py lines 2075-2087
    LfTemplate("qwen3_nothink", user=(_IM_USER,), assistant=("{{content}}<|im_end|>\n",), system=(_IM_SYSTEM,),
               function=("{{content}}<|im_end|>\n",), observation=(_QWEN_OBSERVATION,), tool_format="qwen",
               stop_words=("<|im_end|>",), replace_eos=True),
)}

# The tool definitions LLaMA-Factory writes after the system text (tool_utils.py lines 31-39, 58-63, 80-86).
_DEFAULT_TOOL_PROMPT = (
    "You have access to the following tools:\n{tool_text}"
    "Use the following format if using a tool:\n"
    "```\n"
    "Action: tool name (one of [{tool_names}])\n"
    "Action Input: the input to the tool, in a JSON format representing the kwargs "
    """(e.g. ```{{"input": "hello world", "num_beams": 5}}```)\n"""
    "```\n"
)
_LLAMA3_TOOL_PROMPT = (
    "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n"
    "You have access to the following functions. To call a function, please respond with JSON for a function call. "
    """Respond in the format {{"name": function name, "parameters": dictionary of argument name and its value}}. """
    "Do not use variables.\n\n{tool_text}"
)
_QWEN_TOOL_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    """<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, """
    """"arguments": <args-json-object>}}\n</tool_call>"""
)


def _wrapped(tool: dict[str, Any]) -> dict[str, Any]:
    return tool if tool.get("type") == "function" else {"type": "function", "function": tool}


def _lf_tool_text(fmt: str, tools: list[dict[str, Any]]) -> str:
    """ToolFormatter.apply: the tool definitions in the template's tool format (tool_utils.py)."""
    if fmt == "qwen":  # QwenToolUtils.tool_formatter
        text = "".join("\n" + json.dumps(_wrapped(t), ensure_ascii=False) for t in tools)
        return _QWEN_TOOL_PROMPT.format(tool_text=text)
    if fmt == "llama3":  # Llama3ToolUtils.tool_formatter: the day it runs, as LLaMA-Factory writes it
        text = "".join(json.dumps(_wrapped(t), indent=4, ensure_ascii=False) + "\n\n" for t in tools)
        return _LLAMA3_TOOL_PROMPT.format(date=datetime.now().strftime("%d %b %Y"), tool_text=text)
    return _default_tool_text(tools)


def _default_tool_text(tools: list[dict[str, Any]]) -> str:
    """DefaultToolUtils.tool_formatter (tool_utils.py lines 152-185)."""
    text, names = "", []
    for tool in tools:
        tool = tool.get("function", "") if tool.get("type") == "function" else tool
        parameters = tool.get("parameters") if isinstance(tool, dict) else None
        if not isinstance(parameters, dict) or "properties" not in parameters:
            raise SftlabError("LLaMA-Factory's default tool format needs every tool's parameters to have properties")
        params = ""
        for name, param in tool["parameters"]["properties"].items():
            required = ", required" if name in tool["parameters"].get("required", []) else ""
            enum = ", should be one of [{}]".format(", ".join(param["enum"])) if param.get("enum") else ""
            items = ", where each item should be {}".format(param["items"].get("type", "")) if param.get("items") else ""
            params += f"  - {name} ({param.get('type', '')}{required}): {param.get('description', '')}{enum}{items}\n"
        text += f"> Tool Name: {tool['name']}\nTool Description: {tool.get('description', '')}\nTool Args:\n{params}\n"
        names.append(tool["name"])
    return _DEFAULT_TOOL_PROMPT.format(tool_text=text, tool_names=", ".join(names))


def _lf_calls_text(fmt: str, calls: list[dict[str, Any]]) -> str:
    """FunctionFormatter: the calls as the tool format's function_formatter writes them (tool_utils.py)."""
    pairs = [(c.get("function", c)["name"], c.get("function", c).get("arguments", {})) for c in calls]
    if fmt == "qwen":
        return "\n".join("<tool_call>\n" + json.dumps({"name": n, "arguments": a}, ensure_ascii=False) + "\n</tool_call>"
                         for n, a in pairs)
    if fmt == "llama3":
        objs = [{"name": n, "parameters": a} for n, a in pairs]
        return json.dumps(objs[0] if len(objs) == 1 else objs, ensure_ascii=False)
    return "\n".join(f"Action: {n}\nAction Input: {json.dumps(a, ensure_ascii=False)}" for n, a in pairs)


def _fill(slots: tuple[Slot, ...], **values: str) -> list[Slot]:
    """StringFormatter.apply: each placeholder replaced once, in the order the values are given."""
    out: list[Slot] = []
    for slot in slots:
        if isinstance(slot, str):
            for name, value in values.items():
                slot = slot.replace("{{" + name + "}}", value, 1)
        out.append(slot)
    return out


def _lf_turns(conv: Conversation, template: LfTemplate) -> tuple[str, list[dict[str, str]]]:
    """(system, messages) as LLaMA-Factory's sharegpt converter aligns a conversation: a system message only first,
    then user-or-tool-result and assistant-or-tool-call turns alternating, ending with an answer."""
    msgs = list(conv.messages)
    system = msgs.pop(0).content if msgs and msgs[0].role == "system" else ""
    turns = []
    for k, m in enumerate(msgs):
        role = _lf_role(m)
        if role not in (("user", "observation"), ("assistant", "function"))[k % 2]:
            raise SourceSkips(f"LLaMA-Factory skips it: message {k + 1 + (len(conv.messages) > len(msgs))} "
                              f"({m.role}) breaks its alternation of user and assistant turns")
        turns.append({"role": role, "content": _lf_content(m, role, template)})
    if len(turns) % 2:
        raise SourceSkips("LLaMA-Factory skips it: it does not end with an assistant answer")
    return system, turns


def _lf_role(m: Message) -> str:
    if m.role == "assistant":
        return "function" if m.tool_calls else "assistant"
    return {"tool": "observation"}.get(m.role, m.role)


def _lf_content(m: Message, role: str, template: LfTemplate) -> str:
    # sftlab keeps a trace without its framing; LLaMA-Factory's data carries it in the content, framed by the
    # template's thought words (ReasoningTemplate.add_thought writes that framing too).
    thought = f"{THOUGHT[0]}{m.reasoning}{THOUGHT[1]}" if m.reasoning is not None else ""
    if role != "function":
        return thought + m.content
    if m.content:
        raise SftlabError("LLaMA-Factory's function-call turn holds tool calls only: an assistant message with text "
                          "and tool calls is not reproduced")
    if thought and template.system_in_first_user:
        raise SftlabError("LLaMA-Factory's llama2 template cannot write reasoning before a tool call")
    return thought + _lf_calls_text(template.tool_format, m.tool_calls or [])


def _lf_encode(template: LfTemplate, conv: Conversation, tokenizer: Any, train_on_prompt: bool, mask_history: bool,
               enable_thinking: bool, preserve_thinking: bool) -> tuple[list[int], list[int]]:
    if train_on_prompt and mask_history:
        raise SftlabError("LLaMA-Factory refuses mask_history together with train_on_prompt")
    eos_id = _lf_eos(template, tokenizer, conv)
    system, turns = _lf_turns(conv, template)
    discard = mask_history and not preserve_thinking
    if template.reasoning:
        turns = _drop_thoughts(turns, enable_thinking, discard)
    encoded = [_lf_ids(tokenizer, _lf_elements(template, i, t, system, conv.tools), eos_id) for i, t in enumerate(turns)]
    if template.reasoning:
        _empty_thoughts(encoded, turns, tokenizer, enable_thinking, discard)
    input_ids: list[int] = []
    labels: list[int] = []
    pairs = len(encoded) // 2
    for k in range(pairs):  # supervised.py _encode_data_example, without cutoff_len
        source, target = encoded[2 * k], encoded[2 * k + 1]
        input_ids += source + target
        labels += source if train_on_prompt else [IGNORE] * len(source)
        labels += [IGNORE] * len(target) if mask_history and k != pairs - 1 else target
    return input_ids, labels


def _lf_eos(template: LfTemplate, tokenizer: Any, conv: Conversation) -> int | None:
    """The EOS id LLaMA-Factory's slots write, after fix_special_tokens (replace_eos: the first stop word). A stop
    word the tokenizer lacks is added as a new token (Llama 3.0 has no <|eom_id|>): that changes nothing in a
    conversation that never spells it, and cannot be reproduced in one that does."""
    text = json.dumps(conv.to_dict(), ensure_ascii=False)
    for k, word in enumerate(template.stop_words):
        if len(tokenizer.encode(word, add_special_tokens=False, split_special_tokens=False)) == 1:
            continue
        writes_eos = EOS in template.assistant + template.user + template.system
        if word in text or (k == 0 and template.replace_eos and writes_eos):
            raise SftlabError(f"LLaMA-Factory's template '{template.name}' adds {word} to this tokenizer as a new "
                              "token, which cannot be reproduced here")
    if template.replace_eos:
        return tokenizer.convert_tokens_to_ids(template.stop_words[0])
    return tokenizer.eos_token_id


def _lf_elements(t: LfTemplate, i: int, turn: dict[str, str], system: str, tools: Any) -> list[Slot]:
    """Template._encode (Llama2Template._encode where the system goes into the first user message)."""
    out: list[Slot] = []
    system_text = ""
    if i == 0:
        out += t.prefix
        system = system or t.default_system
        if system or tools:
            tool_text = _lf_tool_text(t.tool_format, tools) if tools else ""
            written = _fill(t.system, content=system + tool_text)
            if t.system_in_first_user:
                system_text = written[0]
            else:
                out += written
    role, content = turn["role"], turn["content"]
    if role == "user":
        return out + _fill(t.user, content=system_text + content, idx=str(i // 2))
    if role == "assistant":
        return out + _fill(t.assistant, content=content)
    if role == "observation":
        return out + _fill(t.observation_slots, content=content)
    return out + _fill(t.function_slots, content=content)


def _lf_ids(tokenizer: Any, elements: list[Slot], eos_id: int | None) -> list[int]:
    """Template._convert_elements_to_ids: each text slot tokenized on its own (so tokens never merge across slots)."""
    ids: list[int] = []
    for e in elements:
        if isinstance(e, str):
            if e:
                ids += tokenizer.encode(e, add_special_tokens=False, split_special_tokens=False)
        elif e == BOS and tokenizer.bos_token_id is not None:
            ids.append(tokenizer.bos_token_id)
        elif e == EOS and eos_id is not None:
            ids.append(eos_id)
    return ids


def _remove_thought(content: str) -> str:
    """Template.remove_thought."""
    return re.sub(f"{re.escape(THOUGHT[0])}(.*?){re.escape(THOUGHT[1])}", "", content, flags=re.DOTALL).lstrip("\n")


def _drop_thoughts(turns: list[dict[str, str]], enable_thinking: bool, discard_history: bool) -> list[dict[str, str]]:
    """ReasoningTemplate.encode_multiturn: traces removed from every answer (thinking off) or from all but the
    last (mask_history without preserve_thinking)."""
    turns = [dict(t) for t in turns]
    for i in range(1, len(turns), 2):
        if not enable_thinking or (discard_history and i < len(turns) - 2):
            turns[i]["content"] = _remove_thought(turns[i]["content"])
    return turns


def _empty_thoughts(encoded: list[list[int]], turns: list[dict[str, str]], tokenizer: Any, enable_thinking: bool,
                    discard_history: bool) -> None:
    """ReasoningTemplate.encode_multiturn: an answer without a trace gets an empty one, trained (thinking on) or
    in the prompt (thinking off); with history discarded only the last answer does."""
    empty = tokenizer.encode(THOUGHT[0] + THOUGHT[1], add_special_tokens=False, split_special_tokens=False)
    for i in ([len(turns) - 2] if discard_history else range(0, len(turns), 2)):
        answer = turns[i + 1]["content"]
        if THOUGHT[0].strip() in answer or THOUGHT[1].strip() in answer:
            continue
        if enable_thinking:
            encoded[i + 1] = empty + encoded[i + 1]
        else:
            encoded[i] = encoded[i] + empty


# --- axolotl ------------------------------------------------------------------------------------------------------

# src/axolotl/utils/chat_templates/templates/<name>.jinja, as they are there; tokenizer_default: the model's own.
AXOLOTL: dict[str, str | None] = {
    "chatml": (
        "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
        " + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}\n"),
    "llama3": (
        "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% if message['content'] is string %}"
        "{% set message_text = message['content'] | trim %}{% else %}{% set message_text = message['content'] | "
        "selectattr('text', 'defined') | map(attribute='text') | join('') | trim %}{% endif %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message_text + "
        "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
        "{% endif %}\n"),
    "phi_3": (
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'system') %}{{'<|system|>' + '\n' + "
        "message['content'] + '<|end|>' + '\n'}}{% elif (message['role'] == 'user') %}{{'<|user|>' + '\n' + "
        "message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}{% elif message['role'] == 'assistant' %}"
        "{{message['content'] + '<|end|>' + '\n'}}{% endif %}{% endfor %}\n"),
    "qwen_25": (
        "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
        "        {{- messages[0]['content'] }}\n    {%- else %}\n"
        "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
        "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are "
        "provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
        "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
        "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
        "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n"
        "    {%- if messages[0]['role'] == 'system' %}\n"
        "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
        "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n"
        "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == "
        "\"assistant\" and not message.tool_calls) %}\n"
        "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
        "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
        "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
        "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
        "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
        "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n"
        "            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n"
        "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
        "    {%- elif message.role == \"tool\" %}\n"
        "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
        "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
        "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
        "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
        "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
        "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"),
    "tokenizer_default": None,
}

# ChatTemplatePrompter's role mapping when `roles` is not set (chat_template.py lines 71-78).
_AXOLOTL_ROLES = {"human": "user", "user": "user", "assistant": "assistant", "gpt": "assistant", "system": "system",
                  "tool": "tool"}
TRAIN_ON_EOS = ("all", "turn", "last", "none")


@dataclass
class _Axolotl:
    """ChatTemplateStrategy's settings (StrategyLoader._get_strategy_params gives the defaults)."""

    template: str
    roles_to_train: list[str] = field(default_factory=lambda: ["assistant"])
    train_on_eos: str = "turn"
    train_on_eot: str | None = None
    eot_tokens: list[str] | None = None
    train_on_inputs: bool = False


def _axolotl_encode(s: _Axolotl, conv: Conversation, tokenizer: Any) -> tuple[list[int], list[int]]:
    for name in (s.train_on_eos, s.train_on_eot):
        if name is not None and name not in TRAIN_ON_EOS:
            raise SftlabError(f"axolotl's train_on_eos / train_on_eot must be one of {', '.join(TRAIN_ON_EOS)}, "
                              f"got '{name}'")
    train_on_eot = s.train_on_eot if s.train_on_eot is not None else s.train_on_eos
    roles = [_AXOLOTL_ROLES.get(r, r) for r in s.roles_to_train]
    eot_ids = _axolotl_eot_ids(s, tokenizer, train_on_eot)
    turns = [_axolotl_turn(m) for m in conv.messages]
    tools = conv.tools or None
    ids = _axolotl_render(tokenizer, s.template, turns, tools)
    labels = [IGNORE] * len(ids)
    last = {"EOT": -1, "EOS": -1}
    for index, turn in enumerate(turns):
        trained = s.train_on_inputs or turn["role"] in roles
        if not trained and s.train_on_eos != "all" and train_on_eot != "all":
            continue
        start, end = _find_turn(tokenizer, s.template, turns, index, tools)
        if trained and start != -1 and end != -1:
            labels[start:end] = ids[start:end]
        for kind, wanted, option in (("EOT", eot_ids, train_on_eot), ("EOS", {tokenizer.eos_token_id}, s.train_on_eos)):
            at = next((i for i in range(end, len(ids)) if ids[i] in wanted), -1)
            if at != -1 and abs(at - end) <= 3:  # "Allow for some template padding"
                last[kind] = at
                if option == "all" or (option == "turn" and trained):
                    labels[at] = ids[at]
    for kind, option in (("EOT", train_on_eot), ("EOS", s.train_on_eos)):
        if option == "last" and last[kind] != -1:
            labels[last[kind]] = ids[last[kind]]
    return ids, labels


def _axolotl_eot_ids(s: _Axolotl, tokenizer: Any, train_on_eot: str | None) -> set[int]:
    """ChatTemplateStrategy.__init__ and _validate_eot_and_eos_tokens: the end-of-turn ids searched after a turn."""
    eot = list(s.eot_tokens) if s.eot_tokens is not None else [tokenizer.eos_token]
    source = s.template or ""
    if not (len(eot) == 1 and eot[0] == tokenizer.eos_token):
        eot = [t for t in eot if t in source]
        for token in eot:
            if len(tokenizer.encode(token, add_special_tokens=False)) != 1:
                raise SftlabError(f"axolotl refuses eot_tokens entry {token}: this tokenizer splits it into several "
                                  "tokens")
        if tokenizer.eos_token in eot and s.train_on_eos != train_on_eot:
            raise SftlabError("axolotl refuses train_on_eos and train_on_eot that differ while the EOS token is one "
                              "of eot_tokens")
    ids = set()
    for token in eot:
        found = tokenizer.encode(token, add_special_tokens=False)
        if len(found) == 1:
            ids.add(found[0])
    return ids


def _axolotl_turn(m: Message) -> dict[str, Any]:
    """A message as axolotl's messages data gives it: role, content, reasoning as `reasoning_content` (the field it
    maps by default), tool calls and names as they are."""
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.reasoning is not None:
        d["reasoning_content"] = m.reasoning
    for key in ("tool_calls", "name", "tool_call_id"):
        if getattr(m, key):
            d[key] = getattr(m, key)
    return d


def _axolotl_render(tokenizer: Any, template: str, turns: list[dict[str, Any]], tools: Any,
                    real_last_index: int | None = None) -> list[int]:
    """ChatTemplatePrompter.build_prompt: the ids of apply_chat_template."""
    kwargs: dict[str, Any] = {"chat_template": template, "add_generation_prompt": False}
    if tools:
        kwargs["tools"] = tools
    if real_last_index:
        kwargs["real_last_index"] = real_last_index
    return list(tokenizer.apply_chat_template(turns, tokenize=True, return_dict=False, **kwargs))


def _find_turn(tokenizer: Any, template: str, turns: list[dict[str, Any]], index: int, tools: Any) -> tuple[int, int]:
    """ChatTemplateStrategy.find_turn: the turn's token range, where its ids differ from the same conversation whose
    turn reads "[[dummy_message]]"."""
    if index == 0 and turns[0]["role"] == "system" and "mistral" in str(tokenizer.name_or_path).lower():
        return -1, -1
    dummy = turns[:index] + [{"role": turns[index]["role"], "content": "[[dummy_message]]"}]
    dummy_ids = _axolotl_render(tokenizer, template, dummy, tools, len(turns) - 1)
    full_ids = _axolotl_render(tokenizer, template, turns[: index + 1], tools, len(turns) - 1)
    if not dummy_ids or not full_ids:
        return -1, -1
    shortest = min(len(dummy_ids), len(full_ids))
    start = next((i for i in range(shortest) if dummy_ids[i] != full_ids[i]), None)
    back = next((i for i in range(shortest) if dummy_ids[-1 - i] != full_ids[-1 - i]), None)
    if start is None or back is None:
        return -1, -1
    end = len(full_ids) - back
    return (start, end) if end > start else (-1, -1)


# --- TRL ----------------------------------------------------------------------------------------------------------

TRL_TEMPLATES = ("model",)


def _trl_encode(conv: Conversation, tokenizer: Any, assistant_only_loss: bool) -> tuple[list[int], list[int]]:
    """SFTTrainer's tokenize_fn for a conversational row: the model's own template; every token trained, or with
    assistant_only_loss only the tokens inside the template's {% generation %} blocks."""
    source = getattr(tokenizer, "chat_template", None)
    if not isinstance(source, str) or not source:
        raise SftlabError("TRL needs the model's own chat template, and this tokenizer has none")
    if assistant_only_loss and not re.search(r"\{%-?\s*generation\s*-?%\}", source):
        raise SftlabError("for assistant_only_loss TRL swaps in a training template of its own, because the model's "
                          "template has no {% generation %} markers; that template is not reproduced here")
    turns = [_axolotl_turn(m) for m in conv.messages]
    kwargs: dict[str, Any] = {"tools": conv.tools} if conv.tools else {}
    out = tokenizer.apply_chat_template(turns, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=assistant_only_loss, **kwargs)
    ids = list(out["input_ids"])
    if not assistant_only_loss:
        return ids, list(ids)
    mask = out["assistant_masks"]
    return ids, [t if bit else IGNORE for t, bit in zip(ids, mask)]


# --- one entry point ------------------------------------------------------------------------------------------------

def template_names(tool: str) -> tuple[str, ...]:
    """The template names of `tool` this module reproduces."""
    return {"llamafactory": tuple(LLAMAFACTORY), "axolotl": tuple(AXOLOTL), "trl": TRL_TEMPLATES}.get(tool, ())


# Each tool's own options (the keyword arguments of encode_as_source); any other given is refused.
_OPTIONS = {
    "llamafactory": {"train_on_prompt", "mask_history", "enable_thinking", "preserve_thinking"},
    "axolotl": {"train_on_prompt", "roles_to_train", "train_on_eos", "train_on_eot", "eot_tokens"},
    "trl": {"assistant_only_loss"},
}


def encode_as_source(tool: str, template_name: str, conversation: Conversation, tokenizer: Any, *,
                     train_on_prompt: bool | None = None, mask_history: bool | None = None,
                     roles_to_train: list[str] | None = None, train_on_eos: str | None = None,
                     train_on_eot: str | None = None, eot_tokens: list[str] | None = None,
                     enable_thinking: bool | None = None, preserve_thinking: bool | None = None,
                     assistant_only_loss: bool | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, labels) that `tool` ("llamafactory", "axolotl" or "trl") trains on `conversation` with its
    template `template_name` and these options (None: the tool's default; train_on_prompt is LLaMA-Factory's
    `train_on_prompt` and axolotl's `train_on_inputs`). Raises SftlabError for what is not reproduced, SourceSkips
    for a conversation the tool leaves out."""
    given = {k: v for k, v in dict(train_on_prompt=train_on_prompt, mask_history=mask_history,
                                    roles_to_train=roles_to_train, train_on_eos=train_on_eos, train_on_eot=train_on_eot,
                                    eot_tokens=eot_tokens, enable_thinking=enable_thinking,
                                    preserve_thinking=preserve_thinking,
                                    assistant_only_loss=assistant_only_loss).items() if v is not None}
    _check_names(tool, template_name, given)
    if conversation.is_text:
        raise SftlabError(f"{TOOL_NAMES[tool]}'s chat templates are not used for plain-text rows")
    if tool == "llamafactory":
        return _lf_encode(LLAMAFACTORY[template_name], conversation, tokenizer, bool(train_on_prompt),
                          bool(mask_history), enable_thinking is not False, bool(preserve_thinking))
    if tool == "axolotl":
        return _axolotl_encode(_axolotl_settings(template_name, tokenizer, given), conversation, tokenizer)
    return _trl_encode(conversation, tokenizer, bool(assistant_only_loss))


def _check_names(tool: str, template_name: str, given: dict[str, Any]) -> None:
    if tool not in TOOLS:
        raise SftlabError(f"unknown tool '{tool}'; expected one of {', '.join(TOOLS)}")
    if template_name not in template_names(tool):
        raise SftlabError(f"{TOOL_NAMES[tool]}'s template '{template_name}' is not reproduced here (known: "
                          f"{', '.join(template_names(tool))})")
    foreign = sorted(set(given) - _OPTIONS[tool])
    if foreign:
        raise SftlabError(f"{', '.join(foreign)} {'is not an option' if len(foreign) == 1 else 'are not options'} "
                          f"of {TOOL_NAMES[tool]}")


def _axolotl_settings(template_name: str, tokenizer: Any, given: dict[str, Any]) -> _Axolotl:
    source = AXOLOTL[template_name]
    if source is None:  # get_chat_template's tokenizer_default
        source = getattr(tokenizer, "chat_template", None)
        if not isinstance(source, str) or not source:
            raise SftlabError("axolotl's chat_template tokenizer_default needs the model's own chat template, and this "
                              "tokenizer has none")
    settings = _Axolotl(source)
    options = dict(given)
    if "train_on_prompt" in options:
        options["train_on_inputs"] = options.pop("train_on_prompt")
    return replace(settings, **options)

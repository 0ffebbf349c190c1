"""An exported GGUF checked against the model it came from, and the figures for export_report.json.

Always: the file read back (gguf's GGUFReader) holds the hyperparameters, a vocabulary as long as the embedding
rows, the template and stop ids expected; transformers loads it back (`gguf_file=`) and, for F16/F32, answers
greedily as the source model does (for every type, how often its top-1 token agrees along sftlab's answers is
reported). Where llama.cpp (llama-cpp-python) is importable: it tokenizes TEXTS as the Hugging Face tokenizer does,
renders the embedded template as sftlab does, treats the end-of-turn token as the end of generation, and its greedy
answers equal sftlab's token for token (F16/F32) or agree top-1 at the reported rate (result.verdict says whether
that rate is normal for the type). Whatever differs is a SftlabError naming it, never a silent file.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError
from sftlab.export.arch import Architecture

# English, Chinese, emoji, code, whitespace and special-token text (the last built from the tokenizer's own tokens).
TEXTS = [
    "Hello world! How are you today? I'm fine, thanks.",
    "The quick brown fox jumps over the lazy dog in 2024, at 3.14 km/h.",
    "你好，世界！我是一个语言模型，今天天气很好。",
    "机器学习是人工智能的一个分支。它使用数据来训练模型。",
    "Emoji: 🚀🦙 👩‍💻 ✅ 😶‍🌫️ and a mix: 日本語 한국어 Ελληνικά",
    "def add(a, b):\n    return a + b  # sum\n\nprint(add(1, 2))",
    "  leading spaces,\ttabs\t\tand\n\n\nnewlines   \n",
    "'''quotes''' \"double\" ``` code ``` !!!??? ...",
]

# Questions an identity fine-tune answers (the demo's among them), in English and Chinese.
PROMPTS = [
    "Who are you?", "你是谁？", "What is your name?", "你叫什么名字？", "Who made you?", "谁创造了你？",
    "What can you do?", "你能做什么？", "Tell me about yourself.", "介绍一下你自己。", "What is 2 + 2?",
    "用一句话解释什么是机器学习。",
]


class Mismatch(SftlabError):
    """The exported file does not behave as the source model."""


def special_texts(source: Any) -> list[str]:
    """Texts that hold the template's markers as special tokens, as a rendered prompt does."""
    tok = source.tokenizer
    specials = [s for s in (source.end_of_turn, tok.bos_token, tok.eos_token) if s]
    markers = source.chat.markers() if source.chat is not None else []
    pieces = [m for m in markers if m in tok.get_vocab()] + specials
    if not pieces:
        return []
    return [f"{pieces[0]}user\nhello{pieces[-1]}", "".join(f"{p} text {i}" for i, p in enumerate(pieces))]


def conversations() -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": p}] for p in PROMPTS]


# A tool conversation as a chat request sends it (OpenAI shape): a call, its result, the answer, another question.
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                         "required": ["city"]}}}]
TOOL_CONVERSATION = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "22 C, sunny"},
    {"role": "assistant", "content": "22 C and sunny."},
    {"role": "user", "content": "天气怎么样？"},
]


def tool_conversation_check(source: Any, llm: Any) -> dict[str, Any] | None:
    """Whether llama.cpp's chat handling of the GGUF renders TOOL_CONVERSATION (with TOOLS) as transformers renders
    the model's template; None where that template does not render tool conversations."""
    from sftlab.export import llama_runtime as rt

    try:
        want = source.chat.render(TOOL_CONVERSATION, tools=TOOLS, add_generation_prompt=True)
    except SftlabError:
        return None
    got = rt.render(llm, TOOL_CONVERSATION, TOOLS)
    out: dict[str, Any] = {"rendered_equal": got == want, "writes_tools": TOOLS[0]["function"]["name"] in want}
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        out["first_difference"] = {"llama_cpp": got[max(0, at - 20):at + 40], "transformers": want[max(0, at - 20):at + 40]}
    return out


# --- the file itself -------------------------------------------------------------------------------------------


def read_back(path: Path, arch: Architecture, source: Any, vocab: Any, chat_template: str | None) -> dict[str, Any]:
    """What GGUFReader finds in the file, checked against what was meant to be written."""
    from gguf import GGUFReader, Keys

    reader = GGUFReader(str(path))

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        return None if field is None else field.contents()

    problems = []
    tokens = value("tokenizer.ggml.tokens") or []
    embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    rows = int(embd.shape[-1]) if embd is not None else None  # (GGUF lists dimensions innermost first)
    if value("general.architecture") != arch.name:
        problems.append(f"general.architecture is {value('general.architecture')!r}, not {arch.name!r}")
    if not (len(tokens) == rows == source.rows):
        problems.append(f"{len(tokens)} tokens but {rows} embedding rows (the model has {source.rows})")
    if tokens[: len(vocab.tokens)] != vocab.tokens:
        problems.append("the vocabulary differs from the one written")
    if value("tokenizer.chat_template") != chat_template:
        problems.append("tokenizer.chat_template differs from the model's template")
    for kind, token_id in vocab.special.items():
        key = getattr(Keys.Tokenizer, f"{kind.upper()}_ID")
        if value(key) != token_id:
            problems.append(f"{key} is {value(key)}, not {token_id}")
    if bool(value("tokenizer.ggml.add_bos_token")) != vocab.add_bos:
        problems.append("tokenizer.ggml.add_bos_token differs from the tokenizer's rule")
    blocks = value(f"{arch.name}.block_count")
    expected_blocks = getattr(source.model.config, arch.block_count)
    if blocks != expected_blocks:
        problems.append(f"{arch.name}.block_count is {blocks}, not {expected_blocks}")
    if problems:
        raise Mismatch(f"{path.name} read back wrong: " + "; ".join(problems))
    by_type = collections.Counter(t.tensor_type.name for t in reader.tensors)
    return {"tensors": len(reader.tensors), "tensors_by_type": dict(sorted(by_type.items())),
            "types": {t.name: t.tensor_type.name for t in reader.tensors},
            "context_length": value(f"{arch.name}.context_length")}


def k_fallbacks(types: dict[str, str]) -> list[dict[str, str]]:
    """Matrices a K-quant left in another type (a row length that is not a multiple of 256, as SmolLM2's 576)."""
    return [{"tensor": name, "got": kind} for name, kind in types.items()
            if kind not in ("F32",) and not kind.endswith("_K")]


# --- answers ---------------------------------------------------------------------------------------------------


def reference_answers(generator: Any, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """sftlab's greedy answers (fp32, the chat's stop tokens), one prompt at a time so no padding is involved."""
    import torch

    out = []
    for ids in prompts:
        inputs = torch.tensor([ids])
        with torch.no_grad():
            seq = generator.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                                           **generator.kwargs(max_new_tokens=max_new_tokens, do_sample=False))
        out.append(seq[0, len(ids):].tolist())
    return out


def transformers_check(path: Path, arch: Architecture, context: int, prompts: list[list[int]], expected: list[list[int]],
                       exact: bool, max_new_tokens: int, stop_ids: list[int], pad_id: int) -> dict[str, Any]:
    """transformers loads the GGUF back (dequantized) and answers the prompts greedily."""
    import torch
    from transformers import AutoModelForCausalLM

    from sftlab.models import gguf_progress

    extra = arch.reader_options(context)
    try:
        with gguf_progress():
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                         **extra).eval()
    except Exception as e:  # noqa: BLE001 - whatever transformers trips on, the file does not load
        raise Mismatch(f"transformers cannot load {path.name} back: {e}") from None
    same = agree = total = 0
    for i, (ids, want) in enumerate(zip(prompts, expected)):
        inputs = torch.tensor([ids])
        with torch.no_grad():
            got = model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), eos_token_id=stop_ids,
                                 pad_token_id=pad_id, max_new_tokens=max_new_tokens, do_sample=False)[0, len(ids):]
            # (teacher-forced along sftlab's answer: one early flip does not make the rest of the answer differ)
            top1 = model(torch.tensor([ids + want])).logits[0, len(ids) - 1: len(ids) - 1 + len(want)].argmax(-1)
        same += got.tolist() == want
        agree += sum(a == b for a, b in zip(top1.tolist(), want))
        total += len(want)
    if exact and same != len(prompts):
        raise Mismatch(f"transformers, loading {path.name} back, answers {len(prompts) - same} of {len(prompts)} "
                       "prompts differently from the source model")
    return {"greedy_equal": same, "of": len(prompts), "top1_agreement": round(agree / total, 4) if total else None}


def llama_cpp_check(path: Path, source: Any, vocab: Any, generator: Any, prompts: list[list[int]],
                    expected: list[list[int]], exact: bool, max_new_tokens: int) -> dict[str, Any]:
    """llama.cpp's tokenization, rendered prompts, end-of-generation tokens and answers against sftlab's."""
    from sftlab.export import llama_runtime as rt

    longest = max((len(p) + len(a) for p, a in zip(prompts, expected)), default=0)
    llm = rt.open_gguf(str(path), n_ctx=max(256, longest + max_new_tokens + 8))
    try:
        return _llama_cpp_check(llm, source, vocab, generator, prompts, expected, exact, max_new_tokens)
    finally:
        llm.close()  # (now: at interpreter exit llama-cpp-python's finaliser fails noisily)


def _llama_cpp_check(llm: Any, source: Any, vocab: Any, generator: Any, prompts: list[list[int]],
                     expected: list[list[int]], exact: bool, max_new_tokens: int) -> dict[str, Any]:
    from sftlab.export import llama_runtime as rt
    from sftlab.inference.generate import complete_text

    tok = source.tokenizer
    report: dict[str, Any] = {}

    # A SentencePiece vocabulary without a space prefix (vocab._space_prefix: the template starts with a special
    # token) is compared on texts as its prompts hold them: after a special token.
    lead = tok.bos_token if vocab.model == "llama" and not vocab.add_space_prefix else ""
    texts = [lead + t for t in TEXTS] + special_texts(source)
    wrong = [t for t in texts if rt.tokenize(llm, t) != tok.encode(t, add_special_tokens=False)]
    if wrong:
        t = wrong[0]
        raise Mismatch(f"llama.cpp tokenizes {len(wrong)} of {len(texts)} texts differently from the Hugging Face "
                       f"tokenizer; first {t[:40]!r}: llama.cpp {rt.tokenize(llm, t)[:12]} vs "
                       f"{tok.encode(t, add_special_tokens=False)[:12]}")
    with_bos = rt.tokenize(llm, TEXTS[0], add_bos=vocab.add_bos)
    meant = ([tok.bos_token_id] if vocab.add_bos else []) + tok.encode(TEXTS[0], add_special_tokens=False)
    if with_bos[:2] != meant[:2] and not lead:
        raise Mismatch("llama.cpp adds special tokens to a text differently from the BOS rule of the export")
    if (with_bos[:1] == [tok.bos_token_id]) != vocab.add_bos:
        raise Mismatch("llama.cpp's BOS rule differs from the Hugging Face tokenizer's")
    report["tokenization"] = {"texts": len(texts), "equal": len(texts), "after_special_token": bool(lead)}

    stops = sorted({i for i in source.stop_ids if i is not None})
    not_eog = [i for i in stops if not rt.is_eog(llm, i)]
    if not_eog:
        raise Mismatch(f"llama.cpp does not end generation at {[tok.convert_ids_to_tokens(i) for i in not_eog]}, which "
                       "sftlab stops at")
    report["end_of_generation"] = {"ids": stops, "tokens": tok.convert_ids_to_tokens(stops)}

    if source.chat is not None:
        convs = conversations() + [[{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Hi"},
                                    {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "你好"}]]
        for conv in convs:
            want = source.chat.render(conv, add_generation_prompt=True)
            got = rt.render(llm, conv)
            if got != want:
                raise Mismatch(f"the template embedded in the GGUF renders {got[:80]!r} where sftlab renders "
                               f"{want[:80]!r}")
            if rt.tokenize(llm, got) != generator.prompt_ids(conv):
                raise Mismatch(f"llama.cpp's ids of the rendered prompt for {conv[-1]['content']!r} differ from sftlab's")
        report["template"] = {"conversations": len(convs), "rendered_equal": len(convs), "prompt_ids_equal": len(convs)}
        tools = tool_conversation_check(source, llm)
        if tools is not None:
            report["template"]["tool_conversation"] = tools

    answers, agree, total, same, ended = [], 0, 0, 0, 0
    for ids, want in zip(prompts, expected):
        got = rt.greedy(llm, ids, max_new_tokens)
        same += got == want
        ended += bool(got) and rt.is_eog(llm, got[-1])
        top1 = rt.argmax_along(llm, ids, want)
        agree += sum(a == b for a, b in zip(top1, want))
        total += len(want)
        answers.append(complete_text(tok.decode(got, skip_special_tokens=True)).strip())
        if exact and got != want:
            at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise Mismatch(f"llama.cpp's greedy answer to prompt {len(answers)} differs from sftlab's at token {at}: "
                           f"{tok.decode(got[: at + 1])!r} vs {tok.decode(want[: at + 1])!r}")
    # (an answer that has not ended within max_new_tokens in sftlab has not ended in llama.cpp either, when equal)
    reference_ended = sum(bool(w) and w[-1] in source.stop_ids for w in expected)
    report["greedy"] = {"prompts": len(prompts), "equal": same, "ended_at_end_of_generation": ended,
                        "sftlab_ended": reference_ended,
                        "top1_agreement": round(agree / total, 4) if total else None, "max_new_tokens": max_new_tokens}
    report["answers"] = answers
    return report

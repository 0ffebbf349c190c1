"""llama.cpp itself (through llama-cpp-python) reading an exported GGUF: how it tokenizes, how it renders the
embedded chat template (as `Llama.create_chat_completion` does), which tokens end generation, and its greedy
answers and logits."""

from __future__ import annotations

import os
from typing import Any, Sequence

from sftlab.export.gguf_file import quiet_native


def open_gguf(path: str, n_ctx: int = 1024) -> Any:
    """A llama.cpp model and context for a GGUF file, with logits for every position (for top-1 agreement)."""
    from llama_cpp import Llama

    with quiet_native():
        return Llama(model_path=str(path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), logits_all=True, verbose=False,
                     n_threads=os.cpu_count() or 1, seed=0)


def tokenize(llm: Any, text: str, add_bos: bool = False) -> list[int]:
    """llama.cpp's ids for `text`, special-token text parsed as special tokens (as a rendered prompt is)."""
    return list(llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))


def is_eog(llm: Any, token: int) -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), token))


def token_text(llm: Any, token: int | None) -> str:
    if token is None or token < 0:
        return ""
    return llm._model.token_get_text(token)


def render(llm: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
    """The prompt llama-cpp-python's chat completion renders from the GGUF's embedded template (with `tools` as a
    chat request gives them), BOS/EOS text taken from the GGUF's own token ids."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"],
                                    eos_token=token_text(llm, llm.token_eos()), bos_token=token_text(llm, llm.token_bos()),
                                    add_generation_prompt=True)
    return formatter(messages=messages, tools=tools).prompt


def greedy(llm: Any, prompt: Sequence[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding from `prompt` until an end-of-generation token (included) or `max_new_tokens`."""
    import numpy as np

    llm.reset()
    llm.eval(list(prompt))
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        if is_eog(llm, token):
            break
        llm.eval([token])
    return out


def argmax_along(llm: Any, prompt: Sequence[int], answer: Sequence[int]) -> list[int]:
    """llama.cpp's top-1 token at each answer position, the answer given (teacher-forced)."""
    import numpy as np

    llm.reset()
    llm.eval(list(prompt) + list(answer))
    start = len(prompt) - 1
    return [int(i) for i in np.argmax(llm.scores[start : start + len(answer)], axis=-1)]

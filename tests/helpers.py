"""What the test files share: the fixture folders, real tokenizers, a tiny random model, independently built
expected ids, the real chat templates, small builders of hostile input and a model that writes a fixed reply.
conftest.py makes the fixtures from these; a test file imports them with `from helpers import …` (tests/ is on the
path as the folder of the root conftest.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
# Real instruction data, copied from shared/data so a fresh clone tests on its own.
SHARED_DATA = FIXTURES / "data"


@lru_cache(maxsize=None)
def tokenizer(name: str):
    """Real tokenizers (Qwen2, Llama 3, Llama 2, GPT-2), converted once from the vocabulary-only GGUF files."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(FIXTURES / "tokenizers" / name))


# The run lock holder of tests/test_runlock.py and the hold_lock fixture.
HOLDER = Path(__file__).with_name("lock_holder.py")


def make_tiny_model(path: Path, tokenizer_name: str = "llama2", layers: int = 2, seed: int = 0, hidden: int = 32) -> Path:
    """A tiny randomly initialised Llama with a real tokenizer, saved like any model directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer(tokenizer_name)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path



# --- the escaping contract's expected ids, built independently (tests/test_escape.py, test_serve.py) ---


def text_ids(tok, text: str) -> list[int]:
    return tok(text, split_special_tokens=True, add_special_tokens=False)["input_ids"]


def expected(tok, parts) -> list[int]:
    """Token ids of a rendered conversation given as its parts: str = text, tokenized on its own with
    special-token recognition off; int = a marker's id."""
    out: list[int] = []
    for part in parts:
        out += [part] if isinstance(part, int) else text_ids(tok, part)
    return out


def escaped_prompt_ids(tok, messages, content: str) -> list[int]:
    """Independently: the prompt as transformers renders it, its special-token strings outside `content`
    as their ids and everything else as text."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    at = text.index(content)
    strings = sorted({a.content for a in tok.added_tokens_decoder.values() if a.special}, key=len, reverse=True)
    parts, done = [], 0
    for m in re.finditer("|".join(map(re.escape, strings)), text):
        if at <= m.start() < at + len(content):
            continue
        parts += [text[done : m.start()], tok.convert_tokens_to_ids(m.group())]
        done = m.end()
    parts.append(text[done:])
    return expected(tok, [p for p in parts if p != ""])


# --- real chat templates (tests/fixtures/templates/, from llama.cpp's models/templates/) ---------

TEMPLATES = FIXTURES / "templates"
# Markers the families' own vocabularies have as one token and these test vocabularies lack. Reasoning and tool
# markers are plain added tokens, as in Qwen3's vocabulary; the others are special (control) tokens.
TEXT_MARKERS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]


@lru_cache(maxsize=None)
def family_tokenizer(base: str):
    """`base`'s tokenizer (a copy) with every marker the fixture templates write added as one token."""
    import copy

    tok = copy.deepcopy(tokenizer(base))
    tok.add_tokens(TEXT_MARKERS, special_tokens=False)
    markers = set()
    for path in sorted(TEMPLATES.glob("*.jinja")):
        source = path.read_text(encoding="utf-8")
        markers |= set(re.findall(r"<\|[A-Za-z0-9_]+\|>|<｜[^｜]+｜>|\[/?[A-Z_]+\]|\[gMASK\]|<sop>", source))
    tok.add_tokens(sorted(markers - set(TEXT_MARKERS)), special_tokens=True)
    return tok


def real_template(name: str, tok, **special):
    """The fixture template `name` bound to `tok`'s special-token strings (or those given)."""
    from sftlab.data.templates import ChatTemplate, check_answer_span, special_token_variables

    chat = ChatTemplate((TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8"), name,
                        {**special_token_variables(tok), **special})
    check_answer_span(chat)
    return chat


# ---- helpers of the hostile-input cases (tests/test_load.py, test_files.py, test_resume.py …) ----

QWEN = str(FIXTURES / "tokenizers" / "qwen2")
ALPACA = {"instruction": "q", "input": "", "output": "a"}


def _cli(*args, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "sftlab", *args], capture_output=True, text=True, timeout=timeout, **kw)


def _lines(path, *lines: str | bytes):
    path.write_bytes(b"".join((l if isinstance(l, bytes) else l.encode()) + b"\n" for l in lines))
    return path


def _accounted(loaded) -> list[int]:
    """Every row number, from the conversations and the rejects together."""
    return sorted([c.row for c in loaded.conversations] + [r.row for r in loaded.rejects])


def _train_sets(tiny_model, out, *extra):
    return [f"model={tiny_model}", f"datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]", "template=llama2",
            "limit=8", "max_length=128", "batch_size=4", "precision=fp32", f"output_dir={out}", *extra]


def _vocab_only_gguf(path):
    """A GGUF file with a vocabulary and no tensors, as llama.cpp's ggml-vocab-*.gguf files are."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b", "ab"])
    w.add_token_types([1, 1, 1])
    w.add_token_merges(["a b"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _one_line(stderr: str) -> str:
    return " ".join(stderr.split())


# --- a model that writes a fixed reply (tests/test_serve.py, test_chat.py) ---

class Scripted:
    """`model.generate` writing `reply(prompt_text)` through the real streamer, then the end-of-turn token."""

    def __init__(self, gen, reply):
        self.gen, self.reply, self.prompts = gen, reply, []

    def __call__(self, input_ids, attention_mask=None, streamer=None, max_new_tokens=512, **kwargs):
        import torch

        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        rows = []
        for ids, keep in zip(input_ids, mask):  # a batch is left-padded (Generator.replies)
            prompt = self.gen.tokenizer.decode(ids[keep.bool()].tolist())
            self.prompts.append(prompt)
            new = self.gen.tokenizer.encode(self.reply(prompt), add_special_tokens=False)
            rows.append((new + [self.gen.stop_ids[-1]])[:max_new_tokens])
        if streamer is not None:
            streamer.put(input_ids)
            for i in rows[0]:
                streamer.put(torch.tensor([i]))
            streamer.end()
        width = max(len(r) for r in rows)
        new = torch.tensor([r + [self.gen.pad_id] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, new], dim=1)


def scripted_generator(model_dir, template, reply):
    """A Generator of the model in `model_dir` with `template` (a ChatTemplate, or a file name in TEMPLATES) whose
    forward pass is replaced by Scripted(reply): everything else — rendering, stop tokens, the streamer, decoding —
    is the real path."""
    from sftlab.data.templates import resolve_template
    from sftlab.inference.generate import Generator
    from sftlab.models import load_model, load_tokenizer

    tok = load_tokenizer(str(model_dir))
    chat = template if not isinstance(template, str) else resolve_template(str(TEMPLATES / template), tok, warn=False)
    gen = Generator(load_model(str(model_dir)), tok, chat)
    script = Scripted(gen, reply)
    gen.model.generate = script
    return gen, script

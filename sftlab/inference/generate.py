"""Generation, one way for chat, serve and eval: the prompt rendered and tokenized as training does it
(the data's special-token text kept as text), generation stopping at the template's end-of-turn token
and EOS, and text streamed without a partial character."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from sftlab.data.fields import MAX_DEPTH  # (a request's values nest as deep as a data row's may)
from sftlab.data.templates import ChatTemplate, resolve_template, with_default_system, with_template_kwargs
from sftlab.data.tokenize import TokenizerView, special_token_strings
from sftlab.defaults import EVAL_MAX_LENGTH, GREEDY_REPETITION_PENALTY
from sftlab.errors import SftlabError
from sftlab.config.checks import require
from sftlab.inference.replies import MARKERS, Reply, ReplyReader, opens_reasoning, read_reply, tool_family

log = logging.getLogger("sftlab")


class ContextExceeded(SftlabError):
    """A prompt and its answer would not fit the model's context (serve: OpenAI's context_length_exceeded)."""


# What a model's generation_config may say about picking tokens (transformers, vLLM and Ollama read the same keys).
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p")



def text_problem(value: Any, where: str = "", max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """Where `value` (JSON-like: dicts, lists, strings) cannot be rendered and tokenized, and why: ("messages[0]
    .content", "holds a lone surrogate (U+D800), …"; "" where: `value` itself), or None. A lone surrogate is no
    Unicode text: tokenizers fail on it with a TypeError and UTF-8 cannot write it (JSON's "\\ud800" and bytes that
    are not UTF-8 on a command line both give one). Iterative: the value may nest deeper than recursion goes."""
    from sftlab.errors import echo

    def key(k: Any) -> str:  # a key as a path shows it, never whole or unprintable
        return k if isinstance(k, str) and k.isidentifier() and len(k) <= 40 else echo(str(k), 40)

    def surrogate(s: str) -> str | None:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"U+{ord(s[e.start]):04X}"
        return None

    stack: list[tuple[str, Any, int]] = [(where, value, 0)]
    while stack:
        at, v, depth = stack.pop()
        if isinstance(v, dict):
            for k in v:
                bad = surrogate(k) if isinstance(k, str) else None
                if bad:
                    return at, f"holds a lone surrogate ({bad}) in a key, which is not Unicode text"
            items = [(f"{at}.{key(k)}" if at else key(k), item) for k, item in v.items()]
        elif isinstance(v, (list, tuple)):
            items = [(f"{at}[{i}]", item) for i, item in enumerate(v)]
        else:
            bad = surrogate(v) if isinstance(v, str) else None
            if bad:
                return at, f"holds a lone surrogate ({bad}), which is not Unicode text"
            continue
        if items and depth >= max_depth:
            return at, f"nests deeper than {max_depth} levels"
        stack += [(w, item, depth + 1) for w, item in reversed(items)]  # reversed: reported in document order
    return None


def _strings(value: Any) -> Iterator[str]:
    """Every string inside `value` (dicts' values, lists, tuples), iteratively."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            stack += v.values()
        elif isinstance(v, (list, tuple)):
            stack += v


def check_options(max_new_tokens: int, temperature: float | None = 0.0, top_p: float | None = 1.0,
                  repetition_penalty: float | None = None) -> None:
    """Generation options within the bounds chat, eval and serve share (sftlab/config/bounds.py), or a SftlabError
    (None: not given)."""
    require("max_new_tokens", max_new_tokens)
    require("temperature", temperature)
    require("top_p", top_p)
    require("repetition_penalty", repetition_penalty)


def sampling_options(model_config: Any, temperature: float | None = None, top_p: float | None = None,
                     repetition_penalty: float | None = None) -> dict[str, Any]:
    """How `model.generate` picks each token: what the caller gives (None: not given), else the model's own
    `generation_config` (`do_sample` with its temperature, top_p, top_k, min_p, repetition_penalty), else greedy.
    Greedy decoding gets GREEDY_REPETITION_PENALTY unless the caller or the model sets one (1 turns it off)."""
    own = {k: getattr(model_config, k, None) for k in (*SAMPLING_KEYS, "repetition_penalty")}
    own_sampling = bool(getattr(model_config, "do_sample", False)) and (own["temperature"] is None
                                                                       or own["temperature"] > 0)
    sample = temperature > 0 if temperature is not None else own_sampling
    options: dict[str, Any] = {"do_sample": sample}
    if sample:
        options.update({k: v for k, v in own.items() if k in SAMPLING_KEYS and v is not None} if own_sampling else {})
        if temperature is not None:
            options["temperature"] = temperature
        if top_p is not None:
            options["top_p"] = top_p
    else:  # the model's sampling settings would only draw "set but not used" warnings from transformers
        options.update({k: None for k in SAMPLING_KEYS})
    penalty = repetition_penalty if repetition_penalty is not None else own["repetition_penalty"]
    if penalty is None and not sample:
        penalty = GREEDY_REPETITION_PENALTY
    if penalty is not None and penalty != 1:
        options["repetition_penalty"] = penalty
    else:
        options["repetition_penalty"] = None
    return options


def stop_token_ids(model: Any, tokenizer: Any, chat: ChatTemplate | None = None) -> list[int]:
    """The ids that end an answer: the template's end-of-turn token, the tokenizer's EOS and those of the
    model's generation config."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured if isinstance(configured, list) else [configured])
    if chat is not None:
        end = chat.end_of_turn(special_token_strings(tokenizer))
        if end is not None:
            ids.add(tokenizer.convert_tokens_to_ids(end))
    return sorted(i for i in ids if i is not None)


def complete_text(text: str) -> str:
    """`text` without a trailing partial character: a byte-level tokenizer can stop in the middle of a
    character's bytes (a Chinese character is three), which decode to U+FFFD."""
    return text.rstrip("\ufffd")


@dataclass(frozen=True)
class Prompt:
    """A conversation rendered for its next answer: its token ids, and whether the template's generation prompt
    opened a reasoning trace (the reply then starts inside it)."""

    ids: list[int]
    reasoning_open: bool = False


def hidden_token_ids(tokenizer: Any) -> set[int]:
    """The special tokens a reply's text leaves out (end-of-turn, padding …): all of them but the markers a reply
    is read by (sftlab.inference.replies.MARKERS: Mistral's [TOOL_CALLS] is a special token)."""
    ids = {i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)}
    ids |= {i for i in tokenizer.all_special_ids if i is not None}
    keep = {tokenizer.convert_tokens_to_ids(m) for m in MARKERS if m in tokenizer.get_vocab()}
    return ids - keep


class Generator:
    """A model with its tokenizer and chat template, as chat, serve and eval use it."""

    def __init__(self, model: Any, tokenizer: Any, template: str | ChatTemplate | None = None, escape: bool = True,
                 bf16: bool = False, default_system: str | None = None, template_kwargs: dict[str, Any] | None = None):
        """`bf16`: generate under bf16 autocast (the weights stay fp32). `default_system`: the system prompt of a
        conversation without one, in place of the template's default (templates.with_default_system).
        `template_kwargs`: the template's options (templates.with_template_kwargs; a model trained with them has
        them in its saved template already)."""
        self.model = model.eval()
        self.bf16 = bf16
        self.tokenizer = tokenizer
        chat = template if isinstance(template, ChatTemplate) else resolve_template(template, tokenizer)
        self.chat = with_default_system(with_template_kwargs(chat, template_kwargs), default_system)
        self.tokens = TokenizerView(tokenizer, escape=escape)
        self.stop_ids = stop_token_ids(model, tokenizer, self.chat)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.hidden_ids = hidden_token_ids(tokenizer)
        self.tool_family = tool_family(self.chat.source)

    def prompt(self, messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> Prompt:
        """The conversation so far and the assistant's header, with the escaping contract: special-token text in
        the messages stays text (so no message can close its own turn). Text that is not Unicode, or values nested
        too deep, are a SftlabError naming where, before anything is rendered."""
        problem = text_problem(list(messages), "messages") or text_problem(tools, "tools")
        if problem:
            raise SftlabError(" ".join(problem))
        # No token holds more characters than the vocabulary's longest: text longer than the context's tokens can
        # hold is refused before it is tokenized (which takes seconds per megabyte).
        chars = sum(len(s) for s in _strings((messages, tools)))
        if chars > self.context * self.max_token_chars:
            raise ContextExceeded(f"this model's maximum context length is {self.context} tokens; the messages' "
                                  f"{chars} characters are more than that many tokens hold (at most "
                                  f"{self.max_token_chars} characters each)")
        rendered: list[str] = []

        def render(value: Any) -> str:
            rendered.append(self.chat.render(value[0], value[1], add_generation_prompt=True))
            return rendered[-1]

        ids = self.tokens.encode_rendered(render, (list(messages), tools))
        return Prompt(ids, opens_reasoning(rendered[-1]))

    def prompt_ids(self, messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        return self.prompt(messages, tools).ids

    def reader(self, prompt: Prompt, tool_names: Iterable[str] = ()) -> ReplyReader:
        """A reader of the reply to `prompt`: its reasoning, answer and (for these tools) tool calls."""
        return ReplyReader(self.tool_family, tool_names, prompt.reasoning_open)

    @functools.cached_property
    def max_token_chars(self) -> int:
        """The most characters one token stands for: its vocabulary's longest token (a byte-level token's string
        has one character per byte)."""
        return max((len(t) for t in self.tokenizer.get_vocab()), default=1) or 1

    @property
    def context(self) -> int:
        """The most tokens the model takes: prompt and answer together."""
        return getattr(self.model.config, "max_position_embeddings", None) or EVAL_MAX_LENGTH

    def check_room(self, prompt_tokens: int, max_new_tokens: int | None, option: str = "max_tokens") -> None:
        """Refuse (ContextExceeded) a prompt whose answer of up to `max_new_tokens` (None: not asked for; at least
        one token) would not fit the context: the model would generate past what it was trained on, or fail in the
        middle. Checked before generation: the sentence names `option`, the setting that asked for the length."""
        if prompt_tokens + (max_new_tokens or 1) <= self.context:
            return
        asked = (f"and {option} asks for {max_new_tokens} more" if max_new_tokens is not None
                 else "which leaves no room for an answer")
        raise ContextExceeded(f"this model's maximum context length is {self.context} tokens (the prompt and {option} "
                              f"together); the messages have {prompt_tokens}{' ' if max_new_tokens else ', '}{asked}")

    def autocast(self) -> Any:
        import torch

        return torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def sampling(self, temperature: float | None = None, top_p: float | None = None,
                 repetition_penalty: float | None = None) -> dict[str, Any]:
        """`sampling_options` for this model's generation_config."""
        return sampling_options(getattr(self.model, "generation_config", None), temperature, top_p, repetition_penalty)

    def kwargs(self, **options: Any) -> dict[str, Any]:
        """Keyword arguments for `model.generate`: stop tokens and padding, and the options given."""
        return {"eos_token_id": self.stop_ids, "pad_token_id": self.pad_id, **options}

    def decode(self, new_ids: Sequence[int]) -> str:
        """A reply's text: special tokens left out but the markers its reasoning and tool calls are read by."""
        kept = [i for i in new_ids if i not in self.hidden_ids]
        return complete_text(self.tokenizer.decode(kept, skip_special_tokens=False))

    def ended(self, new_ids: Sequence[int]) -> bool:
        """Whether generation stopped on a stop token."""
        return bool(new_ids) and new_ids[-1] in self.stop_ids

    def answers(self, conversations: Sequence[Sequence[dict[str, Any]]], max_new_tokens: int,
                batch_size: int) -> list[str]:
        """The answers of `replies`, without their reasoning."""
        return [r.content for r in self.replies(conversations, max_new_tokens, batch_size)]

    def replies(self, conversations: Sequence[Sequence[dict[str, Any]]], max_new_tokens: int,
                batch_size: int) -> list[Reply]:
        """Greedy replies to many conversations (reasoning apart from the answer), batched (left padding; prompts
        sorted by length so batches pad little)."""
        import torch

        rendered = [self.prompt(c) for c in conversations]
        prompts = [p.ids for p in rendered]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out = [Reply()] * len(prompts)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            width = max(len(prompts[i]) for i in idx)
            pad = [width - len(prompts[i]) for i in idx]
            ids = torch.tensor([[self.pad_id] * n + prompts[i] for n, i in zip(pad, idx)], device=self.model.device)
            mask = torch.tensor([[0] * n + [1] * (width - n) for n in pad], device=self.model.device)
            with torch.no_grad(), self.autocast():
                generated = self.model.generate(input_ids=ids, attention_mask=mask,
                                                **self.kwargs(max_new_tokens=max_new_tokens, do_sample=False))
            for i, seq in zip(idx, generated[:, width:].tolist()):
                out[i] = read_reply(self.decode(seq), reasoning_open=rendered[i].reasoning_open)
            log.info("generated %d/%d answers", min(s + batch_size, len(order)), len(order))
        return out

    def stream(self, ids: Sequence[int], done: Any = None, lock: Any = None, seed: int | None = None,
               cancel: threading.Event | None = None, **options: Any) -> Iterator[str]:
        """Generate from `ids` in a worker thread and yield text as it comes, never a partial character.
        `done(new_ids)` gets the generated ids once generation ends (`done(None, error)` if it failed); `lock` is
        held while generating, and `seed` set under it. Closing the iterator early, or setting `cancel` (from
        any thread: a client that went away), stops the generation at its next token and releases the lock."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        streamer = _streamer(self.tokenizer, self.hidden_ids)
        inputs = torch.tensor([list(ids)], device=self.model.device)
        cancelled = cancel or threading.Event()

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

        kwargs = self.kwargs(stopping_criteria=StoppingCriteriaList([Cancelled()]), **options)

        def work() -> None:
            with lock or contextlib.nullcontext(), torch.no_grad(), self.autocast():
                if seed is not None:
                    torch.manual_seed(seed)
                try:
                    out = self.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                                              streamer=streamer, **kwargs)
                except Exception as e:  # noqa: BLE001 - the stream must end, and the caller says what failed
                    streamer.end()
                    if done is not None:
                        done(None, e)
                    return
                if done is not None:
                    done(out[0, inputs.shape[1] :].tolist())

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            cancelled.set()
            worker.join()


def _streamer(tokenizer: Any, hidden_ids: Iterable[int] = ()) -> Any:
    """A TextIteratorStreamer that leaves out the `hidden_ids` (Generator.decode's text, as it comes) and drops a
    partial character at the end of the stream (during generation the streamer holds text back until a space or a
    whole CJK character, but at the end it flushes all)."""
    import torch
    from transformers import TextIteratorStreamer

    hidden_ids = set(hidden_ids)

    class Streamer(TextIteratorStreamer):
        def put(self, value: Any) -> None:
            if self.skip_prompt and self.next_tokens_are_prompt:
                return super().put(value)
            kept = [i for i in value.reshape(-1).tolist() if i not in hidden_ids]
            if kept:
                super().put(torch.tensor(kept))

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            super().on_finalized_text(complete_text(text) if stream_end else text, stream_end)

    return Streamer(tokenizer, skip_prompt=True, skip_special_tokens=False)


def save_generation_config(model: Any, tokenizer: Any, chat: ChatTemplate | None, out: Any) -> None:
    """generation_config.json in `out` that stops where the template ends a turn: `eos_token_id` lists the
    template's end-of-turn token and the tokenizer's EOS (transformers, vLLM and llama.cpp read it)."""
    import copy

    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    config.eos_token_id = stop_token_ids(model, tokenizer, chat)
    config.pad_token_id = tokenizer.pad_token_id
    config.save_pretrained(str(out))


def load_generator(model: str | None, template: str | None = None, escape: bool = True,
                   precision: str = "auto", default_system: str | None = None,
                   template_kwargs: dict[str, Any] | None = None) -> Generator:
    """A model argument's model and tokenizer on the best device, ready to generate; `precision` auto | bf16 |
    fp32 (auto: bf16 where it is measured faster, as in training)."""
    from sftlab.machine.hardware import pick_device, use_bf16
    from sftlab.models import head_task, load_model, load_tokenizer, model_path

    path = model_path(model)
    task = head_task(path)
    if task:
        raise SftlabError(f"{model}: a {task} head model scores text and writes none, so it cannot chat or serve; "
                          f"score labelled data with `sftlab eval --model {model} --data FILE --out DIR`, or train a "
                          "generative model (task: sft) to answer")
    tokenizer = load_tokenizer(path)
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise SftlabError(f"{model or 'the default model'}: the tokenizer has no chat template; chat, serve and eval need "
                          "one (eval takes --template)")
    device = pick_device()
    return Generator(load_model(path).to(device), tokenizer, template, escape=escape, bf16=use_bf16(precision, device),
                     default_system=default_system, template_kwargs=template_kwargs)

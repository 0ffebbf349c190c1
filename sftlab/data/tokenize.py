"""Text → token ids, the one way sftlab does it: the tokenizer's own Rust engine (`tokenizers`), with
special-token text in the data kept as text (the escaping contract in docs/data.md "Special-token text in
your data").

A chat template writes control markers (`<|im_start|>`, `<|eot_id|>`, `</s>` …) around the messages;
tokenized as usual, the same strings *inside* a message would become the same control ids, and a
user message could end its own turn and write the assistant's. So the strings the data supplies are
rendered with each special-token string replaced by one placeholder character (private use plane
15), which no template alters; in the rendered text every special-token string left is then the
template's own. Those become their ids, and the text between them, with the data's special-token
strings put back, is tokenized with special-token recognition off (what `split_special_tokens=True`
does), piece by piece.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

# Placeholder of special-token string k: one character of the supplementary private use area A.
_PLACEHOLDER = 0xF0000
_PLACEHOLDERS = re.compile("[\U000f0000-\U000ffffd]")


def special_token_ids(tokenizer: Any) -> set[int]:
    """EOS and every added token marked special (e.g. <|im_end|>, <|eot_id|>, <|end|>)."""
    ids = set(tokenizer.all_special_ids)
    for token_id, added in tokenizer.added_tokens_decoder.items():
        if getattr(added, "special", False):
            ids.add(int(token_id))
    return ids


def special_token_strings(tokenizer: Any) -> list[str]:
    """The text of every special token (the tokenizer's named ones and added tokens marked special),
    longest first. Added tokens *not* marked special (`<think>`, `<tool_call>` in Qwen vocabularies)
    are meant to appear in content and are not among them."""
    strings = {str(t) for t in tokenizer.all_special_tokens}
    strings |= {added.content for added in tokenizer.added_tokens_decoder.values() if getattr(added, "special", False)}
    return sorted((s for s in strings if s), key=lambda s: (-len(s), s))


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer itself puts BOS in front of plain text (Llama 2 does, GPT-2 does not)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


Locate = Callable[[int], int]  # character → index of the first token that starts at or after it


@dataclass
class Revealed:
    """A text rendered from hidden strings, with the data's strings put back."""

    text: str
    markers: list[tuple[int, int]]  # the template's special-token strings: (start, end) in `text`
    _at: list[int]  # placeholder positions in the hidden text
    _shift: list[int]  # characters added to positions after each of them

    def position(self, hidden_position: int) -> int:
        """Where a position of the hidden text lies in `text` (never inside a placeholder)."""
        k = bisect.bisect_right(self._at, hidden_position)
        return hidden_position + (self._shift[k - 1] if k else 0)


class TokenizerView:
    """One tokenizer as sftlab tokenizes with it: plain texts in batches, and texts whose special-token
    strings are text except at the template's marker positions."""

    def __init__(self, tokenizer: Any, escape: bool = True):
        self.tokenizer = tokenizer
        self.escape = escape
        self.strings = special_token_strings(tokenizer)
        self._find = re.compile(_alternation(self.strings)) if self.strings else None
        self._reveal = re.compile(f"{self._find.pattern}|{_PLACEHOLDERS.pattern}" if self._find else _PLACEHOLDERS.pattern)
        self._index = {s: k for k, s in enumerate(self.strings)}
        self._literal: tuple[Any, Any] | None = None
        self._following: Any = None

    @property
    def backend(self) -> Any:
        """The Rust tokenizer, special tokens recognised. transformers shares one backend among the tokenizers
        loaded from the same files, and a call with `split_special_tokens=True` (a user's, in the same process)
        leaves it not recognising them until the next call: a template's own BOS would become the text "<s>"."""
        backend = self.tokenizer.backend_tokenizer
        if backend.encode_special_tokens:
            backend.encode_special_tokens = False  # (transformers' own default, which its next call sets again)
        return backend

    # --- finding and hiding special-token text ---------------------------------------------------------

    def spells_special(self, text: str) -> bool:
        return self._find is not None and self._find.search(text) is not None

    def special_text(self, text: str) -> list[str]:
        """The special-token strings `text` spells, in order."""
        return self._find.findall(text) if self._find is not None else []

    def special_spans(self, text: str) -> list[tuple[int, int]]:
        """Where `text` spells special-token strings: (start, end) of each."""
        return [m.span() for m in self._find.finditer(text)] if self._find is not None else []

    def hide(self, value: Any) -> tuple[Any, bool]:
        """`value` (strings, lists and dicts of them) with every special-token string replaced by its
        placeholder character, and whether anything was replaced. Dict keys and `role` stay as they are."""
        if self._find is None:
            return value, False
        changed = False

        def walk(v: Any, key: str | None = None) -> Any:
            nonlocal changed
            if isinstance(v, str):
                if key == "role" or not self._find.search(v):
                    return v
                changed = True
                return self._find.sub(lambda m: chr(_PLACEHOLDER + self._index[m.group()]), v)
            if isinstance(v, dict):
                return {k: walk(x, k) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return type(v)(walk(x) for x in v)
            return v

        out = walk(value)
        return out, changed

    def reveal(self, hidden: str) -> Revealed:
        """A text rendered from hidden strings: the data's strings back in place of their placeholders,
        and where the template's own special-token strings lie."""
        parts: list[str] = []
        markers: list[tuple[int, int]] = []
        at: list[int] = []
        shift: list[int] = []
        done = extra = 0
        for m in self._reveal.finditer(hidden):
            parts.append(hidden[done : m.start()])
            token = m.group()
            if token in self._index:
                start = m.start() + extra
                markers.append((start, start + len(token)))
                parts.append(token)
            else:
                k = ord(token) - _PLACEHOLDER
                original = self.strings[k] if k < len(self.strings) else token
                parts.append(original)
                extra += len(original) - 1
                at.append(m.start() + 1)
                shift.append(extra)
            done = m.end()
        parts.append(hidden[done:])
        return Revealed("".join(parts), markers, at, shift)

    # --- tokenizing ------------------------------------------------------------------------------------

    def encode_rendered(self, render: Callable[[Any], str], value: Any) -> list[int]:
        """Token ids of `render(value)` (a template rendering messages) under the escaping contract: special-token
        text inside `value` stays text, the template's own markers become their ids."""
        hidden = False
        if self.escape:
            value, hidden = self.hide(value)
        text = render(value)
        if not hidden:
            return self.backend.encode(text, add_special_tokens=False).ids
        real = self.reveal(text)
        return self.encode_marked(real.text, real.markers)[0].tolist()

    def encode_batch(self, texts: list[str], cuts: list[list[int]] | None = None) -> list[tuple[np.ndarray, Locate]]:
        """Token ids of plain texts (special-token strings recognised, as the tokenizer does by default). `cuts`:
        for each text, the characters where a generation prompt ends; where a token would run across one (BPE
        merging the prompt's last "\\n" with the answer's first), the text is tokenized in parts there, so the
        tokens before the cut are the prompt's own, as inference tokenizes it."""
        encodings = self.backend.encode_batch(texts, add_special_tokens=False) if texts else []
        out = []
        for k, (text, enc) in enumerate(zip(texts, encodings)):
            across = [c for c in (cuts[k] if cuts else ()) if _inside_token(enc, c)]
            out.append(self._encode_parts(text, across) if across else
                       (np.asarray(enc.ids, dtype=np.int64), _locator(enc, len(text))))
        return out

    def _encode_parts(self, text: str, cuts: list[int]) -> tuple[np.ndarray, Locate]:
        """`text` tokenized piece by piece between `cuts` (a piece after a cut as text that follows, without the
        word-start symbol a SentencePiece tokenizer gives the start of a text)."""
        bounds = [0, *sorted(set(cuts)), len(text)]
        ids: list[int] = []
        starts: list[int] = []
        for n, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            enc = (self.backend if n == 0 else self._following_engine()).encode(text[a:b], add_special_tokens=False)
            ids += enc.ids
            starts += [a + o[0] for o in enc.offsets]
        array = np.asarray(starts, dtype=np.int64)
        return np.asarray(ids, dtype=np.int64), lambda char: int(array.searchsorted(char, side="left"))

    def _following_engine(self) -> Any:
        """The tokenizer, special tokens recognised, for text that follows other text (no word-start symbol)."""
        if self._following is None:
            from tokenizers import Tokenizer

            self._following = self.backend
            pre = self.backend.pre_tokenizer
            if pre is not None and b'"prepend_scheme":"first"' in pre.__getstate__():  # (cheap: the whole JSON is MBs)
                spec = json.loads(self.backend.to_str())
                _prepend_first_to_never(spec.get("pre_tokenizer"))
                self._following = Tokenizer.from_str(json.dumps(spec))
        return self._following

    def encode_marked(self, text: str, markers: list[tuple[int, int]],
                      cuts: list[int] = ()) -> tuple[np.ndarray, Locate]:
        """Token ids of `text` where only the special-token strings at `markers` are special; everything
        between them is tokenized with special-token recognition off. `cuts` as for encode_batch: where a token
        would run across one, the text is tokenized in parts there (the same rule for every row)."""
        ids, starts, ends = self._marked(text, markers)
        across = [c for c in cuts if _crossed(starts, ends, c)]
        if across:
            # A cut is a marker of no width: the text after it is tokenized as text that follows other text.
            ids, starts, _ = self._marked(text, sorted([*markers, *((c, c) for c in across)]))
        array = np.asarray(starts, dtype=np.int64)
        return np.asarray(ids, dtype=np.int64), lambda char: int(array.searchsorted(char, side="left"))

    def start_of_token(self, text: str, markers: list[tuple[int, int]] | None, k: int) -> int | None:
        """The character where token k of `text` starts (markers as for encode_marked, None for a plain
        text), or None when it has k tokens or fewer."""
        if markers is None:
            enc = self.backend.encode(text, add_special_tokens=False)
            return enc.offsets[k][0] if len(enc.ids) > k else None
        starts = self._marked(text, markers)[1]
        return starts[k] if len(starts) > k else None

    def _marked(self, text: str, markers: list[tuple[int, int]]) -> tuple[list[int], list[int], list[int]]:
        """Ids, first and end characters of the tokens of `text` between and at `markers` (one of no width only
        separates the text on either side)."""
        # The pieces between markers, tokenized in one call per engine.
        bounds = [*markers, (len(text), len(text))]
        gaps, done = [], 0
        for start, end in bounds:
            gaps.append((done, start))
            done = end
        after = [text[a:b] for a, b in gaps[1:]]
        encodings = [self._literal_engine(True).encode(text[gaps[0][0] : gaps[0][1]], add_special_tokens=False)]
        encodings += self._literal_engine(False).encode_batch(after, add_special_tokens=False) if after else []
        ids: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        for (gap_start, _), enc, (start, end) in zip(gaps, encodings, bounds):
            ids += enc.ids
            starts += [gap_start + o[0] for o in enc.offsets]
            ends += [gap_start + o[1] for o in enc.offsets]
            if end > start:
                ids.append(self.tokenizer.convert_tokens_to_ids(text[start:end]))
                starts.append(start)
                ends.append(end)
        return ids, starts, ends

    def _literal_engine(self, at_start: bool) -> Any:
        """Copies of the Rust tokenizer that do not recognise special tokens: one for a piece at the start
        of the text, one for a piece after a marker (a SentencePiece-style tokenizer adds its word-start
        symbol only at the very start of a text, not after a special token)."""
        if self._literal is None:
            from tokenizers import Tokenizer

            spec = json.loads(self.backend.to_str())
            first = Tokenizer.from_str(json.dumps(spec))
            first.encode_special_tokens = True
            after = first
            if _prepend_first_to_never(spec.get("pre_tokenizer")):
                after = Tokenizer.from_str(json.dumps(spec))
                after.encode_special_tokens = True
            self._literal = (first, after)
        return self._literal[0] if at_start else self._literal[1]


def _alternation(strings: list[str]) -> str:
    """A regular expression matching any of `strings` (the longest where several match at a place),
    written as a trie: Llama 3 has 256 special tokens, and a flat alternation tries each of them at every
    character."""
    trie: dict[str, Any] = {}
    for s in strings:
        node = trie
        for ch in s:
            node = node.setdefault(ch, {})
        node[""] = {}

    def pattern(node: dict[str, Any]) -> str:
        ends = "" in node
        branches = [re.escape(ch) + pattern(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
        if ends:
            return f"(?:{body})?"
        return body

    return pattern(trie)


def _prepend_first_to_never(pre_tokenizer: Any) -> bool:
    """Set Metaspace pre-tokenizers with prepend_scheme "first" to "never" (in place); whether any was."""
    if not isinstance(pre_tokenizer, dict):
        return False
    if pre_tokenizer.get("type") == "Metaspace" and pre_tokenizer.get("prepend_scheme") == "first":
        pre_tokenizer["prepend_scheme"] = "never"
        return True
    found = False
    for child in pre_tokenizer.get("pretokenizers") or []:
        found = _prepend_first_to_never(child) or found
    return found


def _crossed(starts: list[int], ends: list[int], char: int) -> bool:
    """Whether a token (its first and end characters in `starts`, `ends`, in order) starts before `char` and runs
    past it."""
    k = bisect.bisect_left(starts, char) - 1
    return k >= 0 and ends[k] > char


def _inside_token(enc: Any, char: int) -> bool:
    """Whether a token of `enc` starts before `char` and runs past it."""
    token = enc.char_to_token(char)
    return token is not None and enc.offsets[token][0] < char


def _locator(enc: Any, text_length: int) -> Locate:
    """character → index of the first token whose first character is at or after it, for a
    `tokenizers` Encoding: its own char→token map for one position instead of converting every
    offset to Python, and the offsets only where no token covers the character (a normalizer
    removed it)."""
    starts: list[np.ndarray] = []

    def locate(char: int) -> int:
        if char >= text_length:
            return len(enc.ids)
        token = enc.char_to_token(char)
        if token is None:
            if not starts:
                starts.append(np.fromiter((o[0] for o in enc.offsets), dtype=np.int64, count=len(enc.ids)))
            return int(np.searchsorted(starts[0], char, side="left"))
        return token if enc.token_to_chars(token)[0] >= char else token + 1

    return locate

"""An exact fast path for byte-level BPE tokenizers: the same token ids and offsets as the
tokenizer's own Rust implementation, about twice as fast.

Hugging Face's `tokenizers` spends most of its time outside the BPE merges (Oniguruma regex,
per-token strings and offset bookkeeping), which makes tokenizing the slowest step of encoding.
tiktoken runs the same two steps, a regex split and BPE merges, much faster. The two agree on a
text when

1. both split it into the same pieces: the pattern is the tokenizer's own, and a text is only
   sent here when every character it holds is in a set whose letter/number/space classes are the
   same in both regex engines' Unicode tables (else the text goes to `tokenizers`);
2. both merge each piece the same way. `tokenizers` merges the adjacent pair with the lowest
   *merge* rank; tiktoken merges the adjacent pair whose *concatenation* has the lowest rank. We
   give each token the rank of the merge that makes it, so the two orders agree, but tiktoken can
   also join a pair that is not a merge at all (`Ġ`+`the` when only `Ġth`+`e` is) and, for a token
   made by several merges, break ties differently. So every token tiktoken returns is checked:
   a token is *clean* when tiktoken, merging its bytes on their own, ends at that token using only
   real merges of tokens made by one merge. The merges tiktoken does on a piece are exactly the
   merges it does inside each output token's bytes on their own, so a text whose tokens are all
   clean got the `tokenizers` result merge for merge (`tests/test_fastbpe.py` compares the two on
   every shipped data file and tokenizer). A text with an unclean token goes to `tokenizers`.

Cleanliness is worked out once per token id, the first time it is seen.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np

# Texts per tiktoken call: small enough that the last chunk's wait is short, large enough that the
# calls cost little.
CHUNK = 128

# GPT-2's split, which `ByteLevel(use_regex=True)` applies.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Characters whose classes (letter, number, white space, other) both engines' Unicode tables agree
# on: blocks assigned long ago, and symbol blocks where a newly assigned character is "other" in
# both. U+017F (long s) is left out because case-insensitive patterns fold it to "s".
_SAFE = (
    "\x00-\x7f\u00a0-\u017e\u0180-\u024f\u0250-\u02ff\u0300-\u036f\u0370-\u03ff\u0400-\u04ff"  # Latin, IPA, Greek, Cyrillic
    "\u0590-\u05ff\u0600-\u06ff\u0900-\u097f\u0e00-\u0e7f"  # Hebrew, Arabic, Devanagari, Thai
    "\u1100-\u11ff\u1e00-\u1eff\u2000-\u2bff"  # Hangul Jamo, Vietnamese Latin, punctuation and symbols
    "\u3000-\u303f\u3040-\u30ff\u3130-\u318f\u4e00-\u9fa5\uac00-\ud7a3"  # CJK punctuation, kana, Hangul
    "\ufb00-\ufb4f\ufe00-\ufe0f\uff00-\uffef\ufff0-\uffff\U0001f300-\U0001faff"  # ligatures, fullwidth, emoji
)
_UNSAFE = re.compile(f"[^{_SAFE}]")


def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes → printable characters map that byte-level vocabularies use."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


# Byte-level text → its bytes in one C call: each character becomes the Latin-1 character of its byte.
_BYTE_TABLE = str.maketrans({c: chr(b) for c, b in _byte_decoder().items()})


def _to_bytes(text: str) -> bytes:
    return text.translate(_BYTE_TABLE).encode("latin-1")


def _all_to_bytes(texts: list[str]) -> list[bytes]:
    """_to_bytes of many texts in one translation (a byte-level character is one byte)."""
    raw = _to_bytes("".join(texts))
    ends = np.cumsum([len(t) for t in texts]).tolist()
    return [raw[start:end] for start, end in zip([0, *ends], ends)]


@dataclass
class FastEncoding:
    """Token ids of one text and the character where each token starts (what `tokenizers` reports
    as the start of its offsets)."""

    ids: np.ndarray
    starts: np.ndarray


@dataclass
class _Job:
    ok: list[bool]
    todo: list[str]
    separator: tuple[str, int] | None
    future: Any = None
    ranks: np.ndarray | None = None

    def ready(self) -> bool:
        return self.future is None or self.future.done()


class FastBPE:
    """tiktoken with the vocabulary, merges, split pattern and added tokens of a `tokenizers` BPE."""

    def __init__(self, spec: dict[str, Any], pattern: str, nfc: bool):
        import tiktoken

        model = spec["model"]
        added = {a["content"]: a["id"] for a in spec["added_tokens"]}
        vocab = dict(zip(_all_to_bytes(list(model["vocab"])), model["vocab"].values()))
        merges = [m.split(" ", 1) if isinstance(m, str) else m for m in model["merges"]]
        sides = _all_to_bytes([side for m in merges for side in m])
        # Rank of a token = index of the first merge that makes it (single bytes: the byte value).
        rank: dict[bytes, int] = {bytes([b]): b for b in range(256)}
        self._merge_pairs: set[tuple[bytes, bytes]] = set()
        made_by: dict[bytes, int] = {}
        for i in range(len(merges)):
            left, right = sides[2 * i], sides[2 * i + 1]
            merged = left + right
            self._merge_pairs.add((left, right))
            made_by[merged] = made_by.get(merged, 0) + 1
            rank.setdefault(merged, 256 + i)
        self._multi = {t for t, n in made_by.items() if n > 1}
        next_rank = 256 + len(merges)
        for token in vocab:  # tokens no merge makes: tiktoken may join them, `tokenizers` never does
            if token not in rank:
                rank[token] = next_rank
                next_rank += 1
        specials = {}
        for content in added:
            specials[content] = next_rank
            next_rank += 1
        self._rank = rank
        self._encoding = tiktoken.Encoding(
            "sftlab-fastbpe", pat_str=pattern, mergeable_ranks=rank, special_tokens=specials
        )
        # rank → token id, byte length; and -1/0/1 = not yet known / unclean / clean.
        self._ids = np.zeros(next_rank, dtype=np.int64)
        self._byte_length = np.zeros(next_rank, dtype=np.int64)
        self._clean = np.full(next_rank, -1, dtype=np.int8)
        self._bytes_of: dict[int, bytes] = {}
        for token, r in rank.items():
            self._ids[r] = vocab.get(token, -1)
            self._byte_length[r] = len(token)
            self._bytes_of[r] = token
        self._clean[self._ids < 0] = 0  # a merge result the vocabulary lacks: never vouched for
        for content, r in specials.items():
            self._ids[r] = added[content]
            self._byte_length[r] = len(content.encode("utf-8"))
            self._clean[r] = 1
        # A byte the vocabulary lacks (a control character some vocabularies leave out) is one that
        # `tokenizers` drops: texts holding it go there.
        self._clean[:256] = [int(bytes([b]) in vocab) for b in range(256)]
        self._special_set = set(specials)
        # Added tokens to join texts with, shortest first.
        self._separators = sorted(specials.items(), key=lambda kv: len(kv[0]))[:4]
        self._nfc = nfc

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> tuple[FastBPE | None, str]:
        """The fast path for this tokenizer, or None and why it does not apply."""
        try:
            import tiktoken  # noqa: F401
        except ImportError:
            return None, "tiktoken is not installed"
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None, "not a fast (Rust) tokenizer"
        spec = json.loads(backend.to_str())
        reason = _unsupported(spec)
        if reason:
            return None, reason
        pattern = _pattern(spec["pre_tokenizer"])
        return cls(spec, pattern, nfc=spec.get("normalizer") is not None), ""

    def encode(self, texts: list[str], threads: Any = None) -> list[FastEncoding | None]:
        """Encodings of the texts this path can do exactly; None for the others."""
        chunks = [texts[i : i + CHUNK] for i in range(0, len(texts), CHUNK)]
        return self.finish(texts, [self.start(chunk, threads) for chunk in chunks])

    def start(self, texts: list[str], threads: Any = None) -> _Job:
        """Start tokenizing a chunk of texts (in a worker thread when `threads` is given; tiktoken
        releases the GIL, and the worker does nothing else, so it never waits for the GIL while
        the caller renders the next chunk). The texts go to tiktoken as one string joined by an
        added token none of them holds: text on either side of an added token is split and
        merged on its own (in `tokenizers` too), so this is one call instead of one per text."""
        ok = [self._eligible(t) for t in texts]
        todo = [t for t, good in zip(texts, ok) if good]
        separator = next((sep for sep in self._separators if not any(sep[0] in t for t in todo)), None)
        job = _Job(ok, todo, separator)
        if todo and separator is not None:
            joined = separator[0].join(todo)
            if threads is not None:
                job.future = threads.submit(self._encoding.encode_to_numpy, joined, allowed_special=self._special_set)
            else:
                job.ranks = self._encoding.encode_to_numpy(joined, allowed_special=self._special_set)
        return job

    def _arrays(self, job: _Job) -> list[np.ndarray | None]:
        """The chunk's ranks, one array per text (None where the text is not eligible)."""
        encode = self._encoding.encode_to_numpy
        parts: list[np.ndarray] | None = None
        if job.separator is not None and job.todo:
            ranks = job.future.result() if job.future is not None else job.ranks
            cuts = np.flatnonzero(ranks == job.separator[1])
            # An added token that began in one text and ended in the separator would lose a cut
            # (and `finish` checks that each text's tokens cover exactly its bytes).
            if len(cuts) == len(job.todo) - 1:
                split = np.split(ranks, cuts)
                parts = [split[0], *(p[1:] for p in split[1:])]
        if parts is None:
            parts = [encode(t, allowed_special=self._special_set) for t in job.todo]
        it = iter(parts)
        return [next(it) if good else None for good in job.ok]

    def finish(self, texts: list[str], jobs: list[_Job]) -> list[FastEncoding | None]:
        """Token ids and start characters of the texts of these jobs (in order) whose tokens are
        all clean; None for the others."""
        arrays = [a for job in jobs for a in self._arrays(job)]
        out: list[FastEncoding | None] = [None] * len(texts)
        which = [i for i, a in enumerate(arrays) if a is not None]
        if not which:
            return out
        done = [arrays[i] for i in which]
        ranks = np.concatenate(done)
        self._learn(ranks)
        counts = np.fromiter((len(a) for a in done), dtype=np.int64, count=len(done))
        ends = np.cumsum(counts)
        begins = ends - counts
        # A text is exact when all its tokens are clean and they cover all its bytes (a pattern
        # that skipped a character would lose it silently).
        unclean = np.concatenate([[0], np.cumsum(self._clean[ranks] != 1)])
        byte_at = np.concatenate([[0], np.cumsum(self._byte_length[ranks])])
        raw = [texts[i].encode("utf-8") for i in which]
        sizes = np.fromiter((len(r) for r in raw), dtype=np.int64, count=len(raw))
        good = (unclean[ends] == unclean[begins]) & (byte_at[ends] - byte_at[begins] == sizes)
        ids = self._ids[ranks]
        for k in np.flatnonzero(good).tolist():
            i, lo, hi = which[k], int(begins[k]), int(ends[k])
            token_bytes = byte_at[lo:hi] - byte_at[lo]
            if sizes[k] == len(texts[i]):  # ASCII: bytes are characters
                char_starts = token_bytes
            else:
                buf = np.frombuffer(raw[k], dtype=np.uint8)
                char_starts = (np.cumsum((buf & 0xC0) != 0x80) - 1)[token_bytes]
            out[i] = FastEncoding(ids[lo:hi], char_starts)
        return out

    # --- internals --------------------------------------------------------------------------------

    def _eligible(self, text: str) -> bool:
        if text.isascii():
            return True
        if _UNSAFE.search(text):
            return False
        return not self._nfc or unicodedata.is_normalized("NFC", text)

    def _learn(self, ranks: np.ndarray) -> None:
        unknown = ranks[self._clean[ranks] == -1]
        for r in np.unique(unknown).tolist():
            self._clean[r] = self._is_clean(self._bytes_of[r])

    def _is_clean(self, token: bytes) -> int:
        """1 when tiktoken, merging `token`'s bytes on their own, ends at `token` using only real
        merges of tokens that one merge makes (then `tokenizers` does the same merges)."""
        parts = [token[i : i + 1] for i in range(len(token))]
        rank = self._rank
        while len(parts) > 1:
            best, best_rank = -1, None
            for i in range(len(parts) - 1):
                r = rank.get(parts[i] + parts[i + 1])
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best < 0:
                return 0
            pair = (parts[best], parts[best + 1])
            merged = pair[0] + pair[1]
            if pair not in self._merge_pairs or merged in self._multi:
                return 0
            parts[best : best + 2] = [merged]
        return int(parts[0] == token)


def _pattern(pre_tokenizer: dict[str, Any]) -> str:
    if pre_tokenizer["type"] == "ByteLevel":
        return GPT2_PATTERN
    return pre_tokenizer["pretokenizers"][0]["pattern"]["Regex"]


def _unsupported(spec: dict[str, Any]) -> str:
    """Why this tokenizer is not one the fast path reproduces exactly ('' when it is)."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return "not a BPE model"
    if model.get("dropout") or model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get(
        "end_of_word_suffix"
    ):
        return "BPE with dropout, byte fallback or word affixes"
    normalizer = spec.get("normalizer")
    if normalizer is not None and normalizer.get("type") != "NFC":
        return "a normalizer other than NFC"
    pre = spec.get("pre_tokenizer") or {}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False}
    if pre.get("type") == "ByteLevel":
        if pre.get("add_prefix_space") or not pre.get("use_regex", True):
            return "a ByteLevel pre-tokenizer with a prefix space or without its split"
    elif pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 2:
        split, level = pre["pretokenizers"]
        if not (
            split.get("type") == "Split"
            and "Regex" in (split.get("pattern") or {})
            and split.get("behavior") == "Isolated"
            and not split.get("invert")
            and all(level.get(k) == v for k, v in byte_level.items())
            and level.get("use_regex") is False
        ):
            return "a pre-tokenizer other than a regex split and ByteLevel"
    else:
        return "not a byte-level pre-tokenizer"
    post = spec.get("post_processor")
    if post is not None and post.get("type") not in ("TemplateProcessing", "BertProcessing", "RobertaProcessing"):
        if not (post.get("type") == "ByteLevel" and not post.get("trim_offsets")):
            return "a post-processor that trims offsets"
    vocab = model.get("vocab") or {}
    added = spec.get("added_tokens") or []
    contents = [a["content"] for a in added]
    for a in added:
        if a.get("lstrip") or a.get("rstrip") or a.get("single_word") or not a["content"]:
            return f"added token {a['content']!r} strips spaces or matches single words"
        if a.get("normalized") and normalizer is not None and not unicodedata.is_normalized("NFC", a["content"]):
            return f"added token {a['content']!r} changes under normalization"
    joined = "\x00".join(contents)
    for c in contents:
        if joined.count(c) > 1:
            return f"added token {c!r} is part of another added token"
    merges = model.get("merges") or []
    made = {m.replace(" ", "", 1) if isinstance(m, str) else "".join(m) for m in merges}
    if len(made) < 0.99 * len(merges):
        # Vocabularies converted from tiktoken list every split of a token as a merge; where two
        # splits compete, the merge order and tiktoken's leftmost rule can disagree, and we could
        # vouch for too few tokens to gain anything.
        return "many tokens are made by several merges"
    alphabet = "".join(_byte_decoder())
    text = "".join(vocab)
    if set(text) - set(alphabet):
        return "vocabulary entries outside the byte-level alphabet"
    # (Within the alphabet, character → byte is one to one: distinct entries have distinct bytes.)
    return ""

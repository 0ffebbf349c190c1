"""The data checks: every finding names the rows (and files) it concerns, with the reason per row."""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from sftlab.defaults import DATA_CHECKS as CHECKS  # the names, in the order findings are reported
from sftlab.defaults import NEAR_DUPLICATE_THRESHOLD
from sftlab.data.units import CJK
from sftlab.quality import text
from sftlab.quality.rows import Row

SHINGLE = 3  # units per shingle (a word, or one CJK character)
NUM_PERM = 128


@dataclass
class Hit:
    file: str
    row: int
    detail: dict[str, Any]


@dataclass
class Finding:
    check: str
    hits: list[Hit] = field(default_factory=list)
    groups: list[list[tuple[str, int]]] | None = None  # duplicates: each group, its kept row first

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "check": self.check,
            "rows": [h.row for h in self.hits],
            "files": [h.file for h in self.hits],
            "details": [h.detail for h in self.hits],
        }
        if self.groups is not None:
            d["groups"] = [{"rows": [r for _, r in g], "files": [f for f, _ in g]} for g in self.groups]
        return d


def unknown_checks(names: Iterable[str]) -> list[str]:
    return [n for n in names if n not in CHECKS]


# --- row checks ------------------------------------------------------------------------------------


def _empty_response(row: Row) -> dict[str, Any] | None:
    empty = [i for i, a in enumerate(row.answers, start=1) if not a.strip()]
    if empty and not row.conversation.is_text:  # type: ignore[union-attr]
        return {"reason": "empty assistant turn" if len(row.answers) == 1 else f"empty assistant turn {empty[0]}"}
    return None


def _copies(row: Row) -> dict[str, Any] | None:
    for instruction, inp, answer in row.exchanges:
        reason = text.copies_prompt(instruction, inp, answer)
        if reason:
            return {"reason": reason}
    return None


def _language(row: Row) -> dict[str, Any] | None:
    reason = text.language_mismatch(row.prompt_parts, row.answer) if row.answer.strip() else None
    return {"reason": reason} if reason else None


def _first(check: Callable[[str], str | None], texts: Iterable[str]) -> dict[str, Any] | None:
    """The reason of the first text the check flags, and that text as the snippet (the turn flagged, not the
    row's first or last one)."""
    for t in texts:
        reason = check(t)
        if reason:
            shown = " ".join(t.split())
            return {"reason": reason, "snippet": shown if len(shown) <= 160 else shown[:159] + "…"}
    return None


def _truncated(row: Row) -> dict[str, Any] | None:
    return _first(text.truncated, row.answers)


def _placeholder(row: Row) -> dict[str, Any] | None:
    return _first(text.placeholder, (*row.prompt_parts, *row.answers))


def _refusal(row: Row) -> dict[str, Any] | None:
    # With tools, "I'm sorry, I can't book flights: my functions only …" is a correct statement of what the
    # tools allow, not a refusal to learn away; only AI disclaimers are flagged there.
    tools = bool(row.conversation.tools)  # type: ignore[union-attr]
    return _first(lambda a: text.refusal(a, with_tools=tools), row.answers)


ROW_CHECKS: dict[str, Callable[[Row], dict[str, Any] | None]] = {
    "empty_response": _empty_response,
    "response_copies_prompt": _copies,
    "language_mismatch": _language,
    "truncated_response": _truncated,
    "placeholder": _placeholder,
    "refusal": _refusal,
}
# Checks that read a prompt and an answer; continued pre-training text has neither.
_CHAT_ONLY = {"empty_response", "response_copies_prompt", "language_mismatch", "truncated_response", "refusal"}


def row_findings(rows: Sequence[Row], checks: Sequence[str]) -> dict[str, Finding]:
    found = {name: Finding(name) for name in checks if name in ROW_CHECKS}
    for row in rows:
        if row.conversation is None:
            continue
        for name, finding in found.items():
            if row.conversation.is_text and name in _CHAT_ONLY:
                continue
            detail = ROW_CHECKS[name](row)
            if detail is not None:
                finding.hits.append(Hit(row.file, row.row, {"snippet": row.snippet(), **detail}))
    return found


def invalid_rows(rows: Sequence[Row]) -> Finding:
    return Finding("invalid_row", [Hit(r.file, r.row, {"reason": r.error}) for r in rows if r.error is not None])


# --- duplicates ------------------------------------------------------------------------------------


def _exact_key(row: Row) -> bytes:
    conv = row.conversation
    assert conv is not None
    blob = "\x1e".join(
        f"{m.role}\x1f{text.normalize(m.content)}" + (f"\x1f{json.dumps(m.tool_calls, sort_keys=True)}" if m.tool_calls else "")
        + (f"\x1f{text.normalize(m.reasoning)}" if m.reasoning else "")
        for m in conv.messages
    )
    if conv.tools:
        blob += "\x1e" + json.dumps(conv.tools, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode("utf-8"), digest_size=16).digest()


def exact_duplicates(rows: Sequence[Row]) -> tuple[Finding, list[Row]]:
    """The finding, and the rows that stay for the near-duplicate search (the first of each group)."""
    groups: dict[bytes, list[Row]] = defaultdict(list)
    for row in rows:
        if row.conversation is not None:
            groups[_exact_key(row)].append(row)
    finding = Finding("exact_duplicate", groups=[])
    firsts = []
    for group in groups.values():
        firsts.append(group[0])
        if len(group) > 1:
            finding.groups.append([r.key for r in group])  # type: ignore[union-attr]
            first = group[0]
            finding.hits += [
                Hit(r.file, r.row, {"reason": f"same as row {first.row}", "duplicate_of": {"file": first.file, "row": first.row},
                                    "snippet": r.snippet()})
                for r in group[1:]
            ]
    _sort(finding)
    return finding, firsts


_SHINGLE_WORDS = re.compile(rf"[{CJK}]|[^\W_{CJK}]+")


def shingles(value: str, n: int = SHINGLE) -> set[str]:
    """Overlapping n-grams of words (every CJK character is a word of its own), punctuation left out."""
    words = _SHINGLE_WORDS.findall(value.casefold())
    if len(words) <= n:
        return {" ".join(words)} if words else set()
    return {" ".join(gram) for gram in zip(*(words[i:] for i in range(n)))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicates(
    rows: Sequence[Row], threshold: float = NEAR_DUPLICATE_THRESHOLD, progress: Callable[[int], None] | None = None
) -> Finding:
    """Groups of rows whose prompt+answer shingle sets have Jaccard similarity ≥ threshold.

    MinHash LSH (datasketch) proposes candidate pairs at a lower threshold than asked, so that pairs
    just above it are not missed by chance; every candidate pair is then confirmed with the exact
    Jaccard similarity of its shingle sets, so nothing below the threshold is reported."""
    from datasketch import MinHash, MinHashLSH

    sets = [shingles(f"{r.prompt}\n{r.answer}") for r in rows]
    lsh = MinHashLSH(threshold=max(0.3, threshold - 0.15), num_perm=NUM_PERM)
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    linked: set[int] = set()  # rows with at least one confirmed pair
    encoded = [[s.encode("utf-8") for s in shingle_set] for shingle_set in sets]
    # crc32 (C) instead of datasketch's default sha1 wrapper: the same quality for MinHash, several
    # times faster, and stable across runs.
    for i, mh in enumerate(MinHash.generator(encoded, num_perm=NUM_PERM, hashfunc=zlib.crc32)):
        if progress is not None and i % 1000 == 999:
            progress(1000)
        if not sets[i]:
            continue
        for j in lsh.query(mh):  # rows before this one: each pair is looked at once
            similarity = jaccard(sets[i], sets[j])
            if similarity >= threshold:
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
                linked.update((i, j))
        lsh.insert(i, mh)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in linked:
        groups[find(i)].append(i)
    finding = Finding("near_duplicate", groups=[])
    for members in groups.values():
        members.sort()
        first = rows[members[0]]
        finding.groups.append([rows[i].key for i in members])  # type: ignore[union-attr]
        for i in members[1:]:
            similarity = round(max(jaccard(sets[i], sets[k]) for k in members if k != i), 3)
            finding.hits.append(
                Hit(rows[i].file, rows[i].row, {
                    "reason": f"Jaccard {similarity} with row {first.row}",
                    "near_duplicate_of": {"file": first.file, "row": first.row},
                    "similarity": similarity,
                    "snippet": rows[i].snippet(),
                })
            )
    _sort(finding)
    return finding


def _sort(finding: Finding) -> None:
    finding.hits.sort(key=lambda h: (h.file, h.row))
    if finding.groups is not None:
        finding.groups.sort()


# --- length ----------------------------------------------------------------------------------------


def too_long(rows: Sequence[Row], lengths: dict[tuple[str, int], int], max_length: int) -> Finding:
    finding = Finding("too_long")
    for row in rows:
        n = lengths.get(row.key)
        if n is not None and n > max_length:
            finding.hits.append(Hit(row.file, row.row, {
                "tokens": n, "max_length": max_length,
                "reason": f"{n} tokens > max_length {max_length}: the end of the answer would be cut off",
                "snippet": row.snippet(),
            }))
    return finding


# --- special-token text ----------------------------------------------------------------------------


def special_token_text(rows: Sequence[Row], tokens: Any) -> Finding:
    """Rows whose data spells a special token of the tokenizer (`<|im_end|>` in a message): sftlab keeps it
    as text (escaping), but it is worth knowing, and it matters with escaping off."""
    finding = Finding("special_token_text")
    for row in rows:
        conv = row.conversation
        if conv is None:
            continue
        fields = [(f"messages[{i}].content", m.content) for i, m in enumerate(conv.messages)]
        fields += [(f"messages[{i}].tool_calls", json.dumps(m.tool_calls, ensure_ascii=False))
                   for i, m in enumerate(conv.messages) if m.tool_calls]
        if conv.tools:
            fields.append(("tools", json.dumps(conv.tools, ensure_ascii=False)))
        for name, value in fields:
            spelled = tokens.special_text(value)
            if spelled:
                shown = ", ".join(dict.fromkeys(spelled))
                finding.hits.append(Hit(row.file, row.row, {
                    "field": name, "tokens": sorted(set(spelled)),
                    "reason": f"{name} spells {shown} (kept as text; with escape_special_tokens: false it would be "
                              "a control token)",
                    "snippet": row.snippet(),
                }))
    return finding

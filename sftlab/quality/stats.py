"""Diversity and balance of a data set: distinct n-grams, leading words, length distributions."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

import numpy as np

from sftlab.data.units import CJK, units

_CJK = re.compile(f"[{CJK}]")
_POLITE = re.compile(r"^(?:please|kindly|can you|could you|would you|请你|请您|请|帮我|麻烦你?)\s*[,，]?\s*", re.I)
_MARKER = re.compile(r"^[\s\"'“”‘’#*\-–—:：.。,，!！?？]*(?:\d+[.)、]\s*)?[\s\"'“”‘’#*\-–—:：]*")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


def split_words(value: str) -> list[str]:
    return [u for u in units(value.casefold()) if u[0].isalnum() or _CJK.match(u[0])]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the texts (words; every CJK character is a word)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for t in texts:
        words = split_words(t)
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return round(len(seen) / total, 4) if total else 0.0


def leading_word(instruction: str) -> str | None:
    """The first word of an instruction, after "please"/"请": for English the word ("write"), for
    Chinese (no spaces) its first two characters ("写一", "生成", "解释"), which is the verb in most
    instructions."""
    s = _POLITE.sub("", _MARKER.sub("", instruction))
    if not s:
        return None
    if _CJK.match(s[0]):
        head = "".join(_CJK.findall(s[:2]))
        return head or None
    m = _WORD.match(s)
    return m.group(0).casefold() if m else None


def leading_words(instructions: Sequence[str], top: int = 15) -> list[dict[str, Any]]:
    counts = Counter(w for w in map(leading_word, instructions) if w)
    n = len(instructions) or 1
    return [{"word": w, "count": c, "fraction": round(c / n, 4)} for w, c in counts.most_common(top)]


def distribution(values: Sequence[int], bins: int = 20) -> dict[str, Any]:
    """Summary and histogram of token counts (the last bin takes everything above the 99th percentile
    so one huge row does not squash the rest)."""
    if not values:
        return {"count": 0}
    a = np.asarray(values, dtype=np.int64)
    p99 = float(np.percentile(a, 99))
    top = max(int(np.ceil(p99)), int(a.min()) + 1)
    edges = np.linspace(int(a.min()), top, bins + 1)
    counts, _ = np.histogram(np.minimum(a, top), bins=edges)
    return {
        "count": int(a.size),
        "min": int(a.min()),
        "mean": round(float(a.mean()), 1),
        "p50": int(np.percentile(a, 50)),
        "p90": int(np.percentile(a, 90)),
        "p99": int(p99),
        "max": int(a.max()),
        "histogram": {"edges": [round(float(e), 1) for e in edges], "counts": [int(c) for c in counts]},
    }


def reasoning_and_tools(rows: Sequence[Any]) -> dict[str, Any]:
    """How a data set's rows carry reasoning and tool calls (docs/reasoning-and-tools.md): the share of conversations
    with a reasoning trace, empty and unclosed traces, and tool calls whose function is not among the row's `tools` or
    whose arguments lack keys the function's schema requires (each listed with its file, row and call)."""
    from sftlab.data.reasoning import UNCLOSED_TRACE

    chats = [r for r in rows if r.conversation is not None and not r.conversation.is_text]
    with_reasoning = empty = calls = 0
    unknown: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    for r in chats:
        conv = r.conversation
        traces = [m.reasoning for m in conv.messages if m.role == "assistant" and m.reasoning is not None]
        with_reasoning += any(t.strip() for t in traces)
        empty += sum(1 for t in traces if not t.strip())
        schemas = {s["name"]: s for s in (t.get("function", t) for t in conv.tools or [])}
        for m in conv.messages:
            for call in m.tool_calls or []:
                calls += 1
                fn = call["function"]
                where = {"file": r.file, "row": r.row, "name": fn["name"]}
                if fn["name"] not in schemas:
                    unknown.append({**where, "tools": sorted(schemas)})
                    continue
                required = (schemas[fn["name"]].get("parameters") or {}).get("required") or []
                absent = [k for k in required if isinstance(k, str) and k not in (fn.get("arguments") or {})]
                if absent:
                    missing.append({**where, "missing": absent})
    unclosed = [{"file": r.file, "row": r.row} for r in rows if r.conversation is None and UNCLOSED_TRACE in (r.error or "")]
    return {"conversations": len(chats), "with_reasoning": with_reasoning,
            "reasoning_share": round(with_reasoning / len(chats), 4) if chats else 0.0,
            "empty_traces": empty, "unclosed_traces": unclosed, "tool_calls": calls,
            "unknown_tool": unknown, "missing_required_arguments": missing}

"""LLM-as-judge through any OpenAI-compatible chat-completions endpoint (Ollama, vLLM, `sftlab serve`,
a hosted API). Each response gets a score 0–100; a response that never gets one is counted as
unscored and listed, never dropped or averaged as 0."""

from __future__ import annotations

import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from sftlab.config.checks import require

PROMPT = """You are grading the answer of an AI assistant.

[Instruction]
{instruction}

[Reference answer]
{reference}

[Assistant's answer]
{response}

Rate how well the assistant's answer fulfils the instruction, judged against the reference answer
(correctness first, then completeness and clarity), on a scale from 0 (useless or wrong) to 100
(as good as the reference or better). Reply with the number only."""

# A whole number standing on its own: not part of a decimal, and not negative ("-5" is no score of 5).
_INT = re.compile(r"(?<![\d.\-−])\d+(?!\d|\.\d)")


def parse_score(text: str | None) -> int | None:
    """The first integer of the reply that lies in 0–100 (decimals, negative and out-of-range numbers are skipped)."""
    for m in _INT.finditer(text or ""):
        value = int(m.group())
        if 0 <= value <= 100:
            return value
    return None


@dataclass
class Verdict:
    score: int | None
    attempts: int
    error: str | None = None  # why it stayed unscored


@dataclass
class Judge:
    url: str
    model: str
    api_key: str | None = None
    concurrency: int = 4
    retries: int = 3  # attempts per response = 1 + retries
    timeout: float = 60.0
    backoff: float = 0.5
    _client: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        require("judge_concurrency", self.concurrency, "--judge-concurrency")
        require("judge_retries", self.retries, "--judge-retries")
        require("judge_timeout", self.timeout, "--judge-timeout")

    def client(self) -> Any:
        if self._client is None:
            import openai

            # Our own bounded retry loop covers transport errors and unparsable replies alike.
            self._client = openai.OpenAI(base_url=self.url, api_key=self.api_key or "none", max_retries=0,
                                         timeout=self.timeout)
        return self._client

    def score_one(self, instruction: str, reference: str, response: str) -> Verdict:
        prompt = PROMPT.format(instruction=instruction, reference=reference, response=response)
        error = None
        for attempt in range(1, self.retries + 2):
            try:
                reply = self.client().chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=8,
                )
                text = reply.choices[0].message.content if reply.choices else None
                score = parse_score(text)
                if score is not None:
                    return Verdict(score, attempt)
                error = f"unparsable reply {str(text)[:60]!r}"
            except Exception as e:  # noqa: BLE001 - any transport/status error is retried, then reported
                error = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            if attempt <= self.retries:
                time.sleep(self.backoff * attempt)
        return Verdict(None, self.retries + 1, error)

    def score_all(self, items: Sequence[tuple[str, str, str]]) -> list[Verdict]:
        with ThreadPoolExecutor(max(1, self.concurrency)) as pool:
            return list(pool.map(lambda it: self.score_one(*it), items))


def summarize(verdicts: Sequence[Verdict], rows: Sequence[int]) -> dict[str, Any]:
    scores = [v.score for v in verdicts if v.score is not None]
    return {
        "mean": statistics.fmean(scores) if scores else None,
        "median": statistics.median(scores) if scores else None,
        "scored": len(scores),
        "unscored": len(verdicts) - len(scores),
        "unscored_rows": [{"row": r, "reason": v.error} for r, v in zip(rows, verdicts) if v.score is None],
    }

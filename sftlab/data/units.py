"""Text as units: every CJK character (Chinese, Japanese kana, Hangul) a unit of its own, since those scripts write
no spaces; other words runs of letters/digits; punctuation marks single units; lower-cased. The unit of eval's
reference metrics and of the data check's text statistics and script checks."""

from __future__ import annotations

import re

CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_UNITS = re.compile(rf"[{CJK}]|[^\s{CJK}\W]+|[^\s\w]", re.UNICODE)


def units(text: str) -> list[str]:
    return _UNITS.findall(text.lower())

"""Text heuristics behind the row checks: scripts, refusals, placeholders, cut-off answers, echoes.

Each function looks at one string (or a prompt/answer pair) and returns a reason or None. They are
tuned to report nothing on the untouched rows of the real English and Chinese demo data and are
tested on planted problems; every pattern is a plain regular expression so a user can read why a
row was flagged.
"""

from __future__ import annotations

import re

# --- normalisation ---------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Case and whitespace folded: the key for exact duplicates."""
    return _SPACE.sub(" ", text).strip().casefold()


_PARAGRAPH = re.compile(r"[ \t]*\n[ \t]*\n\s*")
_INLINE_SPACE = re.compile(r"[ \t\r\f\v]*\n?[ \t\r\f\v]*")


def loose(text: str) -> str:
    """Spacing and the punctuation at both ends folded, paragraph breaks kept (splitting a text into
    paragraphs is a change): for "the answer is the prompt". Case is kept: "I Love Watching The Sunrise" for
    the input "i love watching the sunrise" is the change "Capitalize each word" asked for, not a copy."""
    paragraphs = _PARAGRAPH.split(text.strip())
    folded = "\n\n".join(_SPACE.sub(" ", p).strip() for p in paragraphs)
    start, end = 0, len(folded)
    while start < end and not folded[start].isalnum():
        start += 1
    while end > start and not folded[end - 1].isalnum():
        end -= 1
    return folded[start:end]


# --- scripts ---------------------------------------------------------------------------------------

_SCRIPTS = {
    "han": re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"),
    "kana": re.compile(r"[\u3040-\u30ff]"),
    "hangul": re.compile(r"[\uac00-\ud7af\u1100-\u11ff]"),
    "latin": re.compile(r"[A-Za-z\u00c0-\u024f]"),
    "cyrillic": re.compile(r"[\u0400-\u04ff]"),
    "greek": re.compile(r"[\u0370-\u03ff]"),
    "arabic": re.compile(r"[\u0600-\u06ff]"),
    "hebrew": re.compile(r"[\u0590-\u05ff]"),
    "devanagari": re.compile(r"[\u0900-\u097f]"),
    "thai": re.compile(r"[\u0e00-\u0e7f]"),
}
# A CJK character carries about as much as a short word; weigh it like three letters.
_WEIGHT = {"han": 3, "kana": 3, "hangul": 3}
_NOT_PROSE = re.compile(r"```.*?(```|$)|`[^`\n]*`|https?://\S+|\$\$.*?\$\$|\\[a-zA-Z]+", re.S)
# Below this many weighted letters a text's script is not judged (a number, a name, a code answer).
MIN_LETTERS = 12


def script_counts(text: str) -> dict[str, int]:
    """Weighted letters per writing system in the prose of a text (code, URLs and LaTeX left out).
    Japanese (kana with or without kanji) is 'japanese', Chinese is 'han'."""
    prose = _NOT_PROSE.sub(" ", text)
    counts = {name: len(rx.findall(prose)) * _WEIGHT.get(name, 1) for name, rx in _SCRIPTS.items()}
    if counts["kana"]:
        counts["japanese"] = counts.pop("kana") + counts.pop("han")
    else:
        counts.pop("kana")
    return counts


def dominant(counts: dict[str, int]) -> str | None:
    """The script with at least 60 % of the letters, or None when there are too few to tell (a number,
    a name, a code answer) or no script dominates."""
    best = max(counts, key=counts.__getitem__)
    if counts[best] < MIN_LETTERS or counts[best] < 0.6 * sum(counts.values()):
        return None
    return best


_OTHER_SCRIPT = re.compile(r"[^\x00-\u024f\u1e00-\u1eff\u2000-\u2bff\ufe00-\ufe0f\U0001f000-\U0001faff]")

# A prompt that names a language or asks for a translation may well be answered in another script.
_ASKS_FOR_LANGUAGE = re.compile(
    r"translat|interpret|in (?:english|chinese|mandarin|cantonese|japanese|korean|french|german|spanish|"
    r"italian|portuguese|russian|arabic|hindi|latin|greek)|(?:english|chinese|japanese|korean|french|german|"
    r"spanish|italian|russian|arabic|hindi|latin|greek|pinyin|romaji) (?:word|phrase|sentence|text|version|"
    r"equivalent|name|term|translation)|language|pinyin|romani[sz]|transliterat|"
    r"翻译|译成|译为|翻成|英文|英语|中文|汉语|华语|日语|日文|韩语|韩文|法语|德语|西班牙语|俄语|意大利语|拼音|外语|语言",
    re.I,
)


def language_mismatch(prompt_parts: list[str], answer: str) -> str | None:
    """The answer is written in a script the prompt does not use at all, and the prompt does not ask
    for another language. Deliberately strict: a Chinese prompt that quotes an English word may be
    answered in English, and an answer that mixes both scripts is not a mismatch."""
    if not _OTHER_SCRIPT.search(answer) and not any(_OTHER_SCRIPT.search(p) for p in prompt_parts):
        return None  # no letters but Latin ones on either side
    answer_counts = script_counts(answer)
    answer_script = dominant(answer_counts)
    if answer_script is None or any(_ASKS_FOR_LANGUAGE.search(p) for p in prompt_parts):
        return None
    prompt_counts = script_counts("\n".join(prompt_parts))
    prompt_script = dominant(prompt_counts)
    if prompt_script is None or prompt_script == answer_script or prompt_counts[answer_script]:
        return None
    if answer_counts.get(prompt_script, 0) >= 0.1 * sum(answer_counts.values()):
        return None
    return f"prompt in {prompt_script}, answer in {answer_script}"


# --- refusals --------------------------------------------------------------------------------------

# Anywhere in an answer: the boilerplate of a model talking about itself instead of answering.
_DISCLAIMER = (r"\bas an ai(?: language)? model\b|\bas a language model\b|\bi am an ai(?: language)? model\b|"
               r"\bi'm an ai(?: language)? model\b|作为一个?(?:ai|人工智能)(?:语言)?模型|我只是一个?(?:ai|人工智能)")
# "As an AI, I cannot …": a refusal in open chat, but with tools a correct statement of what they allow.
_AI_CANNOT = (r"\bas an ai(?: assistant)?,? i (?:cannot|can't|am unable|am not (?:able|capable)|do not|don't)\b|"
              r"作为一个?(?:ai|人工智能)(?:助手)?，?我(?:无法|不能|没有)")
_REFUSAL_ANYWHERE = re.compile(f"{_DISCLAIMER}|{_AI_CANNOT}", re.I)
_DISCLAIMER_ANYWHERE = re.compile(_DISCLAIMER, re.I)
# At the start of an answer: an apology that turns into "I cannot" (not an apology that is the answer,
# like a letter of apology or "sorry to hear that").
_REFUSAL_OPENING = re.compile(
    r"^\W*(?:(?:i'?m|i am) sorry|sorry|i apologi[sz]e|unfortunately)\b.{0,60}?\b(?:i|as an ai\b.{0,30}?\bi)"
    r" (?:cannot|can't|can not|am unable to|am not able to|don't have (?:access|the ability)|do not have "
    r"(?:access|the ability)|won't be able)|"
    r"^\W*i (?:cannot|can't|can not|am unable to|am not able to|won't) (?:help|assist|provide|fulfil|comply|"
    r"answer|do that|create|generate|write)|"
    r"^\W*(?:很|非常)?(?:抱歉|对不起)[，,。！!\s]*(?:[^。！？\n]{0,30}?)(?:我无法|我不能|无法|不能|您(?:并)?没有(?:给|提供|指定)|"
    r"您(?:并)?未(?:给|提供|指定)|没有(?:足够的)?(?:信息|上下文)|我不确定)|^\W*我(?:无法|不能)(?:回答|提供|帮助|完成|访问|生成|看到)",
    re.I,
)


_REFUSAL_HINTS = (" ai", "language model", "作为", "我只是")


def refusal(answer: str, with_tools: bool = False) -> str | None:
    """An AI disclaimer anywhere, or an answer that declines. `with_tools`: the conversation gives the model
    tools, where "I'm sorry, as an AI I can't book flights; my functions …" states what the tools allow
    (correct, and what such data teaches): only language-model disclaimers count there."""
    head = answer[:400]
    lowered = answer.casefold()
    anywhere = _DISCLAIMER_ANYWHERE if with_tools else _REFUSAL_ANYWHERE
    m = anywhere.search(answer) if any(h in lowered for h in _REFUSAL_HINTS) else None
    m = m or (None if with_tools else _REFUSAL_OPENING.match(head))
    return f"refusal: “{m.group(0).strip()}”" if m else None


# --- placeholders ----------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(
    r"\{\{\s*[^{}\n]{1,40}?\s*\}\}|\{%.{0,40}?%\}|\$\{[A-Za-z_][A-Za-z0-9_]*\}|<<\s*[A-Za-z_]\w*\s*>>|"
    r"\[(?:your|insert|enter|add|recipient'?s?|company|sender'?s?) [^\[\]\n]{1,30}\]|"
    r"\[(?:name|date|address|phone(?: number)?|email(?: address)?|company|city|title|position|location)\]|"
    r"[\[【〔]\s*(?:姓名|名字|你的名字|您的名字|公司名称?|日期|地址|电话|邮箱|职位|插入[^\]】〕\n]{0,20})\s*[\]】〕]",
    re.I,
)


_PLACEHOLDER_CHARS = re.compile(r"[{\[【〔<$]")


def placeholder(text: str) -> str | None:
    if not _PLACEHOLDER_CHARS.search(text):
        return None
    # Template syntax inside code is code: fenced blocks and inline `spans`. (`${p._1}`, `${a.b}` are
    # string interpolation, not placeholders: only `${identifier}` counts.)
    prose = re.sub(r"```.*?(```|$)|`[^`\n]*`", " ", text, flags=re.S)
    m = _PLACEHOLDER.search(prose)
    return f"unreplaced placeholder {m.group(0)!r}" if m else None


# --- cut-off answers -------------------------------------------------------------------------------

_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
_OPEN_CLOSE = {"(": ")", "[": "]", "{": "}", "【": "】", "《": "》", "“": "”", "「": "」"}
_FULL_TO_HALF = {"（": "(", "）": ")"}  # a full-width bracket closed by a half-width one (or back) is closed
_BRACKETS = re.compile(r"[()\[\]{}（）【】《》“”「」]")
_LIST_OR_HEADING = re.compile(r"^\s*(?:[-*+•·]|\d+[.)、]|[a-zA-Z][.)]|#+|\||>|[一二三四五六七八九十]+、)\s*")
_LATIN_OR_DIGIT = re.compile(r"[A-Za-z0-9\u00c0-\u024f]")
_ENDS_SENTENCE = re.compile(r"[.!?。！？…]")
_DANGLING = re.compile(
    r"(?:[,，、;；:：\-–—(（\[【《“]|\b(?:and|or|but|the|a|an|of|to|in|with|for|that|which|is|are|was|were|"
    r"because|such as|including|like|from|by|as|on|at|into|than|then|so|if|when|while|whose|its|their|our|my|"
    r"your|his|her|this|these|those)|[和与及或的是在把被将对从向了、])$",
    re.I,
)


def truncated(answer: str) -> str | None:
    """An answer that stops mid-sentence, inside an open code fence, or with brackets left open."""
    text = answer.rstrip()
    if not text:
        return None
    if text.count("```") % 2:
        return "unclosed code fence"
    prose = _CODE.sub(" ", text) if "`" in text else text
    brackets = [_FULL_TO_HALF.get(b, b) for b in _BRACKETS.findall(prose)]  # one pass over the text
    for o, c in _OPEN_CLOSE.items():
        if o in brackets and brackets.count(o) > brackets.count(c):
            last_open = len(brackets) - 1 - brackets[::-1].index(o)
            if c not in brackets[last_open:]:
                return f"unclosed '{o}'"
    last = text.rpartition("\n")[2].strip()
    if text.endswith("```") or not last or _LIST_OR_HEADING.match(last):
        return None
    if _DANGLING.search(last):
        return f"ends with “…{last[-20:]}”"
    # A paragraph of full sentences whose last one has no end: "… Paris. It is known for its" or
    # "……是中国的首都。它也是" (a writer who ends sentences with 。 elsewhere in the paragraph).
    tail = last[-1]
    if "\u4e00" <= tail <= "\u9fff" and "。" in last:
        return f"ends mid-sentence: “…{last[-20:]}”"
    if _LATIN_OR_DIGIT.match(tail) and _ENDS_SENTENCE.search(last[:-1]):
        if len(re.findall(r"[^\W\d_]{2,}", _ENDS_SENTENCE.split(last)[-1])) >= 3:
            return f"ends mid-sentence: “…{last[-30:]}”"
    return None


# --- the answer repeats the prompt -----------------------------------------------------------------


def copies_prompt(instruction: str, inp: str, answer: str) -> str | None:
    """The answer is the instruction or the input again (spacing and end punctuation aside), or
    begins by repeating the whole request."""
    # Cheap test first: an answer much longer than the whole prompt cannot be any of the cases below
    # except "begins by repeating", which needs the prompt to be there verbatim.
    if len(answer) > 2 * (len(instruction) + len(inp)) + 20 and instruction.strip()[:20].casefold() not in answer[:200].casefold():
        return None
    a = loose(answer)
    if not a:
        return None
    full = loose(f"{instruction}\n{inp}") if inp else loose(instruction)
    if a == loose(instruction):
        return "answer is the instruction"
    if inp and a == loose(inp):
        return "answer is the input unchanged"
    if a == full:
        return "answer is the prompt"
    if len(full) >= 20 and a.startswith(full):
        return "answer begins by repeating the whole prompt"
    return None

"""The data-check report as one self-contained HTML page (inline CSS and SVG, no script, no network)."""

from __future__ import annotations

import json
from typing import Any, Sequence

from markupsafe import Markup

from sftlab.defaults import DATA_CHECKS as CHECKS, DATA_CHECK_DESCRIPTIONS as DESCRIPTIONS
from sftlab.data.inspect import LEGEND, TOKEN_CSS, examples_html, html_page
from sftlab.quality.run import CheckResult, reasons, sample_examples

SHOWN_PER_CHECK = 200  # rows listed per finding on the page; the JSON output has all of them

_CSS = TOKEN_CSS + """
body{max-width:1200px}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
nav a{margin-right:1rem}.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem .9rem;min-width:9rem}
.card b{display:block;font-size:1.4rem}.card.bad b{color:#c62828}.card.ok b{color:#2e7d32}
table.f{border-collapse:collapse;width:100%;background:#fff;font-size:.88rem}
table.f td,table.f th{border-bottom:1px solid #eee;padding:.25rem .5rem;text-align:left;vertical-align:top}
table.f th{background:#f1f3f4}details{margin:.6rem 0}summary{cursor:pointer;font-weight:600}
.muted{color:#777}.bar{background:#64b5f6;height:.8rem;display:inline-block;border-radius:2px}
.row{background:#fff;border:1px solid #ddd;border-radius:6px;margin:.6rem 0;padding:.5rem .8rem}
.row pre{white-space:pre-wrap;word-break:break-word;margin:.3rem 0;font-size:.85rem}
.tag{display:inline-block;background:#ffebee;color:#b71c1c;border-radius:3px;padding:0 .4rem;margin-right:.3rem;font-size:.8rem}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem}svg text{font-size:11px;fill:#555}
"""


# Every fragment is a markupsafe.Markup template (the escaping Jinja2 uses): values formatted into one, and pieces
# joined with _join, are escaped unless they are Markup themselves, so no text from a data file (a row, a file name,
# a snippet) can become markup in the report.
M = Markup


def _join(parts: Any, sep: str = "") -> Markup:
    return Markup(sep).join(parts)


def _anchor(files: list[str], file: str, row: int) -> str:
    return f"r{files.index(file)}-{row}"


def render_report(result: CheckResult, title: str = "sftlab · data check", samples: int = 3) -> str:
    data = result.to_dict()
    stats = data["stats"]
    files = list(result.formats)
    findings = {f["check"]: f for f in data["findings"]}
    flagged = reasons(result.findings)
    parts = [
        M("<nav><a href='#findings'>Findings</a><a href='#lengths'>Lengths</a><a href='#diversity'>Diversity</a>"
          "<a href='#clusters'>Clusters</a><a href='#tokens'>Trained tokens</a><a href='#rows'>Flagged rows</a></nav>"),
        _cards(data, stats, len(flagged)),
        M("<p class='muted'>{}</p>").format(_join((M("{} ({}, {} rows)").format(f["path"], f["format"], f["rows"])
                                                   for f in stats["files"]), " · ")),
        M("<h2 id='findings'>Findings</h2>"),
    ]
    if not findings:
        parts.append(M("<p>No check found anything.</p>"))
    for check in CHECKS:
        if check in findings:
            parts.append(_finding(findings[check], files))
    ran_clean = [c for c in stats.get("checks", []) if c not in findings]
    if ran_clean:
        parts.append(M("<p class='muted'>Nothing found by: {}.</p>").format(", ".join(ran_clean)))
    parts += [
        M("<h2 id='lengths'>Lengths (tokens, with the model's template)</h2><div class='charts'>"),
        _histogram("prompt tokens", stats.get("prompt_tokens", {})),
        _histogram("answer tokens (trained)", stats.get("answer_tokens", {})),
        M("</div>"),
        M("<h2 id='diversity'>Diversity</h2>"),
        M("<p>distinct-1 of prompts <b>{}</b> · distinct-2 <b>{}</b> "
          "<span class='muted'>(distinct n-grams / all n-grams; CJK per character)</span></p>").format(
            stats.get("distinct_1"), stats.get("distinct_2")),
        _leading(stats.get("leading_words", [])),
        M("<h2 id='clusters'>Clusters of prompts</h2>"),
        _clusters(stats.get("clusters", {})),
        M("<h2 id='tokens'>Trained tokens of a few rows</h2>"),
        LEGEND,
    ]
    examples = sample_examples(result, samples)
    if examples and result.tokenizer is not None:
        parts.append(M(examples_html(examples, result.tokenizer)))
    parts.append(M("<h2 id='rows'>Flagged rows</h2>"))
    parts.append(_flagged_rows(result, files, flagged))
    return html_page(title, _CSS, parts)


def _cards(data: dict[str, Any], stats: dict[str, Any], flagged: int) -> Markup:
    cards = [
        ("rows", data["rows"], ""),
        ("valid rows", stats.get("valid_rows"), ""),
        ("rows flagged", flagged, "bad" if flagged else "ok"),
        ("findings", len(data["findings"]), "bad" if data["findings"] else "ok"),
    ]
    secs = stats.get("seconds", {})
    if "total" in secs:
        cards.append(("seconds", f"{secs['total']:.1f}", ""))
    return M("<div class='cards'>{}</div>{}").format(
        _join(M("<div class='card {}'><b>{}</b>{}</div>").format(cls, v, k) for k, v, cls in cards), _stages(secs))


# The stages of stats["seconds"] (quality/run.py check_data), in order; they add up to its total.
_STAGE_NAMES = {"read": "reading", "tokenizer": "loading the tokenizer", "checks": "checks",
                "tokenizing": "tokenizing (what was left after the checks, alongside which it runs)",
                "statistics": "statistics", "clusters": "clusters"}


def _stages(secs: dict[str, float]) -> Markup:
    """What the seconds card adds up: "reading 0.25 s + … = 8.00 s"."""
    parts = [(k, v) for k, v in secs.items() if k != "total"]
    if not parts or "total" not in secs:
        return M("")
    listed = " + ".join(f"{_STAGE_NAMES.get(k, k)} {v:.2f} s" for k, v in parts)
    return M("<p class='muted'>Seconds: {} = {:.2f} s</p>").format(listed, secs["total"])


def _finding(f: dict[str, Any], files: list[str]) -> Markup:
    n = len(f["rows"])
    out = [
        M("<details open id='check-{}'><summary>{} — {} row{}</summary>").format(
            f["check"], f["check"], n, "s" if n != 1 else ""),
        M("<p class='muted'>{}</p>").format(DESCRIPTIONS.get(f["check"], "")),
        M("<table class='f'><tr><th>file</th><th>row</th><th>why</th><th>snippet</th></tr>"),
    ]
    for row, file, detail in list(zip(f["rows"], f["files"], f["details"]))[:SHOWN_PER_CHECK]:
        out.append(M("<tr><td>{}</td><td><a href='#{}'>{}</a></td><td>{}</td><td>{}</td></tr>").format(
            file.rsplit("/", 1)[-1], _anchor(files, file, row), row, detail["reason"], detail.get("snippet", "")))
    out.append(M("</table>"))
    if n > SHOWN_PER_CHECK:
        out.append(M("<p class='muted'>… and {} more (all of them in --json).</p>").format(n - SHOWN_PER_CHECK))
    out.append(M("</details>"))
    return _join(out)


def _histogram(label: str, dist: dict[str, Any], width: int = 520, height: int = 200) -> Markup:
    hist = dist.get("histogram")
    if not hist:
        return M("<p class='muted'>{}: no data</p>").format(label)
    counts, edges = hist["counts"], hist["edges"]
    top = max(counts) or 1
    bw = (width - 40) / len(counts)
    bars = []
    for i, c in enumerate(counts):
        h = (height - 40) * c / top
        x = 30 + i * bw
        bars.append(M("<rect x='{:.1f}' y='{:.1f}' width='{:.1f}' height='{:.1f}' fill='#42a5f5'>"
                      "<title>{:.0f}–{:.0f}: {}</title></rect>").format(x, height - 25 - h, bw - 2, h, edges[i],
                                                                       edges[i + 1], c))
    ticks = _join(
        M("<text x='{:.1f}' y='{}' text-anchor='{}'>{:.0f}{}</text>").format(
            30 + i * bw, height - 8, "end" if i == len(counts) else "middle", edges[i],
            "+" if i == len(counts) and dist["max"] > edges[i] else "")
        for i in range(0, len(edges), 5)
    )
    caption = (f"{label}: min {dist['min']} · median {dist['p50']} · p90 {dist['p90']} · p99 {dist['p99']} · "
               f"max {dist['max']}")
    return M("<figure><svg width='{w}' height='{h}' role='img' aria-label='{label}'>"
             "<line x1='28' y1='{axis}' x2='{right}' y2='{axis}' stroke='#999'/>"
             "{bars}{ticks}<text x='30' y='12'>max bin {top}</text></svg>"
             "<figcaption>{caption}</figcaption></figure>").format(
        w=width, h=height, label=label, axis=height - 25, right=width - 10, bars=_join(bars), ticks=ticks, top=top,
        caption=caption)


def _leading(words: Sequence[dict[str, Any]]) -> Markup:
    if not words:
        return M("")
    top = max(w["count"] for w in words)
    rows = _join(
        M("<tr><td>{}</td><td>{}</td><td>{:.1%}</td><td><span class='bar' style='width:{:.0f}px'></span></td></tr>")
        .format(w["word"], w["count"], w["fraction"], 200 * w["count"] / top)
        for w in words
    )
    return M("<p>Most frequent first words of the instructions:</p><table class='f' style='width:auto'>"
             "<tr><th>word</th><th>rows</th><th>share</th><th></th></tr>{}</table>").format(rows)


def _clusters(info: dict[str, Any]) -> Markup:
    if "skipped" in info:
        return M("<p class='muted'>Not computed: {}.</p>").format(info["skipped"])
    sampled = f" of a random sample of {info['sampled']} prompts" if info.get("sampled") else ""
    out = [M("<p>{} clusters of prompt embeddings{} (all-MiniLM-L6-v2, k-means); the largest holds {:.1%} of the "
             "rows. Embeddings took {} s.</p>").format(info["k"], sampled, info["largest_fraction"],
                                                      info["embedding_seconds"]),
           M("<table class='f'><tr><th>size</th><th></th><th>typical words</th><th>prompts nearest the centre</th></tr>")]
    top = max(c["size"] for c in info["clusters"])
    for c in info["clusters"]:
        examples = _join((M("row {}: {}").format(e["row"], e["prompt"][:120]) for e in c["examples"]), "<br>")
        out.append(M("<tr><td>{} ({:.1%})</td><td><span class='bar' style='width:{:.0f}px'></span></td><td>{}</td>"
                     "<td>{}</td></tr>").format(c["size"], c["fraction"], 160 * c["size"] / top,
                                                ", ".join(c["top_words"]), examples))
    out.append(M("</table>"))
    return _join(out)


def _flagged_rows(result: CheckResult, files: list[str], flagged: dict[tuple[str, int], list[dict[str, Any]]],
                  limit: int = 300) -> Markup:
    if not flagged:
        return M("<p>None.</p>")
    by_key = {r.key: r for r in result.rows}
    out = []
    for key in sorted(flagged, key=lambda k: (files.index(k[0]), k[1]))[:limit]:
        row = by_key[key]
        tags = _join(M("<span class='tag'>{}</span>").format(r["check"]) for r in flagged[key])
        if row.conversation is not None:
            body = _join(
                M("<pre><b>{}:</b> {}</pre>").format(
                    m.role, m.content if m.content or not m.tool_calls else json.dumps(m.tool_calls, ensure_ascii=False))
                for m in row.conversation.messages
            )
        else:
            body = M("<pre>{}</pre>").format(row.error)
        out.append(M("<div class='row' id='{}'><b>{} · row {}</b> {}{}</div>").format(
            _anchor(files, row.file, row.row), row.file.rsplit("/", 1)[-1], row.row, tags, body))
    if len(flagged) > limit:
        out.append(M("<p class='muted'>… and {} more flagged rows (all of them in --json).</p>").format(
            len(flagged) - limit))
    return _join(out)

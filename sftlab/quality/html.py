"""The data-check report as one self-contained HTML page (inline CSS and SVG, no script, no network)."""

from __future__ import annotations

import html
import json
from typing import Any, Sequence

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


def _e(value: Any) -> str:
    return html.escape(str(value))


def _anchor(files: list[str], file: str, row: int) -> str:
    return f"r{files.index(file)}-{row}"


def render_report(result: CheckResult, title: str = "sftlab · data check", samples: int = 3) -> str:
    data = result.to_dict()
    stats = data["stats"]
    files = list(result.formats)
    findings = {f["check"]: f for f in data["findings"]}
    flagged = reasons(result.findings)
    parts = [
        "<nav><a href='#findings'>Findings</a><a href='#lengths'>Lengths</a><a href='#diversity'>Diversity</a>"
        "<a href='#clusters'>Clusters</a><a href='#tokens'>Trained tokens</a><a href='#rows'>Flagged rows</a></nav>",
        _cards(data, stats, len(flagged)),
        "<p class='muted'>" + " · ".join(f"{_e(f['path'])} ({_e(f['format'])}, {f['rows']} rows)" for f in stats["files"]) + "</p>",
        "<h2 id='findings'>Findings</h2>",
    ]
    if not findings:
        parts.append("<p>No check found anything.</p>")
    for check in CHECKS:
        if check in findings:
            parts.append(_finding(findings[check], files))
    ran_clean = [c for c in stats.get("checks", []) if c not in findings]
    if ran_clean:
        parts.append(f"<p class='muted'>Nothing found by: {_e(', '.join(ran_clean))}.</p>")
    parts += [
        "<h2 id='lengths'>Lengths (tokens, with the model's template)</h2><div class='charts'>",
        _histogram("prompt tokens", stats.get("prompt_tokens", {})),
        _histogram("answer tokens (trained)", stats.get("answer_tokens", {})),
        "</div>",
        "<h2 id='diversity'>Diversity</h2>",
        f"<p>distinct-1 of prompts <b>{stats.get('distinct_1')}</b> · distinct-2 <b>{stats.get('distinct_2')}</b> "
        "<span class='muted'>(distinct n-grams / all n-grams; CJK per character)</span></p>",
        _leading(stats.get("leading_words", [])),
        "<h2 id='clusters'>Clusters of prompts</h2>",
        _clusters(stats.get("clusters", {})),
        "<h2 id='tokens'>Trained tokens of a few rows</h2>",
        LEGEND,
    ]
    examples = sample_examples(result, samples)
    if examples and result.tokenizer is not None:
        parts.append(examples_html(examples, result.tokenizer))
    parts.append("<h2 id='rows'>Flagged rows</h2>")
    parts.append(_flagged_rows(result, files, flagged))
    return html_page(title, _CSS, parts)


def _cards(data: dict[str, Any], stats: dict[str, Any], flagged: int) -> str:
    cards = [
        ("rows", data["rows"], ""),
        ("valid rows", stats.get("valid_rows"), ""),
        ("rows flagged", flagged, "bad" if flagged else "ok"),
        ("findings", len(data["findings"]), "bad" if data["findings"] else "ok"),
    ]
    secs = stats.get("seconds", {})
    if "total" in secs:
        cards.append(("seconds", f"{secs['total']:.1f}", ""))
    return "<div class='cards'>" + "".join(
        f"<div class='card {cls}'><b>{_e(v)}</b>{_e(k)}</div>" for k, v, cls in cards
    ) + "</div>" + _stages(secs)


# The stages of stats["seconds"] (quality/run.py check_data), in order; they add up to its total.
_STAGE_NAMES = {"read": "reading", "tokenizer": "loading the tokenizer", "checks": "checks",
                "tokenizing": "tokenizing (what was left after the checks, alongside which it runs)",
                "statistics": "statistics", "clusters": "clusters"}


def _stages(secs: dict[str, float]) -> str:
    """What the seconds card adds up: "reading 0.25 s + … = 8.00 s"."""
    parts = [(k, v) for k, v in secs.items() if k != "total"]
    if not parts or "total" not in secs:
        return ""
    listed = " + ".join(f"{_STAGE_NAMES.get(k, k)} {v:.2f} s" for k, v in parts)
    return f"<p class='muted'>Seconds: {_e(listed)} = {secs['total']:.2f} s</p>"


def _finding(f: dict[str, Any], files: list[str]) -> str:
    n = len(f["rows"])
    out = [
        f"<details open id='check-{f['check']}'><summary>{_e(f['check'])} — {n} row{'s' if n != 1 else ''}</summary>",
        f"<p class='muted'>{_e(DESCRIPTIONS.get(f['check'], ''))}</p>",
        "<table class='f'><tr><th>file</th><th>row</th><th>why</th><th>snippet</th></tr>",
    ]
    for row, file, detail in list(zip(f["rows"], f["files"], f["details"]))[:SHOWN_PER_CHECK]:
        out.append(
            f"<tr><td>{_e(file.rsplit('/', 1)[-1])}</td><td><a href='#{_anchor(files, file, row)}'>{row}</a></td>"
            f"<td>{_e(detail['reason'])}</td><td>{_e(detail.get('snippet', ''))}</td></tr>"
        )
    out.append("</table>")
    if n > SHOWN_PER_CHECK:
        out.append(f"<p class='muted'>… and {n - SHOWN_PER_CHECK} more (all of them in --json).</p>")
    out.append("</details>")
    return "".join(out)


def _histogram(label: str, dist: dict[str, Any], width: int = 520, height: int = 200) -> str:
    hist = dist.get("histogram")
    if not hist:
        return f"<p class='muted'>{_e(label)}: no data</p>"
    counts, edges = hist["counts"], hist["edges"]
    top = max(counts) or 1
    bw = (width - 40) / len(counts)
    bars = []
    for i, c in enumerate(counts):
        h = (height - 40) * c / top
        x = 30 + i * bw
        bars.append(
            f"<rect x='{x:.1f}' y='{height - 25 - h:.1f}' width='{bw - 2:.1f}' height='{h:.1f}' fill='#42a5f5'>"
            f"<title>{edges[i]:.0f}–{edges[i + 1]:.0f}: {c}</title></rect>"
        )
    ticks = "".join(
        f"<text x='{30 + i * bw:.1f}' y='{height - 8}' text-anchor='{'end' if i == len(counts) else 'middle'}'>"
        f"{edges[i]:.0f}{'+' if i == len(counts) and dist['max'] > edges[i] else ''}</text>"
        for i in range(0, len(edges), 5)
    )
    caption = (f"{label}: min {dist['min']} · median {dist['p50']} · p90 {dist['p90']} · p99 {dist['p99']} · "
               f"max {dist['max']}")
    return (f"<figure><svg width='{width}' height='{height}' role='img' aria-label='{_e(label)}'>"
            f"<line x1='28' y1='{height - 25}' x2='{width - 10}' y2='{height - 25}' stroke='#999'/>"
            f"{''.join(bars)}{ticks}<text x='30' y='12'>max bin {top}</text></svg>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _leading(words: Sequence[dict[str, Any]]) -> str:
    if not words:
        return ""
    top = max(w["count"] for w in words)
    rows = "".join(
        f"<tr><td>{_e(w['word'])}</td><td>{w['count']}</td><td>{w['fraction']:.1%}</td>"
        f"<td><span class='bar' style='width:{200 * w['count'] / top:.0f}px'></span></td></tr>"
        for w in words
    )
    return ("<p>Most frequent first words of the instructions:</p><table class='f' style='width:auto'>"
            f"<tr><th>word</th><th>rows</th><th>share</th><th></th></tr>{rows}</table>")


def _clusters(info: dict[str, Any]) -> str:
    if "skipped" in info:
        return f"<p class='muted'>Not computed: {_e(info['skipped'])}.</p>"
    sampled = f" of a random sample of {info['sampled']} prompts" if info.get("sampled") else ""
    out = [f"<p>{info['k']} clusters of prompt embeddings{sampled} (all-MiniLM-L6-v2, k-means); the largest holds "
           f"{info['largest_fraction']:.1%} of the rows. Embeddings took {info['embedding_seconds']} s.</p>",
           "<table class='f'><tr><th>size</th><th></th><th>typical words</th><th>prompts nearest the centre</th></tr>"]
    top = max(c["size"] for c in info["clusters"])
    for c in info["clusters"]:
        examples = "<br>".join(f"row {e['row']}: {_e(e['prompt'][:120])}" for e in c["examples"])
        out.append(
            f"<tr><td>{c['size']} ({c['fraction']:.1%})</td><td><span class='bar' style='width:{160 * c['size'] / top:.0f}px'>"
            f"</span></td><td>{_e(', '.join(c['top_words']))}</td><td>{examples}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _flagged_rows(result: CheckResult, files: list[str], flagged: dict[tuple[str, int], list[dict[str, Any]]],
                  limit: int = 300) -> str:
    if not flagged:
        return "<p>None.</p>"
    by_key = {r.key: r for r in result.rows}
    out = []
    for key in sorted(flagged, key=lambda k: (files.index(k[0]), k[1]))[:limit]:
        row = by_key[key]
        tags = "".join(f"<span class='tag'>{_e(r['check'])}</span>" for r in flagged[key])
        if row.conversation is not None:
            body = "".join(
                f"<pre><b>{_e(m.role)}:</b> {_e(m.content if m.content or not m.tool_calls else json.dumps(m.tool_calls, ensure_ascii=False))}</pre>"
                for m in row.conversation.messages
            )
        else:
            body = f"<pre>{_e(row.error)}</pre>"
        out.append(f"<div class='row' id='{_anchor(files, row.file, row.row)}'><b>{_e(row.file.rsplit('/', 1)[-1])} · row {row.row}</b> "
                   f"{tags}{body}</div>")
    if len(flagged) > limit:
        out.append(f"<p class='muted'>… and {len(flagged) - limit} more flagged rows (all of them in --json).</p>")
    return "".join(out)

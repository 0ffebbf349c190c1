"""What an export leaves: its files and export_report.json (shared by the GGUF and safetensors exports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT = "export_report.json"


@dataclass
class ExportResult:
    out: Path
    files: list[Path]
    report: dict[str, Any] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        r = self.report
        lines = [f"{f.name}: {f.stat().st_size / 2**20:.1f} MiB" for f in self.files if f.suffix in (".gguf", ".safetensors")]
        if "tensors_by_type" in r:
            lines.append("tensors: " + ", ".join(f"{n} {k}" for k, n in r["tensors_by_type"].items()))
        if r.get("tensor_fallbacks"):
            names = ", ".join(f"{f['tensor']} ({f['got']})" for f in r["tensor_fallbacks"][:6])
            more = len(r["tensor_fallbacks"]) - 6
            lines.append(f"not in {r['quant']}: {names}" + (f" and {more} more" if more > 0 else ""))
        lines.append(f"stops at: {', '.join(r.get('stop_tokens', [])) or '-'}; BOS added by the tokenizer: "
                     f"{r.get('add_bos_token')}")
        v = r.get("verification", {})
        if "transformers" in v:
            t = v["transformers"]
            lines.append(f"transformers reads it back: greedy answers equal on {t['greedy_equal']}/{t['of']} prompts")
        if "llama_cpp" in v:
            c = v["llama_cpp"]
            g = c["greedy"]
            parts = [f"tokenization equal on {c['tokenization']['equal']}/{c['tokenization']['texts']} texts"]
            if "template" in c:
                parts.append(f"prompt rendered equal on {c['template']['rendered_equal']}/{c['template']['conversations']}")
                tools = c["template"].get("tool_conversation")
                if tools:
                    parts.append("a tool conversation rendered " + ("equal" if tools["rendered_equal"] else
                                 f"differently (llama.cpp {tools['first_difference']['llama_cpp']!r}, transformers "
                                 f"{tools['first_difference']['transformers']!r})"))
            parts.append(f"greedy answers equal on {g['equal']}/{g['prompts']} prompts, top-1 agreement "
                         f"{100 * _fraction(g['top1_agreement']):.1f}%, {g['ended_at_end_of_generation']}/{g['prompts']} "
                         f"ended at an end-of-generation token within {g['max_new_tokens']} tokens (sftlab's: "
                         f"{g['sftlab_ended']})")
            lines.append("llama.cpp: " + "; ".join(parts))
            if c.get("answers"):
                lines.append(f"llama.cpp answers {r['prompts'][0]!r}: {c['answers'][0]!r}")
        elif r.get("format") == "gguf":
            lines.append(f"llama.cpp checks skipped: {v.get('llama_cpp_skipped') or v.get('skipped', 'not run')}")
        return lines


def _fraction(value: Any) -> float:
    """A report's fraction as a number (0 when it is missing or not a number: a report another version or a hand
    wrote is worded, never computed with: `100 * [...]` of a forged list would build a list 100 times as long)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return 0.0

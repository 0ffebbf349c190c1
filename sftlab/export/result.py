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
            top1 = (f", top-1 agreement {_percent(t['top1_agreement'])}" if t.get("top1_agreement") is not None
                    else "")
            lines.append(f"transformers reads it back: greedy answers equal on {t['greedy_equal']}/{t['of']} "
                         f"prompts{top1}")
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
                         f"{_percent(g['top1_agreement'])}, {g['ended_at_end_of_generation']}/{g['prompts']} "
                         f"ended at an end-of-generation token within {g['max_new_tokens']} tokens (sftlab's: "
                         f"{g['sftlab_ended']})")
            lines.append("llama.cpp: " + "; ".join(parts))
            if c.get("answers"):
                lines.append(f"llama.cpp answers {r['prompts'][0]!r}: {c['answers'][0]!r}")
        elif r.get("format") == "gguf" and "llama_cpp_skipped" in v:
            lines.append("llama.cpp's own checks (its tokenizer, the embedded template, its kernels) skipped: "
                         f"{v['llama_cpp_skipped']}; they are optional, transformers' read-back checks the weights")
        elif r.get("format") == "gguf":
            lines.append(f"llama.cpp checks skipped: {v.get('skipped', 'not run')}")
        lines.append(verdict_line(verdict(r)))
        return lines


def _percent(value: Any) -> str:
    return f"{100 * _fraction(value):.1f}%"


def _fraction(value: Any) -> float:
    """A report's fraction as a number (0 when it is missing or not a number: a report another version or a hand
    wrote is worded, never computed with: `100 * [...]` of a forged list would build a list 100 times as long)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return 0.0


# f32 and f16 must answer token for token (the checks refuse a file that does not). For the other types, the lowest
# normal share of answer positions where the file's top-1 token is the source model's (teacher-forced along
# sftlab's greedy fp32 answers to verify.PROMPTS): twice the disagreement measured, 1 - 2 × (1 - measured), rounded
# down to a whole percent, from the lowest of these measurements (llama.cpp / transformers' read-back):
# - the default model, SmolLM2-135M-Instruct, 914 answer tokens, measured for this table (sftlab's writer, then
#   llama-cpp-python 0.3.36 and transformers reading the file): bf16 99.45% / 99.67%, q8_0 97.70% / 98.58%,
#   q6_k 95.73% / 96.83%, q5_k_m 89.28% / 90.15%, q4_k_m 90.26% / 90.81%, q4_0 77.68% / 77.68%;
# - docs/export.md's demo model (llama.cpp): q8_0 97.1%, q4_k_m 93.3%.
# (SmolLM2's rows of 576 are no multiple of 256: its K-quants fall back to Q5_0/Q8_0, so q5_k_m measures below
# q4_k_m there.)
NORMAL_TOP1 = {"bf16": 0.98, "q8_0": 0.94, "q6_k": 0.91, "q5_k_m": 0.78, "q4_k_m": 0.80, "q4_0": 0.55}
EXACT = ("f32", "f16")


def verdict(report: dict[str, Any]) -> dict[str, str]:
    """export_report.json's `verdict`: "pass" where the checks found the file answering as the source model does,
    as closely as is normal for its type, "differs" where less, "not checked" where no check ran; and why."""
    v = report.get("verification")
    if not isinstance(v, dict) or not v or "skipped" in v:
        why = v.get("skipped") if isinstance(v, dict) and v.get("skipped") else "no verification in this report"
        return {"status": "not checked", "why": f"the checks did not run ({why})"}
    if report.get("format") == "safetensors":
        if v.get("logits_equal") is True:
            return {"status": "pass", "why": "the saved model's logits equal the source model's"}
        return {"status": "not checked", "why": "this report has no logits comparison"}
    if isinstance(v.get("llama_cpp"), dict):
        who, figures, equal, of = "llama.cpp", v["llama_cpp"].get("greedy"), "equal", "prompts"
    else:
        who, figures, equal, of = "transformers' read-back", v.get("transformers"), "greedy_equal", "of"
    if not isinstance(figures, dict):
        return {"status": "not checked", "why": "this report has no answers compared"}
    quant = report.get("quant")
    if quant in EXACT:
        same, total = figures.get(equal), figures.get(of)
        status = "pass" if isinstance(same, int) and same == total else "differs"
        return {"status": status, "why": f"{who}'s greedy answers equal the source model's token for token on "
                                         f"{same}/{total} prompts; {quant} must match on all"}
    floor, top1 = NORMAL_TOP1.get(str(quant)), figures.get("top1_agreement")
    if floor is None:
        return {"status": "not checked", "why": f"no normal top-1 agreement is known for the type {quant!r}"}
    if not isinstance(top1, (int, float)) or isinstance(top1, bool):
        return {"status": "not checked", "why": f"this report has no top-1 agreement of {who} (an earlier sftlab "
                                                "wrote it)"}
    normal = f"{100 * floor:.0f}% or more is normal for {quant}"
    if top1 >= floor:
        return {"status": "pass", "why": f"{who}'s top-1 token is the source model's at {_percent(top1)} of the "
                                         f"answer tokens ({normal}; one different token sends the rest of a "
                                         "greedy answer its own way, so few whole answers are equal)"}
    return {"status": "differs", "why": f"{who}'s top-1 token is the source model's at only {_percent(top1)} of "
                                        f"the answer tokens ({normal}): compare its answers with the source "
                                        "model's, or export a larger type (q8_0, f16)"}


def verdict_line(v: dict[str, str]) -> str:
    return f"verdict: {v['status']} — {v['why']}"

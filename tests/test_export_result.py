"""sftlab.export.result: the summary an export ends with, and its verdict (pass / differs / not checked) from the
figures in export_report.json, for literal reports."""

from __future__ import annotations

from sftlab.export.result import ExportResult, verdict

TOKENIZATION = {"equal": 10, "texts": 10}


def _greedy(equal, top1, prompts=12):
    return {"equal": equal, "prompts": prompts, "top1_agreement": top1, "ended_at_end_of_generation": 11,
            "max_new_tokens": 128, "sftlab_ended": 11}


def _gguf(quant, verification):
    return {"format": "gguf", "quant": quant, "stop_tokens": ["<|im_end|>"], "add_bos_token": False,
            "verification": verification}


def _lines(tmp_path, report):
    return ExportResult(tmp_path, [], report).summary_lines()


def test_q8_0_with_llama_cpp_at_a_normal_agreement_passes(tmp_path):
    report = _gguf("q8_0", {"transformers": {"greedy_equal": 9, "of": 12, "top1_agreement": 0.9858},
                            "llama_cpp": {"tokenization": TOKENIZATION, "greedy": _greedy(6, 0.971)}})
    assert verdict(report) == {"status": "pass", "why": (
        "llama.cpp's top-1 token is the source model's at 97.1% of the answer tokens (94% or more is normal for q8_0; "
        "one different token sends the rest of a greedy answer its own way, so few whole answers are equal)")}
    lines = _lines(tmp_path, report)
    assert lines[-3:] == [
        "transformers reads it back: greedy answers equal on 9/12 prompts, top-1 agreement 98.6%",
        "llama.cpp: tokenization equal on 10/10 texts; greedy answers equal on 6/12 prompts, top-1 agreement 97.1%, "
        "11/12 ended at an end-of-generation token within 128 tokens (sftlab's: 11)",
        "verdict: pass — llama.cpp's top-1 token is the source model's at 97.1% of the answer tokens (94% or more is "
        "normal for q8_0; one different token sends the rest of a greedy answer its own way, so few whole answers "
        "are equal)"]


def test_a_low_agreement_differs_and_says_what_to_do(tmp_path):
    report = _gguf("q8_0", {"transformers": {"greedy_equal": 1, "of": 12, "top1_agreement": 0.8},
                            "llama_cpp": {"tokenization": TOKENIZATION, "greedy": _greedy(0, 0.8123)}})
    assert _lines(tmp_path, report)[-1] == (
        "verdict: differs — llama.cpp's top-1 token is the source model's at only 81.2% of the answer tokens (94% or "
        "more is normal for q8_0): compare its answers with the source model's, or export a larger type (q8_0, f16)")
    assert verdict(report)["status"] == "differs"


def test_without_llama_cpp_the_read_back_decides_and_the_lines_say_what_it_means(tmp_path):
    report = _gguf("q8_0", {"transformers": {"greedy_equal": 5, "of": 12, "top1_agreement": 0.9612},
                            "llama_cpp_skipped": "llama-cpp-python is not installed (make gguf)"})
    assert _lines(tmp_path, report)[-3:] == [
        "transformers reads it back: greedy answers equal on 5/12 prompts, top-1 agreement 96.1%",
        "llama.cpp's own checks (its tokenizer, the embedded template, its kernels) skipped: llama-cpp-python is not "
        "installed (make gguf); they are optional, transformers' read-back checks the weights",
        "verdict: pass — transformers' read-back's top-1 token is the source model's at 96.1% of the answer tokens "
        "(94% or more is normal for q8_0; one different token sends the rest of a greedy answer its own way, so few "
        "whole answers are equal)"]


def test_f16_must_match_token_for_token(tmp_path):
    exact = _gguf("f16", {"transformers": {"greedy_equal": 12, "of": 12, "top1_agreement": 1.0},
                          "llama_cpp": {"tokenization": TOKENIZATION, "greedy": _greedy(12, 1.0)}})
    assert _lines(tmp_path, exact)[-1] == ("verdict: pass — llama.cpp's greedy answers equal the source model's token "
                                           "for token on 12/12 prompts; f16 must match on all")
    off = _gguf("f32", {"transformers": {"greedy_equal": 11, "of": 12}, "llama_cpp_skipped": "not installed"})
    assert verdict(off) == {"status": "differs", "why": "transformers' read-back's greedy answers equal the source "
                                                        "model's token for token on 11/12 prompts; f32 must match on all"}


def test_not_checked(tmp_path):
    assert _lines(tmp_path, _gguf("q4_0", {"skipped": "--no-verify"}))[-2:] == [
        "llama.cpp checks skipped: --no-verify", "verdict: not checked — the checks did not run (--no-verify)"]
    earlier = _gguf("q4_k_m", {"transformers": {"greedy_equal": 5, "of": 12}, "llama_cpp_skipped": "not installed"})
    assert verdict(earlier) == {"status": "not checked", "why": "this report has no top-1 agreement of "
                                                                "transformers' read-back (an earlier sftlab wrote it)"}
    unknown = _gguf("q3_k", {"llama_cpp": {"tokenization": TOKENIZATION, "greedy": _greedy(1, 0.9)}})
    assert verdict(unknown) == {"status": "not checked", "why": "no normal top-1 agreement is known for the type 'q3_k'"}
    assert verdict({"format": "gguf", "quant": "q8_0"})["status"] == "not checked"


def test_safetensors(tmp_path):
    report = {"format": "safetensors", "stop_tokens": [], "verification": {"logits_equal": True}}
    assert _lines(tmp_path, report)[-1] == "verdict: pass — the saved model's logits equal the source model's"
    assert verdict({**report, "verification": {"skipped": "--no-verify"}}) == {
        "status": "not checked", "why": "the checks did not run (--no-verify)"}

"""sftlab eval: judge counting against a flaky fake judge, loss equal to training's evaluation, outputs."""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import SHARED_DATA
from sftlab.config import load_config
from sftlab.evaluation.judge import Judge, parse_score
from sftlab.evaluation.run import EvalOptions, evaluate, regurgitates
from sftlab.training import train
from helpers import ALPACA, _lines, _one_line
from sftlab.errors import SftlabError

pytestmark = pytest.mark.slow  # real trainings, models, servers and subprocess CLIs


class FakeJudge(BaseHTTPRequestHandler):
    """Behaviour keyed on the instruction inside the judge prompt:
    ask-N → "N"; ask-garbage → never a number in range; ask-error → always HTTP 500;
    ask-flaky-N → HTTP 503 on the first request for it, then "Score: N/100"; ask-slow-N → "N" after 2 s."""

    seen: dict[str, int] = {}
    prompts: list[str] = []
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        self.prompts.append(prompt)
        key = re.search(r"ask-[\w-]+", prompt).group()
        with self.lock:
            self.seen[key] = self.seen.get(key, 0) + 1
            n = self.seen[key]
        if key == "ask-error" or (key.startswith("ask-flaky") and n == 1):
            return self._send(503 if key.startswith("ask-flaky") else 500, {"error": {"message": "boom"}})
        if key.startswith("ask-slow"):
            time.sleep(2)
        if key == "ask-garbage":
            text = "I would rate it highly, maybe 150 or 7.5"
        elif key.startswith("ask-flaky"):
            text = f"Score: {key.rsplit('-', 1)[1]}/100"
        else:
            text = key.rsplit("-", 1)[1]
        self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}]})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_judge():
    FakeJudge.seen, FakeJudge.prompts = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_parse_score_takes_the_first_integer_in_range():
    assert parse_score("85") == 85
    assert parse_score("Score: 7.5, final 150, so 40") == 40
    assert parse_score("100/100") == 100
    assert parse_score("no idea") is None and parse_score(None) is None


def _data(tmp_path):
    rows = [
        {"instruction": "ask-80", "input": "", "output": "a"},
        {"instruction": "ask-garbage", "input": "", "output": "b"},
        {"instruction": "ask-30", "input": "", "output": "c"},
        {"instruction": "ask-error", "input": "", "output": "d"},
        {"instruction": "ask-flaky-55", "input": "", "output": "e"},
    ]
    path = tmp_path / "held.json"
    path.write_text(json.dumps(rows))
    return path


def test_eval_with_a_flaky_judge_counts_exactly(tiny_chat_model, tmp_path, fake_judge):
    judge = Judge(fake_judge, "fake", concurrency=3, retries=2, backoff=0.01)
    out = tmp_path / "eval"
    summary = evaluate(str(tiny_chat_model), _data(tmp_path), out, EvalOptions(max_new_tokens=4, judge=judge))
    j = summary["judge"]
    assert (j["scored"], j["unscored"]) == (3, 2)
    assert j["mean"] == pytest.approx((80 + 30 + 55) / 3) and j["median"] == 55
    assert sorted(u["row"] for u in j["unscored_rows"]) == [2, 4]
    assert FakeJudge.seen["ask-error"] == 3 and FakeJudge.seen["ask-garbage"] == 3  # 1 + 2 retries, then given up
    assert FakeJudge.seen["ask-flaky-55"] == 2
    records = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert [r["row"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["judge_score"] for r in records] == [80, None, 30, None, 55]
    assert set(records[0]) >= {"prompt", "reference", "response", "row"}
    saved = json.loads((out / "summary.json").read_text())
    for key in ("loss", "perplexity", "exact_match", "rouge_l", "bleu", "judge"):
        assert key in saved
    assert (out / "judge_scores.png").read_bytes()[:4] == b"\x89PNG"


def test_generations_are_reused_not_generated_twice(tiny_chat_model, tmp_path, monkeypatch):
    from sftlab.inference.generate import Generator

    out = tmp_path / "eval"
    evaluate(str(tiny_chat_model), _data(tmp_path), out, EvalOptions(max_new_tokens=3))
    monkeypatch.setattr(Generator, "replies", lambda *a, **k: pytest.fail("generated twice"))
    again = evaluate(str(tiny_chat_model), _data(tmp_path), out, EvalOptions(max_new_tokens=3))
    assert again["examples"] == 5


def test_held_out_loss_equals_trainings_evaluation(tiny_model, tmp_path):
    held = tmp_path / "held.json"  # 120 rows of a real file: more than the training's limit, all of them scored
    held.write_text(json.dumps(json.loads((SHARED_DATA / "alpaca_zh_demo.json").read_text(encoding="utf-8"))[:120],
                               ensure_ascii=False), encoding="utf-8")
    run = tmp_path / "run"
    cfg = load_config(None, [f"model={tiny_model}", f"datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]",
                             f"eval_datasets=[{held}]", "template=llama2", "limit=16", "max_length=256",
                             "epochs=1", "batch_size=4", "learning_rate=1e-3", "precision=fp32",
                             f"output_dir={run}", "logging_steps=1"])
    result = train(cfg, quiet=True)
    reported = [r["eval_loss"] for r in result.metrics if "eval_loss" in r][-1]
    # The whole eval file in training; the same file here.
    summary = evaluate(str(run), held, tmp_path / "eval", EvalOptions(max_new_tokens=1, template="llama2",
                                                                     max_length=256, batch_size=3))
    assert summary["loss"] == pytest.approx(reported, rel=1e-5)
    assert summary["perplexity"] == pytest.approx(2.718281828 ** reported, rel=1e-4)


def test_regurgitation_detector():
    assert regurgitates("Sure: The quick brown fox jumps", "the quick brown fox jumps")
    assert not regurgitates("A fox is an animal.", "the quick brown fox jumps over the lazy dog")
    assert regurgitates("翻译：我喜欢吃苹果", "我喜欢吃苹果")


def test_judge_timeout_bounds_each_attempt(fake_judge):
    from sftlab.evaluation.judge import Judge

    quick = Judge(fake_judge, "fake", retries=1, timeout=0.5, backoff=0.01)
    start = time.perf_counter()
    verdict = quick.score_one("ask-slow-70", "ref", "resp")
    assert verdict.score is None and verdict.attempts == 2 and "Timeout" in verdict.error
    assert time.perf_counter() - start < 1.9  # two attempts of 0.5 s, not one 2 s wait
    assert Judge(fake_judge, "fake", timeout=5).score_one("ask-slow-70", "ref", "resp").score == 70


def test_changed_references_or_weights_are_never_scored_with_stale_generations(tiny_chat_model, tmp_path):
    import shutil

    data = _data(tmp_path)
    out = tmp_path / "eval"
    evaluate(str(tiny_chat_model), data, out, EvalOptions(max_new_tokens=3))
    first = (out / "responses.jsonl").read_text(encoding="utf-8").splitlines()
    assert "instruction" not in json.loads(first[0])["messages"][0]  # OpenAI-style messages only
    # Every reference edited: generated again, and scored against the new references.
    rows = json.loads(data.read_text())
    for r in rows:
        r["output"] = "zzz"
    data.write_text(json.dumps(rows))
    evaluate(str(tiny_chat_model), data, out, EvalOptions(max_new_tokens=3))
    records = [json.loads(line) for line in (out / "responses.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["reference"] for r in records] == ["zzz"] * 5
    # The same folder with other weights (a retrained model) is generated again too.
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(tiny_chat_model, model)
    evaluate(str(model), data, tmp_path / "eval2", EvalOptions(max_new_tokens=3))
    weights = load_file(str(model / "model.safetensors"))
    save_file({k: v + 0.01 for k, v in weights.items()}, str(model / "model.safetensors"), metadata={"format": "pt"})
    meta_before = json.loads((tmp_path / "eval2" / "generation.json").read_text())
    evaluate(str(model), data, tmp_path / "eval2", EvalOptions(max_new_tokens=3))
    meta_after = json.loads((tmp_path / "eval2" / "generation.json").read_text())
    assert meta_before["model_sha256"] != meta_after["model_sha256"]


def test_eval_shows_its_progress(tiny_chat_model, tmp_path, caplog):
    with caplog.at_level("INFO", logger="sftlab"):
        evaluate(str(tiny_chat_model), _data(tmp_path), tmp_path / "eval", EvalOptions(max_new_tokens=2, batch_size=2))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith(f"evaluating {tiny_chat_model} on 5 conversations")
    assert any(l.startswith("held-out loss ") for l in lines)
    assert [l for l in lines if l.startswith("generated ")] == ["generated 2/5 answers", "generated 4/5 answers",
                                                               "generated 5/5 answers"]


@pytest.mark.parametrize("precision,bf16", [("fp32", False), ("bf16", True)])
def test_eval_precision_is_a_choice(tiny_chat_model, tmp_path, precision, bf16):
    out = tmp_path / precision
    evaluate(str(tiny_chat_model), _data(tmp_path), out, EvalOptions(max_new_tokens=2, precision=precision))
    assert json.loads((out / "generation.json").read_text())["bf16"] is bf16


# ---- hostile and odd input (issue 25's rounds) ----

@pytest.mark.parametrize("reply, score", [("-5", None), ("Score: -5", None), ("−5", None), ("85", 85), ("85.", 85),
                                          ("7.5", None), ("100", 100), ("101", None), ("0", 0)])
def test_a_negative_judge_reply_is_no_score(reply, score):
    from sftlab.evaluation.judge import parse_score

    assert parse_score(reply) == score


def test_judge_retries_cannot_be_negative(tmp_path, cli):
    from sftlab.evaluation.judge import Judge

    with pytest.raises(SftlabError, match=r"^--judge-retries must be at least 0 \(got -1\)$"):
        Judge("http://127.0.0.1:9/v1", "m", retries=-1)
    r = cli("eval", "--model", "m", "--data", "d.json", "--out", tmp_path / "o", "--judge-url", "http://x/v1",
            "--judge-model", "j", "--judge-retries", "-1")
    assert r.returncode == 2 and "--judge-retries" in r.stderr and "must be at least 0 (got -1)" in _one_line(r.stderr)


def test_eval_options_and_out_checked_before_any_work(tmp_path, cli):
    data = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA))
    taken = tmp_path / "taken"
    taken.write_text("x")
    r = cli("eval", "--model", "m", "--data", data, "--out", taken)
    assert r.returncode == 2 and f"--out {taken}: a file of that name exists" in _one_line(r.stderr), r.stderr
    for option, value, want in (("--batch-size", "0", "must be at least 1 (got 0)"),
                                ("--max-new-tokens", "-3", "must be at least 1 (got -3)")):
        r = cli("eval", "--model", "m", "--data", data, "--out", tmp_path / "o", option, value)
        assert r.returncode == 2 and option in r.stderr and want in _one_line(r.stderr), r.stderr
    assert taken.read_text() == "x" and not (tmp_path / "o").exists()


def test_the_answer_is_scored_and_judged_without_the_trace(tiny_chat_model, tmp_path, fake_judge, monkeypatch):
    """A model that thinks before it answers: the metrics compare the answer alone with the reference, the judge
    sees the answer alone, and the trace is kept beside it in responses.jsonl."""
    from helpers import scripted_generator
    from sftlab.inference import generate

    gen, _ = scripted_generator(tiny_chat_model, "Qwen-Qwen2.5-7B-Instruct.jinja",
                                lambda prompt: "<think>\nsecret trace words\n</think>\n\nthe answer")
    monkeypatch.setattr(generate, "load_generator", lambda *a, **kw: gen)
    rows = [{"instruction": "ask-70", "input": "", "output": "the answer"},
            {"instruction": "ask-20", "input": "", "output": "the answer"}]
    (tmp_path / "held.json").write_text(json.dumps(rows))
    judge = Judge(fake_judge, "fake", concurrency=1, retries=0)
    summary = evaluate(str(tiny_chat_model), tmp_path / "held.json", tmp_path / "eval",
                       EvalOptions(max_new_tokens=40, judge=judge))
    assert summary["exact_match"] == 1.0 and summary["rouge_l"] == 1.0
    assert len(FakeJudge.prompts) == 2
    assert all(p.split("[Assistant's answer]\n")[1].startswith("the answer\n\nRate") for p in FakeJudge.prompts)
    assert not any("secret" in p for p in FakeJudge.prompts)
    records = [json.loads(line) for line in (tmp_path / "eval" / "responses.jsonl").read_text().splitlines()]
    assert [(r["response"], r["reasoning"]) for r in records] == [("the answer", "secret trace words")] * 2


def test_a_second_eval_reads_back_responses_holding_line_separators(tiny_chat_model, tmp_path, caplog):
    """U+2028/U+2029/U+0085 in the data: responses.jsonl keeps each record on one line (split on any line
    break it still reads as five), and the second run reuses it instead of failing to read it."""
    import logging

    rows = [{"instruction": f"q{k}\u2028line\u2029para\x85next", "input": "", "output": f"a{k}\u2028b"}
            for k in range(5)]
    data = tmp_path / "held.json"
    data.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "eval"
    evaluate(str(tiny_chat_model), data, out, EvalOptions(max_new_tokens=3))
    text = (out / "responses.jsonl").read_text(encoding="utf-8")
    assert len(text.splitlines()) == 5 and "\u2028" not in text and "\\u2028" in text
    with caplog.at_level(logging.INFO, logger="sftlab"):
        again = evaluate(str(tiny_chat_model), data, out, EvalOptions(max_new_tokens=3))
    assert any(m.startswith("reusing ") for m in caplog.messages)
    records = [json.loads(line) for line in text.split("\n") if line]
    assert [r["prompt"] for r in records] == [f"q{k}\u2028line\u2029para\x85next" for k in range(5)]
    assert [r["reference"] for r in records] == [f"a{k}\u2028b" for k in range(5)]
    assert again["examples"] == 5

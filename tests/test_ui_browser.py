"""`sftlab ui` end to end in a real browser: Debian's Chromium driven by Playwright for Python, on a tiny model.

Fill the new-run form, see a config error next to its field, preview the data (trained tokens coloured), start,
watch the curve grow, reload mid-run and see the same state, queue a second run, stop, resume, compare runs, check
data, chat with two models. Screenshots of each page go to the test's temp folder (and to $SFTLAB_UI_SCREENSHOTS
when set); docs/ui.md's are of the default model's demo run instead: examples/ui_screenshots.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)"),
]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
ROWS = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{i} plus {i} is {2 * i}."} for i in range(40)]
ROWS.insert(3, {"instruction": "An empty answer", "input": "", "output": ""})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui(tmp_path, tiny_chat_model):
    """`sftlab ui` started as a user starts it, in a working folder with a model and a data file."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(tiny_chat_model, work / "model")
    (work / "data.json").write_text(json.dumps(ROWS), encoding="utf-8")
    port = _free_port()
    log = open(tmp_path / "ui.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "sftlab", "ui", "--port", str(port)], cwd=work, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url + "/api/runs", timeout=2)
            break
        except OSError:
            assert process.poll() is None, (tmp_path / "ui.log").read_text()
            time.sleep(0.5)
    yield url, work
    process.terminate()
    process.wait(timeout=30)
    for state in work.glob("runs/*/ui_state.json"):  # no training left behind
        pid = json.loads(state.read_text()).get("runner_pid")
        if pid:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass


def _api(url: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{path}: {e.code} {e.read().decode()[:500]}") from None


def _wait(predicate, timeout: float = 180, what: str = "") -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_whole_workflow_in_chromium(ui, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, work = ui
    shots = [tmp_path / "shots"] + ([Path(os.environ["SFTLAB_UI_SCREENSHOTS"])]
                                    if os.environ.get("SFTLAB_UI_SCREENSHOTS") else [])
    for folder in shots:
        folder.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str, **options) -> None:
        for folder in shots:
            page.screenshot(path=str(folder / name), **options)

    expect.set_options(timeout=60_000)  # (the first config check imports transformers; this machine is shared)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)

        # -- New run: the essentials first, the rest folded; a config error opens its group; preview, YAML, start --
        page.goto(url + "/new")
        essentials = page.locator(".essentials .field")
        expect(essentials).to_have_count(7)
        assert essentials.evaluate_all("fs => fs.map(f => f.dataset.field)") == [
            "model", "datasets", "method", "epochs", "learning_rate", "batch_size", "max_length"]
        expect(page.locator("input[name=lr_scheduler]")).to_be_hidden()  # folded in its group
        # The pickers: the default model, model folders under the UI's folder; files that read as data.
        models = page.locator("select[name=model] option").evaluate_all("os => os.map(o => o.value)")
        assert models == ["smollm2-135m-instruct", str(work / "model")]
        expect(page.locator(".ds-row select.path").first).to_have_value("data.json")
        assert "examples/deepspeed/zero2.json" not in page.locator(".ds-row select.path").first.inner_text()
        expect(page.locator("#method-defaults")).to_contain_text("defaults of full: learning_rate 0.00002")
        page.select_option("select[name=method]", "lora")
        expect(page.locator("#method-defaults")).to_contain_text("defaults of lora: learning_rate 0.0002")
        expect(page.locator("input[name=learning_rate]")).to_have_attribute("placeholder", "0.0002")
        page.select_option("select[name=method]", "full")
        shot(page, "ui-new.png", full_page=True)
        page.fill("input[name=__name]", "first")
        page.select_option("select[name=model]", str(work / "model"))
        page.fill("input[name=batch_size]", "2")
        page.click("details[data-group=Optimisation] > summary")
        page.fill("input[name=max_steps]", "40")
        page.fill("input[name=lr_scheduler]", "cosin")
        page.click("details[data-group=Optimisation] > summary")  # folded again: the error opens it
        page.click("details[data-group=Bookkeeping] > summary")
        page.fill("input[name=logging_steps]", "1")
        page.click("#preview-yaml")
        error = page.locator(".field[data-field=lr_scheduler] .error")
        expect(error).to_be_visible(timeout=240_000)  # (the first check imports transformers, on a shared machine)
        expect(error).to_contain_text("config: `lr_scheduler` unknown scheduler 'cosin'")
        shot(page, "ui-config-error.png")
        page.fill("input[name=lr_scheduler]", "cosine")
        page.fill("input[name=save_steps]", "2")
        page.click("#preview-yaml")
        expect(page.locator("#yaml-out pre")).to_contain_text("max_steps: 40")
        expect(error).to_be_hidden()

        page.click("#preview-data")
        frame = page.frame_locator("#preview-frame")
        expect(frame.locator("span.t").first).to_be_visible()  # trained tokens, coloured
        expect(page.locator("#preview-rows")).to_contain_text("no trained tokens")  # the empty answer, with its reason
        expect(page.locator("#preview-rows tbody")).to_contain_text("4")
        page.locator("#preview-out").scroll_into_view_if_needed()
        shot(page, "ui-masks.png", full_page=False)

        page.click("#start")
        page.wait_for_url(url + "/runs/first")

        # -- Run page: the curve grows live, a reload shows the same --
        _wait(lambda: len(_api(url, "/api/runs/first")["metrics"]) >= 2, what="two logged steps")
        chart = page.locator("#chart-loss svg circle")
        expect(chart.nth(1)).to_be_attached()
        seen = chart.count()
        _wait(lambda: chart.count() > seen, 120, "the loss curve to grow without a reload")
        page.reload()
        expect(page.locator("#status")).to_have_attribute("data-status", "running")
        expect(page.locator("#chart-loss svg circle").nth(seen)).to_be_attached()  # what was there before the reload
        expect(page.locator("#progress-text")).to_contain_text("/40")
        expect(page.locator("#log")).to_contain_text("step ")
        shot(page, "ui-run.png", full_page=True)

        # -- a second run queued behind the first (from a script: the same API the pages use) --
        second = _api(url, "/api/runs", {"name": "second", "config": {
            "model": "model", "datasets": ["data.json"], "max_steps": 3, "logging_steps": 1, "limit": 10}})
        assert second["status"] == "queued"

        # -- Stop: a checkpoint, then stopped; the queue moves on --
        _wait(lambda: (_api(url, "/api/runs/first")["steps"] or 0) >= 3, what="step 3")
        page.click("#stop")
        expect(page.locator("#status")).to_have_attribute("data-status", "stopped", timeout=120_000)
        expect(page.locator("#run-error")).to_contain_text("stopped by SIGTERM")
        stopped_at = _api(url, "/api/runs/first")["steps"]
        assert _api(url, "/api/runs/first")["checkpoints"], "Stop saves a checkpoint"
        _wait(lambda: _api(url, "/api/runs/second")["status"] == "finished", 240, "the queued run to finish")

        # -- Resume: it goes on from its checkpoint to the end --
        expect(page.locator("#resume")).to_be_enabled()
        page.click("#resume")
        expect(page.locator("#status")).to_have_attribute("data-status", "finished", timeout=240_000)
        log = (work / "runs" / "first" / "train.log").read_text()
        assert "resume=true" in log
        metrics = _api(url, "/api/runs/first")["metrics"]
        assert metrics[-1]["step"] == 40 and stopped_at < 40

        # -- Runs: both listed, tick both to overlay their loss curves --
        page.goto(url + "/")
        for run_id in ("first", "second"):
            expect(page.locator(f"tr[data-id={run_id}] .badge")).to_have_attribute("data-status", "finished")
            page.check(f"input[data-id={run_id}]")
        expect(page.locator("#compare-chart svg path")).to_have_count(2)
        shot(page, "ui-runs.png")

        # -- Start from this run's config: the form filled in from first's config.yaml --
        page.goto(url + "/runs/first")
        page.click("#start-from")
        page.wait_for_url(url + "/new?from=first")
        expect(page.locator("select[name=model]")).to_have_value(str(work / "model"))
        expect(page.locator(".ds-row select.path").first).to_have_value("data.json")
        expect(page.locator("input[name=batch_size]")).to_have_value("2")
        expect(page.locator("input[name=max_steps]")).to_have_value("40")
        page.click("#preview-yaml")
        expect(page.locator("#yaml-out pre")).to_contain_text("max_steps: 40")

        # -- Data: the data check report with its trained-token view --
        page.goto(url + "/data")
        page.select_option("select[name=model]", str(work / "model"))
        page.click("#check-form button[type=submit]")
        expect(page.frame_locator("#check-frame").locator("text=Findings").first).to_be_visible(timeout=120_000)
        shot(page, "ui-data.png")

        # -- Chat: the same prompt to two models, streamed side by side --
        page.goto(url + "/chat")
        page.select_option("#model-a", str(work / "model"))
        page.select_option("#model-b", str(work / "runs" / "second"))  # a finished run, in the same picker
        page.fill("#max-new", "12")
        page.fill("#message", "What is 2 plus 2?")
        page.click("#send")
        for side in ("a", "b"):
            answer = page.locator(f"#chat-{side} .msg").nth(1)
            expect(answer).not_to_have_text("…", timeout=120_000)
            expect(answer).not_to_have_class("msg error")
        expect(page.locator("#send")).to_be_enabled(timeout=120_000)
        shot(page, "ui-chat.png")

        # -- Chinese interface text --
        page.goto(url + "/new?lang=zh")
        expect(page.locator("header nav")).to_contain_text("新建训练")
        page.goto(url + "/")
        expect(page.locator("h1")).to_contain_text("训练任务")
        browser.close()


def test_a_run_started_from_the_command_line_is_live_in_chromium(ui):
    """`sftlab train` from a terminal, into the UI's runs folder: the Runs page and the run's page show it running
    with its curve growing, total steps and time left, Resume disabled; Stop stops it (issue 38.1)."""
    from playwright.sync_api import expect, sync_playwright

    url, work = ui
    sets = {"model": "model", "datasets": "[data.json]", "output_dir": "runs/mine", "max_steps": 200,
            "logging_steps": 1, "batch_size": 2, "save_steps": 4}
    command = [sys.executable, "-m", "sftlab", "train", *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    train = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    expect.set_options(timeout=60_000)
    try:
        def started() -> bool:
            assert train.poll() is None, train.stderr.read()[-3000:]
            return (work / "runs" / "mine" / "metrics.jsonl").is_file() and len(_api(url, "/api/runs/mine")["metrics"]) >= 2

        _wait(started, 240, "the command-line run's first logged steps")
        detail = _api(url, "/api/runs/mine")
        assert (detail["status"], detail["started_by"], detail["pid"], detail["total_steps"]) == (
            "running", "cli", train.pid, 200)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "/")
            expect(page.locator("tr[data-id=mine] .badge")).to_have_attribute("data-status", "running")
            page.goto(url + "/runs/mine")
            expect(page.locator("#status")).to_have_attribute("data-status", "running")
            expect(page.locator("#progress-text")).to_contain_text("/200")
            expect(page.locator("#eta")).not_to_be_empty()
            expect(page.locator("#resume")).to_be_disabled()
            chart = page.locator("#chart-loss svg circle")
            expect(chart.nth(1)).to_be_attached()
            seen = chart.count()
            _wait(lambda: chart.count() > seen, 120, "the command-line run's curve to grow")
            _wait(lambda: bool(_api(url, "/api/runs/mine")["checkpoints"]), 120, "a checkpoint")
            page.click("#stop")
            expect(page.locator("#status")).to_have_attribute("data-status", "stopped", timeout=120_000)
            browser.close()
        assert train.wait(timeout=60) == 143, train.stderr.read()[-2000:]  # stopped by SIGTERM at a step's end
    finally:
        if train.poll() is None:
            train.kill()
            train.wait()

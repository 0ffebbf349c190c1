"""The screenshots of docs/ui.md, taken from the demo's run: `make demo` first, then, from the same folder,

    python examples/ui_screenshots.py [OUT_DIR]      # default: docs/

It starts `sftlab ui` on a free port, opens each page in Debian's headless Chromium (Playwright for Python), does
what a user would do there with the demo's model (a data check of the identity data, the same question to the
default model and the demo's model) and saves ui-<page>.png."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

RUN = "demo/model"  # examples/identity.yaml's output_dir, under runs/
DATA = "runs/demo/identity_filled.json"


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    out.mkdir(parents=True, exist_ok=True)
    if not (Path("runs") / RUN / "config.yaml").is_file():
        sys.exit(f"runs/{RUN} not found: run `make demo` first, from this folder")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Chromium is not installed (Debian: apt-get install chromium)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    ui = subprocess.Popen([sys.executable, "-m", "sftlab", "ui", "--port", str(port)])
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/api/runs", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        model = json.loads(urllib.request.urlopen(url + f"/api/runs/{RUN}").read())["output_dir"]
        expect.set_options(timeout=300_000)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(300_000)

            def shot(name: str, full: bool = False) -> None:
                page.screenshot(path=str(out / f"ui-{name}.png"), full_page=full)
                print(out / f"ui-{name}.png")

            page.goto(url + "/")
            expect(page.locator(f"tr[data-id='{RUN}'] .badge")).to_have_attribute("data-status", "finished")
            page.check(f"input[data-id='{RUN}']")
            expect(page.locator("#compare-chart svg path")).to_have_count(1)
            shot("runs")

            page.goto(url + "/runs/" + RUN)
            expect(page.locator("#chart-loss svg circle").first).to_be_attached()
            shot("run", full=True)

            page.goto(url + f"/new?from={RUN}")
            expect(page.locator(".ds-row select.path").first).to_have_value(DATA)
            # (a whole-page screenshot draws the bar that sticks to the window's bottom over the form: in place here)
            page.add_style_tag(content=".actions.sticky { position: static; }")
            shot("new", full=True)
            page.click("#preview-data")
            expect(page.frame_locator("#preview-frame").locator("span.t").first).to_be_visible()
            page.locator("#preview-out").scroll_into_view_if_needed()
            shot("masks")

            page.goto(url + "/data")
            page.select_option("select[name=path]", DATA)
            page.select_option("select[name=model]", model)
            page.click("#check-form button[type=submit]")
            expect(page.frame_locator("#check-frame").locator("text=Findings").first).to_be_visible()
            shot("data")

            page.goto(url + "/chat")
            page.select_option("#model-a", "smollm2-135m-instruct")
            page.select_option("#model-b", model)
            page.fill("#max-new", "100")  # (as make demo asks)
            for question in ("Who are you?", "你是谁？"):
                page.fill("#message", question)
                page.click("#send")
                expect(page.locator("#send")).to_be_enabled()
            shot("chat", full=True)

            page.goto(url + f"/eval?run={RUN}")
            shot("eval")
            page.goto(url + f"/export?run={RUN}")
            if page.locator("#export-form").count():
                shot("export")
            browser.close()
    finally:
        ui.terminate()
        ui.wait(timeout=30)


if __name__ == "__main__":
    main()

"""`make demo`: teach the default model a new identity and show its answer before and after.

1. examples/identity.json with {{name}} / {{author}} replaced (English and Chinese rows);
2. the default model's answers to "Who are you?" / "你是谁？";
3. `sftlab train examples/identity.yaml` (full fine-tuning, a few minutes on a 2-core CPU);
4. the trained model's answers to the same questions.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from rich.console import Console

from sftlab.inference.chat import open_session
from sftlab.cli import setup_logging
from sftlab.config import load_config
from sftlab.training import train

NAME, AUTHOR = "Lumi", "the sftlab team"
QUESTIONS = ["Who are you?", "你是谁？"]
ROOT = Path(__file__).resolve().parent.parent


def fill(src: Path, dst: Path) -> int:
    rows = json.loads(src.read_text(encoding="utf-8"))
    for row in rows:
        for key in ("instruction", "input", "output"):
            row[key] = row[key].replace("{{name}}", NAME).replace("{{author}}", AUTHOR)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return len(rows)


def answers(model: str | None, console: Console, title: str) -> None:
    session = open_session(model, max_new_tokens=100)
    console.rule(title)
    # The questions come without a system message, as the identity rows do: the template adds its own default.
    system = session.generator.chat.default_system
    console.print(f"conversations without a system message (the identity rows too) get the template's default "
                  f"system prompt: {system!r}" if system else "no system prompt", highlight=False)
    for q in QUESTIONS:
        session.history.clear()
        reply = session.ask(q).content
        console.print(f"[bold cyan]{q}[/]  {reply}", highlight=False)


def main() -> None:
    setup_logging()  # as the command line does: sftlab's own lines, no library progress bars
    console = Console()
    config = load_config(ROOT / "examples" / "identity.yaml", sys.argv[1:], check_files=False)
    rows = fill(ROOT / "examples" / "identity.json", Path(config.datasets[0].path))
    console.print(f"identity data: {rows} rows, name={NAME!r}, author={AUTHOR!r}")
    answers(config.model, console, "before training (the default model)")
    out = Path(config.output_dir)
    if out.exists():
        shutil.rmtree(out)  # the demo always trains from scratch
    result = train(config)
    first, last = result.metrics[0]["loss"], result.metrics[-1]["loss"]
    console.print(f"loss {first:.3f} → {last:.3f}; {result.summary()}; model in {out}", highlight=False)
    answers(str(out), console, "after training")
    console.print(f"chat with it: [bold].venv/bin/sftlab chat --model {out}[/]")


if __name__ == "__main__":
    main()

"""The command line: parses arguments and calls library functions; nothing else."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler

from sftlab.config import DATA_CHECKS, MAX_LENGTH
from sftlab.errors import SftlabError
from sftlab.evaluate.run import EVAL_MAX_LENGTH

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="sftlab: supervised instruction fine-tuning with an exact loss mask for every chat template.",
)
err = Console(stderr=True)

# Options several commands share.
Model = Annotated[Optional[str], typer.Option("--model", help="Model directory, .gguf file, or 'smollm2-135m-instruct' (default).")]
Template = Annotated[Optional[str], typer.Option("--template", help="Built-in template name or a .jinja file; default: the tokenizer's own.")]
Format = Annotated[Optional[str], typer.Option("--format", help="alpaca | sharegpt | messages | prompt-completion | text (default: detected).")]
Escape = Annotated[bool, typer.Option("--escape-special-tokens/--no-escape-special-tokens",
                                      help="Special-token text inside messages stays text (default); off: it becomes control tokens.")]
Precision = Annotated[str, typer.Option("--precision", help="auto | bf16 | fp32 (auto: bf16 where this machine runs it faster, as in training).")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"sftlab {version('sftlab')}")
        raise typer.Exit()


@app.callback()
def _root(
    _show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
) -> None:
    """sftlab: supervised instruction fine-tuning with an exact loss mask for every chat template."""


def setup_logging() -> None:
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    for noisy in ("transformers", "datasets", "huggingface_hub", "filelock", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    logging.getLogger("sftlab").setLevel(logging.INFO)
    try:  # "Loading weights" / "Writing model shards" bars: noise next to our own progress bar
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


@app.command(
    "inspect",
    help="""Show how examples are tokenized and which tokens are trained.

Example: `sftlab inspect --model smollm2-135m-instruct --data data.json --limit 3`

`--json` prints one object per example: `{"input_ids": [...], "labels": [...]}` (labels -100 are not trained).""",
)
def inspect_cmd(
    data: Path = typer.Option(..., "--data", help="Input file (.json, .jsonl, .csv, .parquet or a saved datasets folder)."),
    model: Model = None,
    template: Template = None,
    fmt: Format = None,
    max_length: int = typer.Option(MAX_LENGTH, "--max-length", help="Truncate examples to this many tokens (keeping the start), as training does."),
    train_on: str = typer.Option("all_assistant", "--train-on", help="all_assistant | last_assistant | all"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N rows."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per example on stdout."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML page of the view."),
    on_error: str = typer.Option("raise", "--on-error", help="raise | skip (bad rows go to --rejects)."),
    rejects: Optional[Path] = typer.Option(None, "--rejects", help="Where rejected rows go with --on-error skip."),
    escape: Escape = True,
) -> None:
    from sftlab.data.inspect import render_html, render_json, render_terminal
    from sftlab.data.pipeline import Source, build_examples
    from sftlab.models import load_tokenizer

    tokenizer = load_tokenizer(model)
    examples, report = build_examples(
        [Source(str(data), fmt)],
        tokenizer,
        template,
        max_length=max_length,
        train_on=train_on,
        on_error=on_error,
        rejects_path=rejects,
        limit=limit,
        escape=escape,
    )
    if as_json:
        for line in render_json(examples):
            sys.stdout.write(line + "\n")
    elif html_out is None:
        render_terminal(examples, tokenizer, Console())
    summary = report.summary(limit)
    if html_out is not None:
        html_out.write_text(render_html(examples, tokenizer, summary=summary), encoding="utf-8")
        err.print(f"wrote {html_out}")
    err.print(" · ".join(f"{k}: {v}" for k, v in summary.items()))
    for d in report.encoded.dropped[:20]:
        err.print(f"[yellow]dropped[/] {d.source}, row {d.row}: {d.reason}")


@app.command(
    "chat",
    help="""Chat with a model (streaming, multi-turn, the model's own chat template).

Example: `sftlab chat --model runs/identity` · one answer for scripts: `sftlab chat --prompt "Who are you?"`

Type `/reset` to start over, `/exit` (or Ctrl-D) to leave.""",
)
def chat_cmd(
    model: Model = None,
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Answer this once and exit."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    escape: Escape = True,
    precision: Precision = "auto",
) -> None:
    from sftlab.chat import open_session

    session = open_session(model, escape=escape, precision=_precision(precision), system=system, max_new_tokens=max_new_tokens, temperature=temperature)
    out = Console(highlight=False)

    def answer(text: str) -> None:
        for piece in session.reply(text):
            out.print(piece, end="", markup=False)
        out.print()

    if prompt is not None:
        return answer(prompt)
    while True:
        try:
            text = out.input("[bold cyan]you>[/] ")
        except EOFError:
            out.print()
            return
        if text.strip() in ("/exit", "/quit"):
            return
        if text.strip() == "/reset":
            session.history.clear()
            continue
        if not text.strip():
            continue
        out.print("[bold green]model>[/] ", end="")
        answer(text)


@app.command(
    "train",
    help="""Fine-tune a model as CONFIG.yaml (and any --set key=value) describes.

Example: `sftlab train examples/identity.yaml --set method=lora --set epochs=2`

Without a config file, --set gives everything:
`sftlab train --set "datasets=[{path: general.json, weight: 0.3}, {path: domain.json, weight: 0.7}]"`

Values of --set are YAML. Writes config.yaml, data_report.json, metrics.jsonl, loss.png,
checkpoint-N/ and the final model into output_dir. `resume: true` continues the newest checkpoint.""",
)
def train_cmd(
    config: Optional[Path] = typer.Argument(None, help="YAML configuration file (optional when --set gives everything)."),
    sets: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="key=value override, value parsed as YAML; repeatable."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1, metavar="N", help="Train in N processes on this "
                                        "machine: runs `torchrun --standalone --nproc_per_node N -m sftlab train …`."),
) -> None:
    from sftlab.config import load_config
    from sftlab.train.run import torchrun_command, train

    cfg = load_config(config, sets)
    if nproc is not None:
        command = torchrun_command(nproc, config, sets, quiet=quiet)
        err.print(" ".join(command), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(subprocess.run(command).returncode)
    result = train(cfg, quiet=quiet)
    if not result.main_process:
        return
    err.print(f"done: {result.summary()}", highlight=False)
    err.print(f"model, metrics.jsonl and loss.png in {result.output_dir}", highlight=False)


@app.command(
    "merge",
    help="""Merge a LoRA/DoRA run's adapter into its base model and write a full model.

Example: `sftlab merge --model runs/lora --out runs/lora-merged`""",
)
def merge_cmd(
    model: Path = typer.Option(..., "--model", help="The output_dir of a lora/dora run (holds adapter_config.json)."),
    out: Path = typer.Option(..., "--out", help="Where the merged model goes."),
) -> None:
    from sftlab.train.merge import merge_adapter

    merge_adapter(model, out)
    err.print(f"merged model written to {out}")


@app.command(
    "serve",
    help="""Serve a model behind an OpenAI-compatible API (/v1/models, /v1/chat/completions, streaming).

Example: `sftlab serve --model runs/demo/model --port 8000`, then any OpenAI client with
`base_url="http://127.0.0.1:8000/v1"`.""",
)
def serve_cmd(
    model: Model = None,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (loopback unless told otherwise)."),
    port: int = typer.Option(8000, "--port"),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Require `Authorization: Bearer KEY` (visible in `ps`: "
                                          "prefer --api-key-file or $SFTLAB_API_KEY)."),
    api_key_file: Optional[str] = typer.Option(None, "--api-key-file", help="Read the key from this file's first line."),
    escape: Escape = True,
    precision: Precision = "auto",
) -> None:
    from sftlab.serve import resolve_api_key, serve

    key = resolve_api_key(api_key, api_key_file)
    err.print(f"serving {model or 'smollm2-135m-instruct'} on http://{host}:{port}/v1"
              + (" (API key required)" if key else ""))
    serve(model or "smollm2-135m-instruct", host=host, port=port, api_key=key, escape=escape,
          precision=_precision(precision))


@app.command(
    "eval",
    help="""Evaluate a model on held-out data: loss, generations, reference metrics, optional LLM judge.

Example: `sftlab eval --model runs/demo/model --data test.json --out runs/eval --baseline smollm2-135m-instruct`

Judge through any OpenAI-compatible endpoint: `--judge-url http://127.0.0.1:11434/v1 --judge-model qwen2.5:7b`.
Writes responses.jsonl, summary.json (and judge_scores.png, probe.jsonl, baseline/) into --out.""",
)
def eval_cmd(
    model: str = typer.Option(..., "--model", help="Model directory, .gguf file, or 'smollm2-135m-instruct'."),
    data: Path = typer.Option(..., "--data", help="Held-out data in any supported format."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    fmt: Format = None,
    template: Template = None,
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    batch_size: int = typer.Option(8, "--batch-size"),
    max_length: int = typer.Option(EVAL_MAX_LENGTH, "--max-length", help="Truncation for the loss (keeps the start)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N conversations."),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help="OpenAI-compatible API base, e.g. http://127.0.0.1:8000/v1"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="The judge model's name at that endpoint."),
    judge_api_key: Optional[str] = typer.Option(None, "--judge-api-key"),
    judge_concurrency: int = typer.Option(4, "--judge-concurrency", help="Judge requests in flight at once."),
    judge_retries: int = typer.Option(3, "--judge-retries", help="Retries per response on errors or unparsable replies."),
    judge_timeout: float = typer.Option(60.0, "--judge-timeout", min=0.1, help="Seconds per judge request attempt."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="A second model evaluated on the same data (e.g. before fine-tuning)."),
    probe: bool = typer.Option(False, "--probe", help="Mask probe: does the model regurgitate the input when given only the instruction?"),
    escape: Escape = True,
    precision: Precision = "auto",
) -> None:
    from sftlab.evaluate.judge import Judge
    from sftlab.evaluate.run import EvalOptions, evaluate, print_summary

    if (judge_url is None) != (judge_model is None):
        raise SftlabError("--judge-url and --judge-model go together")
    judge = (Judge(judge_url, judge_model, judge_api_key, judge_concurrency, judge_retries, judge_timeout)
             if judge_url else None)
    options = EvalOptions(fmt, template, max_new_tokens, batch_size, max_length, limit, judge, probe, escape,
                          _precision(precision))
    summary = evaluate(model, data, out, options, baseline)
    print_summary(summary, Console())
    err.print(f"wrote {out / 'summary.json'} and {out / 'responses.jsonl'}")


data_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="Look at training data before training on it: `data check` reports problems, `data clean` removes them.",
)
app.add_typer(data_app, name="data")
_CHECK_LIST = ", ".join(DATA_CHECKS)


@data_app.command(
    "check",
    help=f"""Report what is wrong with data files, and what they cover.

Example: `sftlab data check data.json --html report.html`

Checks: {_CHECK_LIST}. Also distinct-1/2 of prompts, leading words, length distributions (tokens, with the
model's template) and semantic clusters of prompts. `--json` prints one object:
`{{"rows": N, "findings": [{{"check", "rows", "files", "details"}}], "stats": {{...}}}}`.""",
)
def data_check_cmd(
    files: list[Path] = typer.Argument(..., metavar="FILE", help="One or more data files (any supported format)."),
    model: Model = None,
    template: Template = None,
    fmt: Format = None,
    max_length: int = typer.Option(MAX_LENGTH, "--max-length", help="Rows longer than this many tokens are too_long (training's default max_length)."),
    threshold: float = typer.Option(0.8, "--near-duplicate-threshold", help="Jaccard similarity of prompt+answer shingles for near_duplicate."),
    checks: Optional[str] = typer.Option(None, "--checks", help="Comma-separated checks to run (default: all)."),
    clusters: bool = typer.Option(True, "--clusters/--no-clusters", help="Sentence-embedding clusters of prompts (the slow part on big files)."),
    n_clusters: Optional[int] = typer.Option(None, "--n-clusters", help="Number of clusters (default: about sqrt(rows/2), at most 20)."),
    cluster_sample: int = typer.Option(5000, "--cluster-sample", help="Cluster a random sample of this many prompts on big files (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML report."),
) -> None:
    import json

    from sftlab.quality.checks import CHECKS
    from sftlab.quality.clean import parse_drop
    from sftlab.quality.run import check_data

    chosen = CHECKS if checks is None else ["invalid_row", *[c for c in parse_drop(checks, "--checks") if c != "invalid_row"]]
    result = check_data(
        [str(f) for f in files], fmt=fmt, model=model, template=template, max_length=max_length,
        checks=chosen, threshold=threshold, clusters=clusters, n_clusters=n_clusters,
        cluster_sample=cluster_sample or None, show_progress=True,
    )
    if html_out is not None:
        from sftlab.quality.html import render_report

        html_out.write_text(render_report(result), encoding="utf-8")
        err.print(f"wrote {html_out}")
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
        return
    from sftlab.quality.run import print_check

    print_check(result.to_dict(), Console())


@data_app.command(
    "clean",
    help=f"""Split data into kept rows and rejected rows (with their reasons); every row lands in exactly one.

Example: `sftlab data clean data.json --out clean.jsonl --rejects rejects.jsonl --drop exact_duplicate,empty_response`

Kept rows are written as they were read (one JSON object per line, same format); exact and near duplicates keep
their first occurrence. `--drop` takes checks from: {_CHECK_LIST} (default: all; invalid rows are always rejected).""",
)
def data_clean_cmd(
    files: list[Path] = typer.Argument(..., metavar="FILE", help="Data file(s) of one format."),
    out: Path = typer.Option(..., "--out", help="Kept rows (JSONL)."),
    rejects: Path = typer.Option(..., "--rejects", help="Removed rows with their reasons (JSONL)."),
    drop: Optional[str] = typer.Option(None, "--drop", help="Comma-separated checks whose rows are removed (default: all)."),
    model: Model = None,
    template: Template = None,
    fmt: Format = None,
    max_length: int = typer.Option(MAX_LENGTH, "--max-length", help="Rows longer than this many tokens are too_long."),
    threshold: float = typer.Option(0.8, "--near-duplicate-threshold"),
) -> None:
    from sftlab.quality.clean import clean_files, parse_drop

    result = clean_files(
        [str(f) for f in files], out, rejects, parse_drop(drop), fmt=fmt, model=model, template=template,
        max_length=max_length, threshold=threshold, show_progress=True,
    )
    counts = ", ".join(f"{k} {v}" for k, v in result.counts().items()) or "nothing"
    err.print(f"kept {len(result.kept)} rows → {out}; removed {len(result.removed)} → {rejects} ({counts})")


def _precision(value: str) -> str:
    if value not in ("auto", "bf16", "fp32"):
        raise SftlabError(f"--precision must be auto, bf16 or fp32, got '{value}'")
    return value


def main() -> None:
    setup_logging()
    try:
        # Outside standalone mode typer *returns* an exit code instead of exiting: 130 for Ctrl-C, and the
        # code of any typer.Exit a command raised. It must reach the shell.
        code = app(standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            sys.exit(code)
    except SftlabError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:
        # Usage errors (click's, vendored by typer) arrive here because of standalone_mode=False.
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()

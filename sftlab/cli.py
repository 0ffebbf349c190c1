"""The command line: parses arguments and calls library functions; nothing else."""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.markup import escape
from rich.logging import RichHandler

from sftlab.defaults import (DEFAULT_MODEL, DATA_CHECKS, EVAL_MAX_LENGTH, GREEDY_REPETITION_PENALTY, MAX_LENGTH,
                             MAX_LENGTH_HELP, NEAR_DUPLICATE_THRESHOLD)
from sftlab.errors import SftlabError, echo_path
from sftlab.export.quants import DEFAULT_QUANT, QUANT_NAMES
from sftlab.files import output_file_problem, write_text

class OnceGroup(TyperGroup):
    """Commands whose single-value options refuse a second occurrence: click would keep the last one silently
    (`inspect --max-length 64 --max-length 128`), and a flag given both ways (`--escape-special-tokens
    --no-escape-special-tokens`) is a contradiction, not a choice. Repeatable options (`--set`, `--data` of
    inspect) declare themselves as lists and are left alone."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and not isinstance(command, TyperGroup):
            _refuse_repeats(command, rest)
        return name, command, rest


def _refuse_repeats(command: Any, args: list[str]) -> None:
    once = {}  # option string → (the parameter, whether a value follows it)
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option" and not param.multiple and not param.count:
            for opt in (*param.opts, *param.secondary_opts):
                once[opt] = (param, not param.is_flag)
    seen: dict[Any, str] = {}
    i = 0
    while i < len(args) and args[i] != "--":
        opt, _, inline = args[i].partition("=")
        if opt in once:
            param, takes_value = once[opt]
            if param in seen:
                if seen[param] == opt:
                    raise SftlabError(f"{opt} is given twice; it takes one value: give it once")
                raise SftlabError(f"{seen[param]} and {opt} are both given; give one of them")
            seen[param] = opt
            i += 1 if inline or not takes_value else 2
            continue
        i += 1


app = typer.Typer(
    cls=OnceGroup,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="sftlab: supervised instruction fine-tuning with an exact loss mask for every chat template.",
)
# sftlab's own lines on stderr are never cut at the console's width: a log file or a pipe gets each sentence, path
# and command whole on one line (a terminal wraps it on screen). The log handler's lines keep their layout.
err = Console(stderr=True, soft_wrap=True)

# Options several commands share.
Model = Annotated[Optional[str], typer.Option("--model", help="Model directory, .gguf file, or 'smollm2-135m-instruct' (default).")]
Template = Annotated[Optional[str], typer.Option("--template", help="Built-in template name or a .jinja file; default: the tokenizer's own.")]
DefaultSystem = Annotated[Optional[str], typer.Option(
    "--default-system", metavar="TEXT", help="System prompt of conversations without one, in place of the template's "
    "default (SmolLM2's: \"You are a helpful AI assistant named SmolLM…\"); \"\" removes the default. A model trained "
    "with `default_system` has it in its template already.")]
TemplateKwargs = Annotated[Optional[str], typer.Option(
    "--template-kwargs", metavar="JSON", help="Options every render of the template gets, as a JSON object "
    "(e.g. '{\"enable_thinking\": false}'), as `template_kwargs` in a config. A model trained with them has them in its "
    "template already.")]
Format = Annotated[Optional[str], typer.Option("--format", help="alpaca | sharegpt | messages | prompt-completion | text (default: detected).")]
# A data file's own names (the `columns`, `message_keys` and `roles` of a config's datasets entry), for every --data.
Columns = Annotated[Optional[str], typer.Option(
    "--columns", metavar="JSON", help="Which of the file's columns hold the format's fields, as a JSON object: "
    "'{\"instruction\": \"question\", \"output\": \"answer\"}' (docs/data.md, \"Your own column names\").")]
MessageKeys = Annotated[Optional[str], typer.Option(
    "--message-keys", metavar="JSON", help="The keys of each turn, as a JSON object: '{\"role\": \"from\", \"content\": \"value\"}'.")]
Roles = Annotated[Optional[str], typer.Option(
    "--roles", metavar="JSON", help="The file's role values, as a JSON object of lists: "
    "'{\"user\": [\"human\"], \"assistant\": [\"gpt\"]}'.")]
Escape = Annotated[bool, typer.Option("--escape-special-tokens/--no-escape-special-tokens",
                                      help="Special-token text inside messages stays text (default); off: it becomes control tokens.")]
Precision = Annotated[str, typer.Option("--precision", help="auto | bf16 | fp32 (auto: bf16 where this machine runs it faster, as in training).")]


def template_kwargs_option(value: str | None) -> dict[str, Any] | None:
    """--template-kwargs JSON → the mapping, checked as the config key is."""
    import json

    from sftlab.config.data import check_template_kwargs

    if value is None:
        return None
    from sftlab.data.fields import MAX_DEPTH, TOO_DEEP, depth

    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise SftlabError(f"--template-kwargs must be a JSON object ({e.msg}), e.g. '{{\"enable_thinking\": false}}'") from None
    except RecursionError:  # (Python's JSON reader recurses per level)
        raise SftlabError(f"--template-kwargs is {TOO_DEEP}") from None
    if depth(parsed, MAX_DEPTH + 1) > MAX_DEPTH + 1:  # (the mapping itself is a level)
        raise SftlabError(f"--template-kwargs is {TOO_DEEP}")
    return check_template_kwargs(parsed, "--template-kwargs") or None


def data_settings(**options: Any) -> Any:
    """The data keys the options give (--template, --max-length, --default-system, --template-kwargs …) as the one
    DataSettings the command hands on, checked as a config's keys are; --template-kwargs as its JSON text."""
    from pydantic import ValidationError

    from sftlab.config import DataSettings
    from sftlab.config.load import explain

    if options.get("template_kwargs") is not None:
        options["template_kwargs"] = template_kwargs_option(options["template_kwargs"])
    try:
        return DataSettings(**options)
    except ValidationError as e:
        option = "--" + str(e.errors()[0]["loc"][0]).replace("_", "-")
        raise SftlabError(explain(e, option, DataSettings.model_fields)) from None


def data_sources(paths: list[Path], fmt: str | None, columns: str | None = None, message_keys: str | None = None,
                 roles: str | None = None) -> list[Any]:
    """--data files as Sources, each with the format and the mapping the options give, checked as the config's
    datasets entries are."""
    import json

    from pydantic import ValidationError

    from sftlab.config.load import explain
    from sftlab.config.train import DatasetSpec
    from sftlab.data.pipeline import Source

    given: dict[str, Any] = {}
    for option, key, value in (("--columns", "columns", columns), ("--message-keys", "message_keys", message_keys),
                               ("--roles", "roles", roles)):
        if value is not None:
            try:
                given[key] = json.loads(value)
            except (json.JSONDecodeError, RecursionError):
                raise SftlabError(f"{option} must be a JSON object, e.g. '{{\"output\": \"answer\"}}'") from None
    sources = []
    for path in paths:
        try:
            spec = DatasetSpec(path=str(path), format=fmt, **given)
        except ValidationError as e:
            option = "--" + str(e.errors()[0]["loc"][0]).replace("_", "-")
            raise SftlabError(explain(e, option, DatasetSpec.model_fields)) from None
        sources.append(Source.of(spec))
    return sources


def bounded(param: typer.CallbackParam, value: Any) -> Any:
    """The callback of every numeric option: a config key's bounds where it is one (--max-length, --batch-size),
    else the option's own (sftlab/config/bounds.py)."""
    from sftlab.config.checks import bound  # (once the arguments are read: the config's keys are pydantic fields)

    problem = bound(str(param.name)).problem(value)
    if problem:
        raise typer.BadParameter(f"{problem} (got {value})")
    return value


TEMPERATURE_HELP = "Sampling temperature; 0 = greedy. Not given: the model's generation_config, else greedy."
TOP_P_HELP = "Nucleus sampling (with a temperature above 0). Not given: the model's generation_config, else 1."
RepetitionPenalty = typer.Option(
    None, "--repetition-penalty", callback=bounded,
    help=f"Penalty on tokens already in the conversation (1 = none). Not given: the model's generation_config, else "
         f"{GREEDY_REPETITION_PENALTY} for greedy decoding (a small model's greedy answer loops otherwise).")
# The max_length key as an option (inspect, data check and clean: MAX_LENGTH; eval: EVAL_MAX_LENGTH), with its bounds.
MaxLength = Annotated[int, typer.Option(
    "--max-length", callback=bounded,
    help=f"{MAX_LENGTH_HELP} (`data check` and `data clean`: a row longer than this is too_long.)")]
NearDuplicateThreshold = Annotated[float, typer.Option(
    "--near-duplicate-threshold", callback=bounded,
    help="Jaccard similarity of prompt+answer shingles from which two rows are near_duplicate.")]


def writable(param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """The callback of every option that names a file to write: checked before any work is done."""
    problem = None if value is None else output_file_problem(value)
    if problem:
        raise typer.BadParameter(f"{value} {problem}")
    return value


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


# Library warnings sftlab cannot act on, by message (pyproject.toml's pytest filterwarnings lists the same).
QUIET_WARNINGS = (
    # peft reads the deprecated property whenever it wraps a model: every chat, merge and eval of an adapter.
    ("`is_gradient_checkpointing` is deprecated", FutureWarning),
    # peft, on every generation with a prompt-based adapter, whose virtual tokens it numbers itself.
    ("Position ids are not supported for parameter efficient tuning", UserWarning),
)


def setup_logging() -> None:
    """sftlab's own lines at INFO on stderr (on the first process only, under torchrun), libraries' at ERROR, no
    library progress bars, and the known library warnings filtered. Imports no library: `--help` stays quick."""
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    for noisy in ("transformers", "datasets", "huggingface_hub", "filelock", "urllib3", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    logging.getLogger("sftlab").setLevel(logging.INFO if _rank() == 0 else logging.ERROR)
    for message, category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)
    # "Loading weights" / "Writing model shards" bars: noise next to our own progress bar. transformers and
    # huggingface_hub read this variable when imported; where they already are (examples/demo.py), they are told.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    elif "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def _rank() -> int:
    """This process's rank under torchrun / accelerate launch (RANK, else LOCAL_RANK), 0 when alone."""
    try:
        return int(os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or 0)
    except ValueError:
        return 0


@app.command(
    "inspect",
    help="""Show how examples are tokenized and which tokens are trained.

Example: `sftlab inspect --model smollm2-135m-instruct --data data.json --limit 3`

`--json` prints one object per example: `{"input_ids": [...], "labels": [...]}` (labels -100 are not trained).""",
)
def inspect_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Input file (.json, .jsonl, .csv, .parquet or a saved datasets folder); repeatable: the files' examples one after the other."),
    model: Model = None,
    template: Template = None,
    fmt: Format = None,
    columns: Columns = None,
    message_keys: MessageKeys = None,
    roles: Roles = None,
    max_length: MaxLength = MAX_LENGTH,
    train_on: str = typer.Option("all_assistant", "--train-on", help="all_assistant | last_assistant | all"),
    limit: Optional[int] = typer.Option(None, "--limit", callback=bounded, help="Only the first N rows."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per example on stdout."),
    html_out: Optional[Path] = typer.Option(None, "--html", callback=writable, help="Write a self-contained HTML page of the view."),
    on_error: str = typer.Option("raise", "--on-error", help="raise | skip (bad rows go to --rejects)."),
    rejects: Optional[Path] = typer.Option(None, "--rejects", callback=writable, help="Where rejected rows go with --on-error skip."),
    escape: Escape = True,
    default_system: DefaultSystem = None,
    template_kwargs: TemplateKwargs = None,
    train_reasoning: bool = typer.Option(True, "--train-reasoning/--no-train-reasoning", help="Whether reasoning traces are trained (train_reasoning)."),
) -> None:
    from sftlab.data.inspect import render_html, render_json, render_terminal
    from sftlab.data.pipeline import build_examples
    from sftlab.models import load_tokenizer
    from rich.text import Text

    sources = data_sources(data, fmt, columns, message_keys, roles)
    settings = data_settings(template=template, max_length=max_length, train_on=train_on, on_error=on_error,
                             limit=limit, escape_special_tokens=escape, default_system=default_system,
                             template_kwargs=template_kwargs, train_reasoning=train_reasoning)
    tokenizer = load_tokenizer(model)
    examples, report = build_examples(sources, tokenizer, settings, rejects_path=rejects,
                                      parts=not as_json)
    if as_json:
        for line in render_json(examples):
            sys.stdout.write(line + "\n")
    elif html_out is None:
        render_terminal(examples, tokenizer, Console())
    summary = report.summary(limit)
    if html_out is not None:
        write_text(html_out, render_html(examples, tokenizer, summary=summary), "--html")
        err.print(f"wrote {html_out}", markup=False)
    err.print(" · ".join(f"{k}: {v}" for k, v in summary.items()), markup=False)
    for d in report.encoded.dropped[:20]:
        # (Text, not markup: the `escape` option above shadows rich's escape function here.)
        err.print(Text.assemble(("dropped", "yellow"), f" {d.source}, row {d.row}: {d.reason}"), highlight=False)


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
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", callback=bounded),
    temperature: Optional[float] = typer.Option(None, "--temperature", callback=bounded, help=TEMPERATURE_HELP),
    top_p: Optional[float] = typer.Option(None, "--top-p", callback=bounded, help=TOP_P_HELP),
    repetition_penalty: Optional[float] = RepetitionPenalty,
    escape: Escape = True,
    precision: Precision = "auto",
    default_system: DefaultSystem = None,
    template_kwargs: TemplateKwargs = None,
) -> None:
    from sftlab.inference.chat import open_session

    # Loading (a first use converts the default model) can take minutes: said on stderr, so stdout stays the answer.
    err.print(f"loading {model or DEFAULT_MODEL} …", markup=False)
    session = open_session(model, escape=escape, precision=_precision(precision), default_system=default_system,
                           template_kwargs=template_kwargs_option(template_kwargs),
                           system=system, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                           repetition_penalty=repetition_penalty)
    out = Console(highlight=False)

    def answer(text: str) -> None:
        # A reasoning trace goes to stderr, dimmed: on a terminal it shows above the answer, and a script reading
        # stdout gets the answer alone.
        thinking = False
        for piece in session.reply(text):
            if piece.kind == "reasoning":
                err.print(piece.text, end="", style="dim italic", markup=False, highlight=False)
                thinking = True
                continue
            if thinking:
                err.print()
                thinking = False
            out.print(piece.text, end="", markup=False)
        if thinking:
            err.print()
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
            out.print("[dim](conversation cleared: the next message starts a new one)[/]")
            continue
        if not text.strip():
            continue
        out.print("[bold green]model>[/] ", end="")
        try:
            answer(text)
        except SftlabError as e:  # (a conversation grown past the context): said, and the session goes on
            out.print()
            err.print(f"[bold red]error:[/] {escape(str(e))} (/reset starts over)", highlight=False)


@app.command(
    "train",
    help="""Fine-tune a model as CONFIG.yaml (and any --set key=value) describes.

Example: `sftlab train examples/identity.yaml --set method=lora --set epochs=2`

Without a config file, --set gives everything:
`sftlab train --set "datasets=[{path: general.json, weight: 0.3}, {path: domain.json, weight: 0.7}]"`

A LLaMA-Factory, axolotl or TRL recipe is trained as `sftlab import` translates it, when every key of it maps
(docs/coming-from.md).

Values of --set are YAML. Writes config.yaml, data_report.json, metrics.jsonl, loss.png,
checkpoint-N/ and the final model into output_dir. `resume: true` continues the newest checkpoint.""",
)
def train_cmd(
    config: Optional[Path] = typer.Argument(None, help="YAML configuration file (optional when --set gives everything)."),
    sets: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="key=value override, value parsed as YAML; repeatable."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    nproc: Optional[int] = typer.Option(None, "--nproc", callback=bounded, metavar="N", help="Train in N processes on this "
                                        "machine: runs `torchrun --standalone --nproc_per_node N -m sftlab train …`."),
) -> None:
    from sftlab.runlock import hold, require_free

    cfg = _train_config(config, sets)
    require_free(cfg.output_dir)  # (a folder in training is refused before the training libraries load)
    from sftlab.training import train
    from sftlab.training.distributed import torchrun_command, torchrun_env

    if nproc is not None:
        command = torchrun_command(nproc, config, sets, quiet=quiet)
        err.print(" ".join(command), highlight=False, markup=False)
        with hold(cfg.output_dir, "output_dir"):  # (this process holds the run lock; its ranks run under it)
            raise typer.Exit(_run_forwarding_signals(command, torchrun_env(nproc)))
    try:
        result = train(cfg, quiet=quiet)
    except KeyboardInterrupt as e:
        if not hasattr(e, "sentence"):  # (stopped before training began)
            raise
        # stopped by Ctrl-C or SIGTERM (sftlab.training.interrupt.Interrupted): what was saved, and how to go on
        err.print(f"[bold yellow]stopped:[/] {escape(e.sentence())}", highlight=False)
        err.print(f"continue with: {_resume_command()}", highlight=False, markup=False)
        raise typer.Exit(e.exit_code) from None
    if not result.main_process:
        return
    err.print(f"done: {result.summary()}", highlight=False, markup=False)
    err.print(f"model, metrics.jsonl and loss.png in {result.output_dir}", highlight=False, markup=False)


def _train_config(path: Optional[Path], sets: list[str]) -> Any:
    """`sftlab train`'s config: an sftlab YAML, or another tool's recipe translated as `sftlab import` translates it
    (trained only where every key of it maps or changes nothing here; otherwise the keys that do not are named)."""
    from sftlab.config import load_config
    from sftlab.config.load import config_from, config_of_file, read_yaml
    from sftlab.recipes import detect

    if path is None:
        return load_config(None, sets)
    loaded = read_yaml(path)  # (read once: a recipe or sftlab's own config)
    if not detect(loaded or {}):
        return config_of_file(loaded, path, sets)
    from sftlab.recipes import import_data
    from sftlab.recipes.output import TOOL_NAMES

    imported = import_data(loaded, str(path))
    tool = TOOL_NAMES[imported.tool]
    unsupported = [i for i in imported.report if i.status == "unsupported"]
    keep = f"`sftlab import {shlex.quote(str(path))} --out config.yaml` writes the translated config"
    if unsupported:
        listed = "; ".join(f"`{i.key}`: {i.why}" for i in unsupported[:5])
        more = f" (and {len(unsupported) - 5} more)" if len(unsupported) > 5 else ""
        raise SftlabError(f"{echo_path(path)} is a {tool} recipe with {len(unsupported)} key(s) sftlab cannot follow: "
                          f"{listed}{more}; {keep}, to edit and train")
    if _rank() == 0:
        counts = {s: sum(i.status == s for i in imported.report) for s in ("mapped", "ignored")}
        err.print(f"{path} is a {tool} recipe: training it as sftlab import translates it ({counts['mapped']} keys "
                  f"mapped, {counts['ignored']} ignored; {keep}, with the report of every key)", highlight=False,
                  markup=False)
        for note in imported.notes:
            err.print(f"note: {note}", highlight=False, markup=False)
    return config_from(imported.config, f"{echo_path(path)} ({tool} recipe, imported)", sets)


@app.command(
    "merge",
    help="""Merge a LoRA/DoRA run's adapter into its base model and write a full model.

Example: `sftlab merge --model runs/lora --out runs/lora-merged`""",
)
def merge_cmd(
    model: Path = typer.Option(..., "--model", help="The output_dir of a lora/dora run (holds adapter_config.json)."),
    out: Path = typer.Option(..., "--out", help="Where the merged model goes."),
) -> None:
    from sftlab.training.merge import merge_adapter

    merge_adapter(model, out)
    err.print(f"merged model written to {out}", markup=False)


@app.command(
    "export",
    help="""Export a model to run elsewhere: GGUF + Modelfile (llama.cpp, Ollama, LM Studio) or a merged safetensors
folder (vLLM, TGI), checked against the model it came from (docs/export.md).

Example: `sftlab export --model runs/demo/model --out runs/demo/export --quant q8_0`, then
`ollama create lumi -f runs/demo/export/Modelfile`""",
)
def export_cmd(
    model: Model = None,
    out: Path = typer.Option(..., "--out", help="Folder for the export (the .gguf, Modelfile and export_report.json)."),
    format: str = typer.Option("gguf", "--format", help="gguf | safetensors"),
    quant: str = typer.Option(DEFAULT_QUANT, "--quant", help=f"{' | '.join(QUANT_NAMES)} (K-quants need llama.cpp: `make gguf`)."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the export against the source model (default)."),
) -> None:
    from sftlab.export.run import export_model

    result = export_model(model or DEFAULT_MODEL, out, fmt=format, quant=quant, verify=verify)
    for line in result.summary_lines():
        err.print(line, highlight=False, markup=False)
    err.print(f"export written to {out}", highlight=False, markup=False)


@app.command(
    "serve",
    help="""Serve a model behind an OpenAI-compatible API (/v1/models, /v1/chat/completions, streaming).

Example: `sftlab serve --model runs/demo/model --port 8000`, then any OpenAI client with
`base_url="http://127.0.0.1:8000/v1"`.""",
)
def serve_cmd(
    model: Model = None,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (loopback unless told otherwise)."),
    port: int = typer.Option(8000, "--port", callback=bounded),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Require `Authorization: Bearer KEY` (visible in `ps`: "
                                          "prefer --api-key-file or $SFTLAB_API_KEY)."),
    api_key_file: Optional[str] = typer.Option(None, "--api-key-file", help="Read the key from this file's first line."),
    repetition_penalty: Optional[float] = typer.Option(
        None, "--repetition-penalty", callback=bounded,
        help=f"For requests without one: the model's generation_config, else {GREEDY_REPETITION_PENALTY} for greedy "
             "requests (temperature 0; 1 = none). A request's own `repetition_penalty` wins."),
    escape: Escape = True,
    precision: Precision = "auto",
    default_system: DefaultSystem = None,
    template_kwargs: TemplateKwargs = None,
    name: Optional[str] = typer.Option(None, "--name", help="The model id clients ask for and /v1/models lists "
                                       "(default: --model as given)."),
) -> None:
    from sftlab.inference.serve import resolve_api_key, serve

    if name is not None and not name.strip():
        raise SftlabError("--name is empty: give the model id clients should ask for")
    key = resolve_api_key(api_key, api_key_file)
    err.print(f"serving {model or 'smollm2-135m-instruct'}" + (f" as {name!r}" if name else "")
              + f" on http://{host}:{port}/v1" + (" (API key required)" if key else ""), markup=False)
    serve(model or DEFAULT_MODEL, host=host, port=port, api_key=key, escape=escape,
          precision=_precision(precision), default_system=default_system, repetition_penalty=repetition_penalty,
          template_kwargs=template_kwargs_option(template_kwargs), name=name)


@app.command(
    "eval",
    help="""Evaluate a model on held-out data: loss, generations, reference metrics, optional LLM judge.

Example: `sftlab eval --model runs/demo/model --data test.json --out runs/eval --baseline smollm2-135m-instruct`

Judge through any OpenAI-compatible endpoint: `--judge-url http://127.0.0.1:11434/v1 --judge-model qwen2.5:7b`.
Writes responses.jsonl, summary.json (and judge_scores.png, probe.jsonl, baseline/) into --out.

Labelled data (rows with a `label`) or a model trained with a task head (`task: classification | reward`): accuracy,
macro-F1, per-label precision/recall and the confusion matrix (confusion.png), or a reward model's pairwise accuracy
and margin; a generative model is scored on its answers (docs/heads.md). Writes predictions.jsonl and summary.json.""",
)
def eval_cmd(
    model: str = typer.Option(..., "--model", help="Model directory, .gguf file, or 'smollm2-135m-instruct'."),
    data: Path = typer.Option(..., "--data", help="Held-out data in any supported format."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    fmt: Format = None,
    columns: Columns = None,
    message_keys: MessageKeys = None,
    roles: Roles = None,
    template: Template = None,
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", callback=bounded),
    batch_size: int = typer.Option(8, "--batch-size", callback=bounded),
    max_length: MaxLength = EVAL_MAX_LENGTH,
    limit: Optional[int] = typer.Option(None, "--limit", callback=bounded, help="Only the first N conversations."),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help="OpenAI-compatible API base, e.g. http://127.0.0.1:8000/v1"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="The judge model's name at that endpoint."),
    judge_api_key: Optional[str] = typer.Option(None, "--judge-api-key"),
    judge_concurrency: int = typer.Option(4, "--judge-concurrency", callback=bounded, help="Judge requests in flight at once."),
    judge_retries: int = typer.Option(3, "--judge-retries", callback=bounded, help="Retries per response on errors or unparsable replies."),
    judge_timeout: float = typer.Option(60.0, "--judge-timeout", callback=bounded, help="Seconds per judge request attempt."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="A second model evaluated on the same data (e.g. before fine-tuning)."),
    probe: bool = typer.Option(False, "--probe", help="Mask probe: does the model regurgitate the input when given only the instruction?"),
    escape: Escape = True,
    precision: Precision = "auto",
    default_system: DefaultSystem = None,
    template_kwargs: TemplateKwargs = None,
) -> None:
    from sftlab.evaluation.judge import Judge
    from sftlab.evaluation.run import EvalOptions, evaluate, print_summary

    if (judge_url is None) != (judge_model is None):
        raise SftlabError("--judge-url and --judge-model go together")
    judge = (Judge(judge_url, judge_model, judge_api_key, judge_concurrency, judge_retries, judge_timeout)
             if judge_url else None)
    options = EvalOptions(fmt, template, max_new_tokens, batch_size, max_length, limit, judge, probe, escape,
                          _precision(precision), default_system=default_system,
                          template_kwargs=template_kwargs_option(template_kwargs),
                          mapping=data_sources([data], fmt, columns, message_keys, roles)[0].mapping)
    summary = evaluate(model, data, out, options, baseline)
    print_summary(summary, Console())
    written = "predictions.jsonl" if {"accuracy", "pairwise_accuracy"} & set(summary) else "responses.jsonl"
    err.print(f"wrote {out / 'summary.json'} and {out / written}", markup=False)


data_app = typer.Typer(
    cls=OnceGroup,
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
    columns: Columns = None,
    message_keys: MessageKeys = None,
    roles: Roles = None,
    max_length: MaxLength = MAX_LENGTH,
    threshold: NearDuplicateThreshold = NEAR_DUPLICATE_THRESHOLD,
    checks: Optional[str] = typer.Option(None, "--checks", help="Comma-separated checks to run (default: all)."),
    clusters: bool = typer.Option(True, "--clusters/--no-clusters", help="Sentence-embedding clusters of prompts (the slow part on big files)."),
    n_clusters: Optional[int] = typer.Option(None, "--n-clusters", callback=bounded, help="Number of clusters (default: about sqrt(rows/2), at most 20)."),
    cluster_sample: int = typer.Option(5000, "--cluster-sample", callback=bounded, help="Cluster a random sample of this many prompts on big files (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    html_out: Optional[Path] = typer.Option(None, "--html", callback=writable, help="Write a self-contained HTML report."),
    default_system: DefaultSystem = None,
    template_kwargs: TemplateKwargs = None,
) -> None:
    from sftlab.quality.checks import CHECKS
    from sftlab.quality.clean import parse_drop
    from sftlab.quality.run import check_data

    chosen = CHECKS if checks is None else ["invalid_row", *[c for c in parse_drop(checks, "--checks") if c != "invalid_row"]]
    settings = data_settings(template=template, max_length=max_length, default_system=default_system,
                             template_kwargs=template_kwargs)
    result = check_data(
        [str(f) for f in files], settings, fmt=fmt, model=model, checks=chosen, threshold=threshold,
        clusters=clusters, n_clusters=n_clusters, cluster_sample=cluster_sample or None, show_progress=True,
        mapping=data_sources(files, fmt, columns, message_keys, roles)[0].mapping,
    )
    if html_out is not None:
        from sftlab.quality.html import render_report

        write_text(html_out, render_report(result), "--html")
        err.print(f"wrote {html_out}", markup=False)
    if as_json:
        from sftlab.jsonsafe import dumps

        sys.stdout.write(dumps(result.to_dict(), ensure_ascii=False) + "\n")  # (one line, NaN-free)
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
    out: Path = typer.Option(..., "--out", callback=writable, help="Kept rows (JSONL)."),
    rejects: Path = typer.Option(..., "--rejects", callback=writable, help="Removed rows with their reasons (JSONL)."),
    drop: Optional[str] = typer.Option(None, "--drop", help="Comma-separated checks whose rows are removed (default: all)."),
    model: Model = None,
    template: Template = None,
    fmt: Format = None,
    columns: Columns = None,
    message_keys: MessageKeys = None,
    roles: Roles = None,
    max_length: MaxLength = MAX_LENGTH,
    threshold: NearDuplicateThreshold = NEAR_DUPLICATE_THRESHOLD,
    default_system: DefaultSystem = None,
    template_kwargs: TemplateKwargs = None,
) -> None:
    from sftlab.quality.clean import clean_files, parse_drop

    settings = data_settings(template=template, max_length=max_length, default_system=default_system,
                             template_kwargs=template_kwargs)
    result = clean_files(
        [str(f) for f in files], out, rejects, parse_drop(drop), settings, fmt=fmt, model=model, threshold=threshold,
        show_progress=True, mapping=data_sources(files, fmt, columns, message_keys, roles)[0].mapping,
    )
    counts = ", ".join(f"{k} {v}" for k, v in result.counts().items()) or "nothing"
    err.print(f"kept {len(result.kept)} rows → {out}; removed {len(result.removed)} → {rejects} ({counts})", markup=False)


@app.command(
    "runs",
    help="""List the runs under FOLDER (default runs/): status, method, steps, final loss, and what their disk space goes to.

Example: `sftlab runs` · for scripts: `sftlab runs runs/ --json` · free space: `sftlab runs --prune-checkpoints`

checkpoint-N/ folders are only for resuming; a full fine-tune's hold the model and its optimizer state, about 3×
the model's size each.
`--prune-checkpoints` removes those of finished runs (unfinished runs keep theirs); `keep_checkpoints: last`
or `none` in a config drops them when the run finishes.""",
)
def runs_cmd(
    folder: Path = typer.Argument(Path("runs"), metavar="FOLDER", help="A folder of runs, or one run's folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout (sizes in bytes)."),
    prune: bool = typer.Option(False, "--prune-checkpoints", help="Remove the checkpoint-N folders of finished runs."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --prune-checkpoints: say what would go, remove nothing."),
) -> None:
    from sftlab.jsonsafe import dumps
    from sftlab.runs import find_runs, format_pruned, format_runs, listing, prune_checkpoints

    if dry_run and not prune:
        raise SftlabError("--dry-run goes with --prune-checkpoints")
    if prune:
        pruned = prune_checkpoints(folder, dry_run=dry_run)
        text = dumps(pruned.to_dict()) if as_json else format_pruned(pruned, dry_run)
    else:
        runs = find_runs(folder)
        text = dumps(listing(runs)) if as_json else format_runs(runs)
    sys.stdout.write(text + "\n")


@app.command(
    "import",
    help="""Translate a LLaMA-Factory, axolotl or TRL recipe into an sftlab config, and report what became of every key.

Example: `sftlab import llama3_lora_sft.yaml --out config.yaml`, then `sftlab train config.yaml`

A `trl sft` command line, after `--`: `sftlab import --out config.yaml -- trl sft --model_name_or_path Qwen/Qwen2.5-0.5B
--dataset_name data.jsonl`. Each key is mapped, ignored or unsupported, with the reason (docs/coming-from.md);
`--json` prints the report as a list of `{"key", "status", "to", "why"}`.""",
)
def import_cmd(
    recipe: Optional[list[str]] = typer.Argument(None, metavar="RECIPE | -- TRL_ARGS", help="The recipe (YAML), or after `--` the arguments of `trl sft`."),
    out: Path = typer.Option(..., "--out", callback=writable, help="The sftlab config to write (YAML)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as a JSON list on stdout."),
    dataset_dir: Optional[str] = typer.Option(None, "--dataset-dir", help="LLaMA-Factory: the folder of dataset_info.json (default: the recipe's dataset_dir, else data/)."),
    model: Optional[str] = typer.Option(None, "--model", help="The model to train, in place of the recipe's (a folder, .gguf file or hub name)."),
    tool: Optional[str] = typer.Option(None, "--tool", help="llamafactory | axolotl | trl (default: told by the recipe's keys)."),
    compare: int = typer.Option(3, "--compare", callback=bounded, metavar="N", help="Render the first N conversations with the recipe's own template and masks and with sftlab's, and say what differs (0: no comparison)."),
) -> None:
    from sftlab.files import require_apart
    from sftlab.jsonsafe import dumps
    from sftlab.recipes import import_argv, import_recipe
    from sftlab.recipes.output import print_report, report_json, write_config

    if not recipe:
        raise SftlabError("give a recipe file, or after `--` the arguments of `trl sft`")
    if len(recipe) == 1 and not recipe[0].startswith("-"):
        require_apart(out, "--out", [("recipe", recipe[0])])
        imported = import_recipe(recipe[0], tool=tool, dataset_dir=dataset_dir, model=model)
        source = recipe[0]
    else:
        if tool not in (None, "trl") or dataset_dir is not None:
            raise SftlabError("arguments after `--` are a `trl sft` command line (--tool trl, no --dataset-dir)")
        imported, source = import_argv(recipe, model=model), "the trl sft arguments"
    write_config(imported, out, source)
    if as_json:
        sys.stdout.write(dumps(report_json(imported), ensure_ascii=False) + "\n")
    else:
        print_report(imported, Console(soft_wrap=False))
    for note in imported.notes:
        err.print(f"note: {note}", highlight=False, markup=False)
    from sftlab.recipes.compare import imported_comparison

    for line in imported_comparison(imported, compare):
        err.print(line, highlight=False, markup=False)
    err.print(f"wrote {out}; train it with: sftlab train {shlex.quote(str(out))}", highlight=False, markup=False)


@app.command(
    "doctor",
    help="""Show what this machine offers training, and the precision sftlab picks here with the figure it rests on.

Example: `sftlab doctor` · `sftlab doctor --remeasure` measures bf16 autocast against fp32 again and updates the
cached figure ($SFTLAB_HOME/precision.json) that `precision: auto` decides by.""",
)
def doctor_cmd(
    remeasure: bool = typer.Option(False, "--remeasure", help="Measure bf16's speed against fp32 afresh (best of 3) and cache it."),
) -> None:
    from sftlab.machine.doctor import format_report, report

    sys.stdout.write(format_report(report(remeasure=remeasure)) + "\n")


@app.command(
    "ui",
    help="""Open the whole workflow in a local web page: runs with live curves, new runs from a form (queued), the
trained-token preview, data checks, chat with two models side by side, eval.

Example: `sftlab ui` then open http://127.0.0.1:7860 · on a remote machine: `ssh -L 7860:127.0.0.1:7860 HOST`

Run folders under --runs-dir are the only state: closing the page or the UI does not stop a run. Any --host but
loopback needs a key (--api-key-file or $SFTLAB_API_KEY).""",
)
def ui_cmd(
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="The folder of runs the UI lists and starts runs in."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (loopback unless told otherwise; another one needs a key)."),
    port: int = typer.Option(7860, "--port", callback=bounded),
    api_key_file: Optional[str] = typer.Option(None, "--api-key-file", help="Require this key (the file's first line); default: $SFTLAB_API_KEY."),
    data_dir: list[Path] = typer.Option([], "--data-dir", metavar="FOLDER", help="Another folder the UI may read data, models and templates from (besides the one it starts in and --runs-dir); repeatable."),
) -> None:
    from sftlab.inference.serve import resolve_api_key
    from sftlab.ui.app import run_ui
    from sftlab.ui.security import data_dirs, require_safe_host

    from sftlab.files import require_output_dir

    key = resolve_api_key(None, api_key_file)
    require_safe_host(host, key)
    require_output_dir(runs_dir, "--runs-dir")
    extra = data_dirs(data_dir)  # (each checked before the server starts)
    err.print(f"sftlab ui on http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port} (runs in {runs_dir})"
              + "".join(f" (data also from {d})" for d in extra) + (" (key required)" if key else ""),
              highlight=False, markup=False)
    run_ui(runs_dir, host=host, port=port, api_key=key, data_dirs=extra)


def _precision(value: str) -> str:
    if value not in ("auto", "bf16", "fp32"):
        raise SftlabError(f"--precision must be auto, bf16 or fp32, got '{value}'")
    return value


_terminated = False


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM, handled as Ctrl-C is: a word and an exit code (143), not a silent death."""
    global _terminated
    _terminated = True
    raise KeyboardInterrupt


def _run_forwarding_signals(command: list[str], env: dict[str, str]) -> int:
    """Run `command` to its end, passing SIGTERM and SIGINT on to it (torchrun passes them to its ranks), so a
    Stop or Ctrl-C ends every process of the run, not only this one; its exit code."""
    process = subprocess.Popen(command, env=env)
    previous = {s: signal.signal(s, lambda signum, frame: process.send_signal(signum))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                return process.wait()
            except InterruptedError:
                continue
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _resume_command() -> str:
    """The command line of this run with `--set resume=true`: the same run, continued from its checkpoint."""
    args = sys.argv[1:]
    if "resume=true" not in args and "--set=resume=true" not in args:
        args += ["--set", "resume=true"]
    return shlex.join(["sftlab", *args])


def main() -> None:
    setup_logging()
    if not sys.stdout.isatty() and not os.environ.get("TERMINAL_WIDTH"):
        # Piped --help is laid out for 80 columns, where rich cuts long option names (`--judge-concurren…`).
        from typer import rich_utils

        rich_utils.MAX_WIDTH = 120
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        # Outside standalone mode typer *returns* an exit code instead of exiting: 130 for Ctrl-C, and the
        # code of any typer.Exit a command raised. It must reach the shell.
        code = app(standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            sys.exit(code)
    except SftlabError as e:
        # The sentence holds the data's own text (a role, a file name): never read as markup.
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted (SIGTERM)" if _terminated else "aborted")
        sys.exit(143 if _terminated else 130)
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

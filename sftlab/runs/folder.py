"""A run folder: the name of every file and folder sftlab keeps in one, spelled once, and one reader of each.

`sftlab train` writes config.yaml when training starts, then metrics.jsonl, data_report.json, loss.png,
checkpoint-N/ (model, optimizer, scheduler, RNG, trainer_state.json and sftlab_state.json: for resuming) and, once
finished, the final model at the top of the folder. A staged run's folder holds config.yaml with `stages:` and a
folder per stage (its name, or stage-K), each with stage_done.json once finished. The training process holds
.train.lock and writes train_process.json beside it (sftlab.runs.lock); sftlab ui adds ui_state.json, train.log,
eval/ and export/.

Every file here was written by sftlab, but is read as if anyone could have planted it: through sftlab.jsonsafe
(a regular file only, looked at with lstat first, never through a link nor waiting on a FIFO, of bounded size),
each field checked before use. A reader gives its value, or `Unreadable` naming the file and saying why
("config.yaml: stages is 5, not a list of stages"), never an exception. No torch here: `sftlab runs` and the UI
answer at once.
"""

from __future__ import annotations

import errno
import math
import os
import re
import reprlib
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from sftlab import jsonsafe
from sftlab.config.methods import DEFAULT_METHOD
from sftlab.errors import SftlabError, one_line
from sftlab.files import child

# ---- the names ---------------------------------------------------------------------------------------------

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
DATA_REPORT = "data_report.json"
LOSS_PLOT = "loss.png"
REJECTS = "rejects.jsonl"  # rows a `clean:` key removed
STAGE_DONE = "stage_done.json"  # in a stage's folder once it is trained (and merged): {"model": FOLDER}
MERGED = "merged"  # a LoRA stage merged into a full model, the next stage's start
STAGING = ".staging"  # a checkpoint being written, renamed into checkpoint-N once whole
LOCK = ".train.lock"  # the run lock the training process holds (sftlab.runs.lock)
PROCESS_RECORD = "train_process.json"  # who holds it
TRAINER_STATE = "trainer_state.json"  # a checkpoint's: transformers' state (global_step, max_steps)
SFTLAB_STATE = "sftlab_state.json"  # a checkpoint's: trained tokens, processes, global batch
CHECKPOINT_PREFIX = "checkpoint-"  # checkpoint-N: the Trainer's checkpoint after optimizer step N
# (ASCII digits: str.isdigit takes '²', which int() refuses)
CHECKPOINT = re.compile(CHECKPOINT_PREFIX + r"([0-9]{1,30})")

# sftlab ui's, in a run folder (and QUEUE_LOCK in the folder of runs)
UI_STATE = "ui_state.json"
TRAIN_LOG = "train.log"
QUEUE_LOCK = ".ui-queue.lock"
EVAL_DIR, EVAL_STATE, EVAL_LOG = "eval", "ui_eval.json", "eval.log"
EXPORT_DIR, EXPORT_STATE, EXPORT_LOG = "export", "ui_export.json", "export.log"
EVAL_SUMMARY, EVAL_RESPONSES, EVAL_PROBE = "summary.json", "responses.jsonl", "probe.jsonl"  # what `sftlab eval` writes

# sftlab's records at the top of a run folder (its sizes count them as "other"; every other file is the model's)
RECORDS = frozenset({CONFIG, METRICS, DATA_REPORT, LOSS_PLOT, REJECTS, STAGE_DONE, TRAIN_LOG, UI_STATE,
                     PROCESS_RECORD})
MAX_DEPTH = 64  # folders looked into below the folder of runs
CONFIG_BYTES = 16 * 1024 * 1024
STATE_BYTES = 64 * 1024 * 1024


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step}"


def stage_name(k: int) -> str:
    """The folder of stage k (counted from 1) that names none (as sftlab.config's StageSpec.folder names it)."""
    return f"stage-{k}"


# ---- what cannot be read -----------------------------------------------------------------------------------

MISSING, KIND, OS, SYNTAX, CONTENT = "missing", "kind", "os", "syntax", "content"


@dataclass(frozen=True)
class Unreadable:
    """A file or folder of a run that cannot be read as sftlab wrote it. `name` is its path relative to the folder
    read ("" for that folder itself), `what` the words after it ("is a FIFO, not a file sftlab writes", ": stages
    is 5, not a list of stages"), `cause` which kind of failure: MISSING, KIND (not a regular file), OS (cannot be
    read), SYNTAX (not JSON or YAML) or CONTENT (a field that is not what sftlab writes)."""

    name: str
    what: str
    cause: str = CONTENT

    def __str__(self) -> str:
        return self.at(self.name or "the folder")

    def at(self, where: str | Path) -> str:
        """The sentence with the file named as `where` (its full path, say)."""
        return f"{where}{'' if self.what.startswith(':') else ' '}{self.what}"

    def inside(self, prefix: str) -> "Unreadable":
        """The same, named from the folder above (a checkpoint's file, a stage's)."""
        return replace(self, name=f"{prefix}/{self.name}" if self.name else prefix)


def shown(value: Any, keep: int = 80) -> str:
    """A name or value for a line of text: non-printable characters (newlines, escapes, U+2028) as their escape
    sequences, so a folder name cannot forge a line of a listing; a long one cut."""
    # (reprlib: a value from a YAML alias bomb is never written out whole)
    text = str(value) if isinstance(value, (str, Path)) else reprlib.repr(value)
    text = one_line(text[: keep * 8])
    return text if len(text) <= keep else text[: keep - 1] + "…"


def count(value: Any) -> bool:
    """Whether `value` is a count as sftlab writes one (an int, not a bool, at most 2**63 - 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 63


def _os_error(name: str, e: OSError) -> Unreadable:
    if isinstance(e, jsonsafe.NotAFile):
        return Unreadable(name, e.what, KIND)
    if isinstance(e, FileNotFoundError):
        return Unreadable(name, "is missing", MISSING)
    return Unreadable(name, f"cannot be read ({e.strerror or e})", OS)


def _bytes(path: Path, name: str, max_bytes: int, whole: bool = True) -> bytes | Unreadable:
    """The bytes of one of sftlab's files: a regular file (lstat first, then opened without following a link or
    waiting on a FIFO: jsonsafe.open_own), at most `max_bytes` (`whole`: a larger file is Unreadable; else its
    first `max_bytes`)."""
    problem = kind_of(path, name)
    if problem is not None:
        return problem
    try:
        with os.fdopen(jsonsafe.open_own(path, os.O_RDONLY), "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        return _os_error(name, e)
    if len(data) > max_bytes and whole:
        return Unreadable(name, f"is larger than {max_bytes:,} bytes, more than sftlab writes there", KIND)
    return data[:max_bytes]


def _text(path: Path, name: str, max_bytes: int = jsonsafe.MAX_FILE_BYTES) -> str | Unreadable:
    """A file sftlab writes as UTF-8 text (YAML, JSON): bytes that are not UTF-8 were not written by sftlab."""
    data = _bytes(path, name, max_bytes)
    if isinstance(data, Unreadable):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        return Unreadable(name, f"is not UTF-8 text (byte {e.start + 1})", SYNTAX)


def _json(path: Path, name: str, max_bytes: int = STATE_BYTES) -> Any:
    text = _text(path, name, max_bytes)
    if isinstance(text, Unreadable):
        return text
    try:
        return jsonsafe.loads(text)
    except ValueError:
        return Unreadable(name, "is not JSON", SYNTAX)


def kind_of(path: Path, name: str) -> Unreadable | None:
    """Why `path` is no regular file (lstat only: nothing opened), None when it is one; MISSING when absent."""
    try:
        problem = jsonsafe.not_a_file(path)
    except OSError as e:
        return _os_error(name, e)
    if problem:
        return Unreadable(name, problem, KIND)
    return None if os.path.lexists(path) else Unreadable(name, "is missing", MISSING)


# ---- the folder, and which folders are runs ----------------------------------------------------------------

def entries(folder: Path) -> list[Path] | Unreadable:
    """What is in `folder`, sorted; Unreadable ("the folder cannot be read (…)") when it cannot be listed."""
    try:
        return sorted(folder.iterdir())
    except NotADirectoryError:
        return Unreadable("", "is a file", KIND)
    except OSError as e:
        return Unreadable("", f"cannot be read ({e.strerror or e})", OS)


def is_run(folder: Path) -> bool:
    """Whether `folder` is a run: something named config.yaml is in it (one that is no file is the run's damage,
    said when it is read). A folder that cannot be looked into is one too, so it is listed as unreadable."""
    try:
        os.lstat(folder / CONFIG)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        return e.errno != errno.ENAMETOOLONG  # (a name too long for the file system names nothing)


def run_folders(folder: Path, links: list[Path] | None = None, warn: Callable[[str], None] | None = None
                ) -> Iterator[Path]:
    """Run folders under `folder` (itself included), in path order: not looking inside a run for more, nor
    following a symbolic link (those to folders are added to `links`), nor going deeper than MAX_DEPTH (`warn`
    is told). A folder that cannot be listed is yielded too: reading it says why."""
    pending = [(folder, 0)]
    while pending:
        here, depth = pending.pop()
        if is_run(here):
            yield here
            continue
        children = entries(here)
        if isinstance(children, Unreadable):
            if depth:
                yield here
            continue
        if depth >= MAX_DEPTH:
            if warn:
                warn(f"{shown(here)} is {depth} folders deep; sftlab looks no deeper for runs")
            continue
        for path in reversed(children):
            if path.name.startswith("."):
                continue
            if path.is_symlink():
                if links is not None and path.is_dir():
                    links.append(path)
            elif path.is_dir():
                pending.append((path, depth + 1))
    if links is not None:
        links.sort()


# ---- config.yaml -------------------------------------------------------------------------------------------

def read_config(folder: Path) -> dict[str, Any] | Unreadable:
    """config.yaml as a mapping ({} when the folder has none, or it is empty)."""
    text = _text(folder / CONFIG, CONFIG, CONFIG_BYTES)
    if isinstance(text, Unreadable):
        return {} if text.cause == MISSING else text
    try:
        data = yaml.safe_load(text)
    except (ValueError, TypeError, OverflowError, yaml.YAMLError, RecursionError):
        return Unreadable(CONFIG, "is not YAML", SYNTAX)
    if data is None:
        return {}
    if not isinstance(data, dict):
        return Unreadable(CONFIG, "is not a mapping of keys")
    return data


@dataclass(frozen=True)
class Stage:
    """A stage of a staged run as its config.yaml names it."""

    name: str  # its folder's name
    method: str  # shown (one line, cut short)


def read_stages(folder: Path, config: dict[str, Any]) -> list[Stage] | Unreadable:
    """The stages of a run's config.yaml, as sftlab.training.stages names them ([] for a run of one stage);
    Unreadable when `stages` is not a list of stages with plain folder names."""
    stages = config.get("stages")
    if stages in (None, []):
        return []
    if not isinstance(stages, list):
        return Unreadable(CONFIG, f": stages is {shown(stages, 40)}, not a list of stages")
    out = []
    for k, stage in enumerate(stages, start=1):
        if not isinstance(stage, dict):
            return Unreadable(CONFIG, f": stages[{k}] is not a mapping of keys")
        name = stage.get("name") or stage_name(k)
        method = stage.get("method") or config.get("method", DEFAULT_METHOD)
        if not isinstance(name, str) or not isinstance(method, str):
            return Unreadable(CONFIG, f": stages[{k}]'s name and method are not strings")
        try:
            child(folder, name, f"stages[{k}].name")
        except SftlabError as e:
            return Unreadable(CONFIG, f": {e}")
        out.append(Stage(name, shown(method, 40)))
    return out


def stage_finished(stage_dir: Path) -> bool | Unreadable:
    """Whether a stage is finished: its stage_done.json is there (a regular file: anything else is damage)."""
    problem = kind_of(stage_dir / STAGE_DONE, STAGE_DONE)
    if problem is None:
        return True
    return False if problem.cause == MISSING else problem


def read_stage_done(stage_dir: Path) -> Path | None | Unreadable:
    """The folder the next stage starts from, as stage_done.json says (None: the stage is not finished): the
    stage's own folder or its merged/ one, wherever the run folder is now; never a path the file names (a moved
    run, or a forged record, would point elsewhere)."""
    done = _json(stage_dir / STAGE_DONE, STAGE_DONE, 1024 * 1024)
    if isinstance(done, Unreadable):
        return None if done.cause == MISSING else done
    if not isinstance(done, dict) or not isinstance(done.get("model"), str) or not done["model"]:
        return Unreadable(STAGE_DONE, 'is not {"model": FOLDER}')
    return stage_dir / MERGED if Path(done["model"]).name == MERGED else stage_dir


# ---- metrics.jsonl (and any JSONL of records) ---------------------------------------------------------------

@dataclass
class Records:
    """The records of a JSONL file, NaN and ±Infinity as None (JSON has no such numbers: a diverged loss is
    null wherever it goes from here), and the first line that is not a record, if any (the others are kept)."""

    records: list[dict[str, Any]]
    problem: Unreadable | None = None


def read_jsonl(path: Path, name: str, is_record: Callable[[dict[str, Any]], bool] = lambda r: True,
               head: int | None = None) -> Records | Unreadable:
    """A JSONL file sftlab wrote (split on "\\n" only, as jsonsafe writes it): its records (the lines that are
    JSON objects passing `is_record`); Records([]) when there is none. `head`: only the file's first bytes are
    read (its records from the start of a file too large to read whole; a line cut there is left out)."""
    data = _bytes(path, name, head or jsonsafe.MAX_FILE_BYTES, whole=head is None)
    if isinstance(data, Unreadable):
        return Records([]) if data.cause == MISSING else data
    out = Records([])
    lines = (line for line in data.split(b"\n") if line.strip())  # (as jsonsafe.lines: "\n" only, no blank ones)
    for n, line in enumerate(lines, start=1):
        try:
            record = jsonsafe.loads(line.decode("utf-8"))
        except ValueError:  # (UnicodeDecodeError among them: a line that is not UTF-8 is no record sftlab wrote)
            record = None
        if isinstance(record, dict) and is_record(record):
            out.records.append(_finite(record))
        elif out.problem is None:
            out.problem = Unreadable(name, f"line {n} is not a record sftlab writes")
    return out


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """jsonsafe.finite of a record; one nested deeper than it walks (hundreds of levels: no record sftlab writes)
    only at its top level, where a step's figures are (the UI refuses to serve the rest: too deep)."""
    try:
        return jsonsafe.finite(record)
    except RecursionError:
        return {k: jsonsafe.finite(v) if isinstance(v, float) else v for k, v in record.items()}


def read_metrics(folder: Path) -> Records | Unreadable:
    """metrics.jsonl's records (each with its step)."""
    return read_jsonl(folder / METRICS, METRICS, lambda r: count(r.get("step")))


def final_loss(records: list[dict[str, Any]]) -> float | None:
    """The loss of the last record that logged one; None where it is not a number (a diverged loss leaves sftlab
    as null, not as the last finite loss before it)."""
    last = next((r["loss"] for r in reversed(records) if "loss" in r), None)
    ok = isinstance(last, (int, float)) and not isinstance(last, bool) and math.isfinite(last)
    return float(last) if ok else None


# ---- checkpoints ---------------------------------------------------------------------------------------------
# One rule names them: checkpoint-N (N in ASCII digits), oldest (smallest N) first; a file of that name is none.
# What a run *has* (the listing, pruning, keep_checkpoints) is a real folder holding trainer_state.json: the
# Trainer writes a checkpoint into .staging and renames it into place whole, and a link is never followed (nor
# deleted through). Resuming looks wider on purpose (checkpoint_candidates): a link or a folder without its
# state is named and refused there, not passed over unseen, and `resume: false` refuses a folder holding any.

def _numbered(found: list[Path]) -> list[tuple[int, Path]]:
    return sorted((int(m.group(1)), p) for p in found if (m := CHECKPOINT.fullmatch(p.name)))


def checkpoint_candidates(folder: Path) -> list[Path]:
    """Resuming's view: every checkpoint-N that is a folder or a link (which resuming refuses, saying so)."""
    listed = entries(folder)
    if isinstance(listed, Unreadable):
        return []
    return [p for _, p in _numbered(listed) if p.is_dir() or p.is_symlink()]


def checkpoints(folder: Path, listed: list[Path] | None = None) -> list[Path] | Unreadable:
    """The checkpoints a run has (real checkpoint-N folders holding trainer_state.json), oldest first, among
    `listed` (the folder's entries, listed when not given); Unreadable when one cannot be looked into or its
    trainer_state.json is no file."""
    listed = entries(folder) if listed is None else listed
    if isinstance(listed, Unreadable):
        return listed
    found = []
    for _, path in _numbered(listed):
        if path.is_symlink() or not path.is_dir():
            continue
        try:
            mode = os.lstat(path / TRAINER_STATE).st_mode
        except FileNotFoundError:
            continue  # (cut short, or rotated away since it was listed: no checkpoint)
        except OSError as e:
            return _os_error(path.name, e)
        if not stat.S_ISREG(mode):
            return Unreadable(f"{path.name}/{TRAINER_STATE}", f"is {jsonsafe.kind(mode)}, not a file sftlab writes",
                              KIND)
        found.append(path)
    return found


# The fields of a checkpoint's state files sftlab reads, and what each must be (absent: not recorded).
STATE_FIELDS = {TRAINER_STATE: {"global_step": (0, "a count"), "max_steps": (0, "a count")},
                SFTLAB_STATE: {"trained_tokens": (0, "a count"), "processes": (1, "a positive count"),
                               "global_batch": (1, "a positive count")}}


def read_state(checkpoint: Path, name: str = TRAINER_STATE) -> dict[str, Any] | Unreadable:
    """A state file of a checkpoint (trainer_state.json or sftlab_state.json), checked field by field; its name
    in an Unreadable is relative to the checkpoint (MISSING when it is not there)."""
    data = _json(checkpoint / name, name)
    if isinstance(data, Unreadable):
        return data
    if not isinstance(data, dict):
        return Unreadable(name, "is not a mapping")
    for key, (least, what) in STATE_FIELDS[name].items():
        if key in data and not (count(data[key]) and data[key] >= least):
            return Unreadable(name, f": {key} is not {what}")
    if name == SFTLAB_STATE and "processes" in data and "global_batch" not in data:
        return Unreadable(name, ": processes is recorded without global_batch")
    return data

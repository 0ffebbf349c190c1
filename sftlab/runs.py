"""Run folders on disk: what each run is, whether it finished, and what its space goes to; dropping the
checkpoints a finished run no longer needs.

A run folder holds config.yaml (written when training starts), metrics.jsonl, data_report.json, loss.png,
checkpoint-N/ (model, optimizer, scheduler and RNG state, for resuming) and, once the run has finished, the
final model (*.safetensors with its config and tokenizer files). A staged run's folder holds config.yaml with
`stages:` and one such folder per stage, with stage_done.json once that stage is finished. While a run trains,
its process holds the run lock (.train.lock, train_process.json: sftlab.runlock): that, not the age of its files,
is what makes it `running`, whoever started it.
No torch here: `sftlab runs` answers at once.
"""

from __future__ import annotations

import logging
import math
import os
import re
import reprlib
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from sftlab import jsonsafe, runlock
from sftlab.errors import SftlabError, one_line
from sftlab.files import child
from sftlab.config.methods import DEFAULT_METHOD
from sftlab.models import safetensors_problem

log = logging.getLogger("sftlab")

# sftlab's records of a run (counted as "other"); every other file at the top of a run folder is the model's.
STAGE_DONE = "stage_done.json"  # (sftlab.training.stages.DONE, not imported: that module pulls in the config's deps)
RECORDS = {"config.yaml", "metrics.jsonl", "data_report.json", "loss.png", "rejects.jsonl", STAGE_DONE, "train.log",
           "ui_state.json", runlock.RECORD}  # (train.log, ui_state.json: sftlab ui's)  # (the last two: sftlab ui's)
STAGING = ".staging"  # a checkpoint being written (sftlab.training.trainer.STAGING_DIR)


@dataclass
class Run:
    """One run folder (or one stage of a staged run) as found on disk."""

    path: Path
    status: str  # running | finished | unfinished | not started (a stage not reached yet)
    method: str
    steps: int | None  # optimizer steps done
    total_steps: int | None  # None where the folder does not say
    final_loss: float | None
    model_bytes: int = 0
    checkpoint_bytes: int = 0
    other_bytes: int = 0
    checkpoints: list[str] = field(default_factory=list)  # checkpoint-N names, oldest first
    stages: list["Run"] = field(default_factory=list)
    pid: int | None = None  # the training process, while running (sftlab.runlock)
    problem: str | None = None  # why it is `damaged` (or, running, why its holder's record is not believed)

    @property
    def size(self) -> int:
        return self.model_bytes + self.checkpoint_bytes + self.other_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "status": self.status, "method": self.method, "steps": self.steps,
            "total_steps": self.total_steps, "final_loss": self.final_loss, "bytes": self.size,
            "model_bytes": self.model_bytes, "checkpoint_bytes": self.checkpoint_bytes,
            "other_bytes": self.other_bytes, "checkpoints": self.checkpoints,
            "stages": [s.to_dict() for s in self.stages], "pid": self.pid, "problem": self.problem,
        }


# ---- sizes -----------------------------------------------------------------------------------------

def tree_bytes(path: Path) -> int:
    """The bytes of a file, or of the files under a folder (their lengths; links are not followed). OSError when
    a folder inside cannot be listed (its size would be a guess)."""
    if not path.is_dir() or path.is_symlink():
        try:
            return path.lstat().st_size
        except FileNotFoundError:
            return 0  # removed since it was listed (a checkpoint rotated away by a running training)

    def unreadable(e: OSError) -> None:
        if not isinstance(e, FileNotFoundError):  # (removed while counting: nothing to count)
            raise e

    total = 0
    for top, _, files in os.walk(path, onerror=unreadable):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except FileNotFoundError:
                pass  # removed while counting
    return total


def format_bytes(n: int) -> str:
    """1,600,000,000 → '1.6 GB', 514,000,000 → '514 MB' (decimal units, as disks are sold and `df -H` counts)."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            if unit == "B":
                return f"{n} B"
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


# ---- reading a run folder ------------------------------------------------------------------------------
# Every file here was written by sftlab, but is read as if anyone could have planted it: through
# jsonsafe.read_text (a regular file only, never a FIFO or a link, bounded), each field checked before use. What
# cannot be read makes the run `damaged` with one sentence saying what (Damaged), never a traceback.

CHECKPOINT = re.compile(r"checkpoint-([0-9]{1,30})")  # (ASCII digits: str.isdigit takes '²', which int() refuses)
MAX_DEPTH = 64  # folders looked into below the folder of runs


class Damaged(Exception):
    """What makes a run folder unreadable as sftlab wrote it, in words ("config.yaml: stages is 5, …")."""


def _why(e: OSError) -> str:
    """What is wrong with a file, after its name: "is a FIFO, …", "cannot be read (Permission denied)"."""
    return e.what if isinstance(e, jsonsafe.NotAFile) else f"cannot be read ({e.strerror or e})"


def _damage(e: Exception) -> str:
    """The sentence of a Damaged, or of an OSError met anywhere in reading (naming the file it met)."""
    if isinstance(e, OSError):
        return f"{shown(Path(e.filename).name) if e.filename else 'a file'} {_why(e)}"
    return str(e)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 63


def shown(value: Any, keep: int = 80) -> str:
    """A name or value for a line of text: non-printable characters (newlines, escapes, U+2028) as their escape
    sequences, so a folder name cannot forge a line of the listing; a long one cut."""
    # (reprlib: a value from a YAML alias bomb is never written out whole)
    text = str(value) if isinstance(value, (str, Path)) else reprlib.repr(value)
    text = one_line(text[: keep * 8])
    return text if len(text) <= keep else text[: keep - 1] + "…"


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise Damaged(f"the folder {_why(e)}") from None


def _checkpoints(entries: list[Path]) -> list[Path]:
    """checkpoint-N folders among `entries` written by the Trainer (they hold trainer_state.json), oldest
    (smallest N) first; a link or a file of that name is none."""
    found = []
    for p in entries:
        match = CHECKPOINT.fullmatch(p.name)
        if not match or p.is_symlink() or not p.is_dir():
            continue
        try:
            state = os.lstat(p / "trainer_state.json")
        except FileNotFoundError:
            continue  # (being written, or cut short: not a checkpoint)
        except OSError as e:
            raise Damaged(f"{p.name} {_why(e)}") from None
        if not stat.S_ISREG(state.st_mode):
            raise Damaged(f"{p.name}/trainer_state.json is {jsonsafe.kind(state.st_mode)}, not a file sftlab writes")
        found.append((int(match.group(1)), p))
    return [p for _, p in sorted(found)]


def checkpoint_dirs(folder: Path) -> list[Path]:
    """checkpoint-N folders written by the Trainer (they hold trainer_state.json), oldest (smallest N) first."""
    try:
        return _checkpoints(_entries(folder))
    except Damaged:
        return []


def _final_model_whole(entries: list[Path]) -> bool:
    """Whether the final model is there: weight files at the top of the folder, each whole (a safetensors file's
    header parses and its data ends where the file does)."""
    weights = [p for p in entries if p.suffix == ".safetensors" and p.is_file()]
    try:
        return bool(weights) and not any(map(safetensors_problem, weights))
    except OSError as e:
        raise Damaged(f"its weights {_why(e)}") from None


def _read_json(path: Path) -> Any:
    try:
        return jsonsafe.load(path)
    except OSError as e:
        raise Damaged(f"{path.parent.name}/{path.name} {_why(e)}") from None
    except ValueError as e:
        raise Damaged(f"{path.parent.name}/{path.name} is not JSON ({shown(e)})") from None


def _config(folder: Path) -> dict[str, Any]:
    """config.yaml as a mapping ({} when the folder has none); Damaged when it is there and unreadable."""
    try:
        data = yaml.safe_load(jsonsafe.read_text(folder / "config.yaml", 16 * 1024 * 1024))
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise Damaged(f"config.yaml {_why(e)}") from None
    except (ValueError, yaml.YAMLError, RecursionError):
        raise Damaged("config.yaml is not YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Damaged("config.yaml is not a mapping of keys")
    return data


def _read_metrics(folder: Path) -> tuple[list[dict[str, Any]], str | None]:
    """metrics.jsonl's records (those with a step), and what is wrong with the file, if anything."""
    try:
        text = jsonsafe.read_text(folder / "metrics.jsonl")
    except FileNotFoundError:
        return [], None
    except OSError as e:
        return [], f"metrics.jsonl {_why(e)}"
    records, problem = [], None
    for n, line in enumerate(jsonsafe.lines(text), start=1):
        try:
            record = jsonsafe.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and _count(record.get("step")):
            records.append(record)
        elif problem is None:
            problem = f"metrics.jsonl line {n} is not a record sftlab writes"
    return records, problem


def _metrics(folder: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records (the lines that are not records left out: read_run says they are there)."""
    return _read_metrics(folder)[0]


def _final_loss(records: list[dict[str, Any]]) -> float | None:
    """The loss of the last record that logged one; None where it is not a finite number (a diverged loss leaves
    sftlab as null, not as the last finite loss before it)."""
    last = next((r["loss"] for r in reversed(records) if "loss" in r), None)
    ok = isinstance(last, (int, float)) and not isinstance(last, bool) and math.isfinite(last)
    return float(last) if ok else None


def _sizes(folder: Path, entries: list[Path], kept: list[Path], skip: set[str] = frozenset()) -> tuple[int, int, int]:
    """(model, checkpoints, other) bytes of a run folder's entries, less those named in `skip` (stages)."""
    model = checkpoints = other = 0
    names = {p.name for p in kept}
    for entry in entries:
        if entry.name in skip:
            continue
        try:
            size = tree_bytes(entry)
        except OSError as e:
            raise Damaged(f"{entry.name} {_why(e)}") from None
        if entry.name in names or entry.name == STAGING:
            checkpoints += size
        elif entry.name == "merged" or (entry.is_file() and entry.name not in RECORDS
                                        and not entry.name.startswith(".")):
            model += size  # the weights, their config, the tokenizer; a merged LoRA stage's model
        else:
            other += size
    return model, checkpoints, other


def _live_total(live: runlock.Holder | None, folder: Path) -> int | None:
    """The total steps a live run noted in its lock's record for `folder` (before its first checkpoint says)."""
    if live is None or live.progress.get("output_dir") != str(folder.absolute()):
        return None
    total = live.progress.get("max_steps")
    return total if _count(total) else None


def _trainer_state(checkpoint: Path) -> dict[str, Any]:
    if not (checkpoint / "trainer_state.json").exists():
        return {}  # (rotated away by the running training since it was listed)
    state = _read_json(checkpoint / "trainer_state.json")
    if not isinstance(state, dict):
        raise Damaged(f"{checkpoint.name}/trainer_state.json is not a mapping")
    for key in ("global_step", "max_steps"):
        if key in state and not _count(state[key]):
            raise Damaged(f"{checkpoint.name}/trainer_state.json: {key} is not a count")
    return state


def _holder(folder: Path) -> runlock.Holder | None:
    """Who trains `folder`; Damaged when its lock path is not sftlab's lock file (a FIFO, a link: not ours)."""
    problem = runlock.lock_problem(folder)
    if problem:
        raise Damaged(f"{problem}; not ours, so it is not read (remove it)")
    return runlock.holder(folder)


def read_run(folder: Path, *, method: str | None = None, finished: bool | None = None,
             live: runlock.Holder | None | bool = True) -> Run:
    """A plain run folder (or one stage's); `finished` overrides what the folder's files say (a stage is finished
    when it has stage_done.json); `live` is the process training it (True: ask its lock; a stage is asked
    through its staged run's). A folder that cannot be read as sftlab wrote it is `damaged`, with the reason."""
    try:
        return _read_run(folder, method, finished, live)
    except (Damaged, OSError) as e:
        return Run(folder, "damaged", shown(method or "?"), None, None, None, problem=_damage(e))


def _read_run(folder: Path, method: str | None, finished: bool | None, live: runlock.Holder | None | bool) -> Run:
    if live is True:
        live = _holder(folder)
    config = _config(folder)
    entries = _entries(folder)
    checkpoints = _checkpoints(entries)
    records, problem = _read_metrics(folder)
    state = _trainer_state(checkpoints[-1]) if checkpoints else {}
    logged = records[-1]["step"] if records else None
    saved = state.get("global_step")
    steps = max((s for s in (logged, saved) if s is not None), default=None)
    done = _final_model_whole(entries) if finished is None else finished
    total = state.get("max_steps")
    if total is None and live:
        total = _live_total(live, folder)
    if total is None and done:
        total = steps
    model, ckpt, other = _sizes(folder, entries, checkpoints)
    problem = (live.problem if live else None) or problem
    status = "running" if live else "damaged" if problem else "finished" if done else "unfinished"
    return Run(folder, status, method or shown(config.get("method", "?"), 40), steps, total, _final_loss(records),
               model, ckpt, other, [p.name for p in checkpoints], pid=live.pid if live else None, problem=problem)


def _stage_names(folder: Path, config: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, method) of each stage of a staged run's config.yaml, as sftlab.training.stages names them; Damaged
    when `stages` is not a list of stages with plain folder names."""
    stages = config.get("stages")
    if not isinstance(stages, list):
        raise Damaged(f"config.yaml: stages is {shown(stages, 40)}, not a list of stages")
    out = []
    for k, stage in enumerate(stages, start=1):
        if not isinstance(stage, dict):
            raise Damaged(f"config.yaml: stages[{k}] is not a mapping of keys")
        name = stage.get("name") or f"stage-{k}"
        method = stage.get("method") or config.get("method", DEFAULT_METHOD)
        if not isinstance(name, str) or not isinstance(method, str):
            raise Damaged(f"config.yaml: stages[{k}]'s name and method are not strings")
        try:
            child(folder, name, f"config.yaml: stages[{k}].name")
        except SftlabError as e:
            raise Damaged(str(e)) from None
        out.append((name, shown(method, 40)))
    return out


def read_staged_run(folder: Path) -> Run:
    try:
        return _read_staged_run(folder)
    except (Damaged, OSError) as e:
        return Run(folder, "damaged", "?", None, None, None, problem=_damage(e))


def _read_staged_run(folder: Path) -> Run:
    live = _holder(folder)
    names = _stage_names(folder, _config(folder))
    stages: list[Run] = []
    for name, method in names:
        stage_dir = folder / name
        if not stage_dir.is_dir():
            stages.append(Run(stage_dir, "not started", method, 0, None, None))
            continue
        done = (stage_dir / STAGE_DONE).is_file()
        # the stage in progress is the first one not done while the staged run's process holds its lock
        training = live if live and not done and all(s.status == "finished" for s in stages) else None
        stages.append(read_run(stage_dir, method=method, finished=done, live=training))
    entries = _entries(folder)
    model, ckpt, other = _sizes(folder, entries, _checkpoints(entries), skip={name for name, _ in names})
    known = [s.total_steps for s in stages]
    problem = (live.problem if live else None) or next(
        (f"{s.path.name}: {s.problem}" for s in stages if s.problem), None)
    status = ("running" if live else "damaged" if problem
              else "finished" if all(s.status == "finished" for s in stages) else "unfinished")
    return Run(
        folder, status, "→".join(s.method for s in stages), sum(s.steps or 0 for s in stages),
        sum(known) if None not in known else None,  # type: ignore[arg-type]
        next((s.final_loss for s in reversed(stages) if s.final_loss is not None), None),
        model + sum(s.model_bytes for s in stages), ckpt + sum(s.checkpoint_bytes for s in stages),
        other + sum(s.other_bytes for s in stages), [], stages, pid=live.pid if live else None, problem=problem,
    )


def _is_run(folder: Path) -> bool:
    """Whether `folder` is a run: it has a config.yaml that is not a folder (one that is not a file is the run's
    damage, said when it is read). A folder whose entries cannot be looked at is listed too, as damaged."""
    try:
        return not stat.S_ISDIR(os.lstat(folder / "config.yaml").st_mode)
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _run_folders(folder: Path, links: list[Path] | None = None) -> Iterator[Path]:
    """Folders with config.yaml under `folder` (itself included), not looking inside a run for more, nor
    following a symbolic link (those to folders are added to `links`), nor going deeper than MAX_DEPTH. A folder
    that cannot be listed is yielded too: reading it says why it cannot be read."""
    pending = [(folder, 0)]
    while pending:
        here, depth = pending.pop()
        if _is_run(here):
            yield here
            continue
        try:
            children = sorted(here.iterdir(), reverse=True)
        except OSError:
            if depth:
                yield here  # (read_run says: the folder cannot be read)
            continue
        if depth >= MAX_DEPTH:
            log.warning("runs: %s is %d folders deep; sftlab looks no deeper for runs", shown(here), depth)
            continue
        for child_path in children:
            if child_path.name.startswith("."):
                continue
            if child_path.is_symlink():
                if links is not None and child_path.is_dir():
                    links.append(child_path)
            elif child_path.is_dir():
                pending.append((child_path, depth + 1))
    if links is not None:
        links.sort()


def read_any(folder: Path) -> Run:
    """The run in `folder`, staged or plain, as its config.yaml says (damaged when that cannot be read)."""
    try:
        _entries(folder)  # (a folder that cannot be listed says so, before the files in it)
        staged = _config(folder).get("stages") not in (None, [])
    except (Damaged, OSError) as e:
        return Run(folder, "damaged", "?", None, None, None, problem=_damage(e))
    return read_staged_run(folder) if staged else read_run(folder)


def find_runs(folder: str | Path = "runs", links: list[Path] | None = None) -> list[Run]:
    """Every run under `folder`, in path order (symbolic links to folders are not followed: see _run_folders)."""
    folder = Path(folder)
    if not folder.exists():
        raise SftlabError(f"runs: folder {folder} not found")
    if not folder.is_dir():
        raise SftlabError(f"runs: {folder} is a file, not a folder of runs")
    if not _is_run(folder):
        try:
            next(folder.iterdir(), None)
        except OSError as e:
            raise SftlabError(f"runs: folder {folder} cannot be read ({e.strerror or e})") from None
    return [read_any(p) for p in _run_folders(folder, links)]


# ---- the listing ---------------------------------------------------------------------------------------

COLUMNS = ("run", "status", "method", "steps", "final loss", "size", "model", "checkpoints", "other")


def _row(run: Run, name: str) -> list[str]:
    steps = "-" if run.steps is None else f"{run.steps}/{'?' if run.total_steps is None else run.total_steps}"
    loss = "-" if run.final_loss is None else f"{run.final_loss:.4f}"
    return [name, run.status, run.method, steps, loss, *_size_cells(run.model_bytes, run.checkpoint_bytes, run.other_bytes)]


def _size_cells(model: int, checkpoints: int, other: int) -> list[str]:
    return [format_bytes(n) for n in (model + checkpoints + other, model, checkpoints, other)]


def format_runs(runs: list[Run]) -> str:
    """The listing as text: one row per run (and per stage, indented), a total line, and for each unfinished run
    how it goes on."""
    if not runs:
        return "no runs (no folder with config.yaml)"
    rows = [list(COLUMNS)]
    for run in runs:
        rows.append(_row(run, shown(run.path, 4096)))
        rows += [_row(stage, f"  {shown(stage.path.name)}") for stage in run.stages]
    sizes = [sum(r.model_bytes for r in runs), sum(r.checkpoint_bytes for r in runs), sum(r.other_bytes for r in runs)]
    rows.append(["total", f"{len(runs)} run{'s' if len(runs) != 1 else ''}", "", "", "", *_size_cells(*sizes)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    right = {3, 4, 5, 6, 7, 8}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    for run in runs:
        path = shown(run.path, 4096)
        if run.status == "running":
            who = (f"pid {run.pid}" if run.pid else
                   f"by a process whose train_process.json is damaged: {shown(run.problem)}" if run.problem else "")
            lines.append(f"{path}: training now ({who})" if who else f"{path}: training now")
            continue
        if run.status == "damaged":
            lines.append(f"{path}: damaged: {shown(run.problem, 4096)}")
            continue
        for part in [run, *run.stages]:
            if part.status == "unfinished" and not part.stages:
                lines.append(f"{shown(part.path, 4096)}: {_how_it_goes_on(part)}")
    return "\n".join(lines)


def _how_it_goes_on(run: Run) -> str:
    if run.checkpoints:
        return f"unfinished; `resume: true` continues it from {run.checkpoints[-1]}"
    return "unfinished and without a checkpoint; training again starts it over"


# ---- dropping checkpoints ------------------------------------------------------------------------------

def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _remove(paths: list[Path], dry_run: bool = False) -> list[tuple[Path, int]]:
    removed = []
    for path in paths:
        size = tree_bytes(path)
        if not dry_run:
            shutil.rmtree(path)
        removed.append((path, size))
    return removed


def settle_checkpoints(folder: str | Path, keep: str) -> list[tuple[Path, int]]:
    """At the end of a finished run: drop its checkpoints as `keep_checkpoints` says (all | last | none) and log
    what went and the bytes freed; with `all`, say what they take and how to drop them."""
    folder = Path(folder)
    checkpoints = checkpoint_dirs(folder)
    if keep == "all":
        if checkpoints:
            size = sum(tree_bytes(p) for p in checkpoints)
            log.info("%s in %s take%s %s (for resuming only): `sftlab runs --prune-checkpoints %s` or "
                     "keep_checkpoints: last | none drops them", ", ".join(p.name for p in checkpoints), folder,
                     "s" if len(checkpoints) == 1 else "", format_bytes(size), folder)
        return []
    doomed = checkpoints[:-1] if keep == "last" else checkpoints
    doomed += [folder / STAGING] if _real_dir(folder / STAGING) else []
    removed = _remove(doomed)
    if removed:
        log.info("keep_checkpoints: %s — removed %s from %s, %s freed", keep, ", ".join(p.name for p, _ in removed),
                 folder, format_bytes(sum(n for _, n in removed)))
    return removed


@dataclass
class Pruned:
    removed: list[tuple[Path, int]] = field(default_factory=list)  # (checkpoint folder, bytes)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (run folder, why)

    @property
    def freed(self) -> int:
        return sum(n for _, n in self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {"removed": [{"path": str(p), "bytes": n} for p, n in self.removed],
                "skipped": [{"path": str(p), "reason": why} for p, why in self.skipped], "freed_bytes": self.freed}


def _link_in(path: Path, root: Path) -> Path | None:
    """The first symbolic link on the way from `root` down to `path` (path included), or None."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return path
    for k in range(1, len(parts) + 1):
        if (root.joinpath(*parts[:k])).is_symlink():
            return root.joinpath(*parts[:k])
    return None


def _why_not(path: Path, root: Path) -> str | None:
    """Why `path` (a run, stage or checkpoint folder under `root`) is not for deleting, or None."""
    link = _link_in(path, root)
    if link is not None:
        return f"{link} is a symbolic link (to {os.path.realpath(link)}); links are not followed"
    if not path.resolve().is_relative_to(root.resolve()):
        return f"outside {root}"
    return None


def prune_checkpoints(folder: str | Path = "runs", *, dry_run: bool = False) -> Pruned:
    """Remove the checkpoints of every finished run (and finished stage) under `folder`; an unfinished one keeps
    them, since resuming needs them, and a running one is not touched. Nothing is deleted through a symbolic
    link or outside `folder`; whatever is kept is in `skipped` with the reason, and one that cannot be removed
    does not stop the others."""
    root = Path(folder).absolute()
    out = Pruned()
    links: list[Path] = []
    runs = find_runs(root, links)
    out.skipped += [(link, f"a symbolic link (to {os.path.realpath(link)}); links are not followed") for link in links]
    for run in runs:
        if run.status == "running":
            out.skipped.append((run.path, f"running (pid {run.pid}): its training uses its checkpoints"
                                if run.pid else "running: its training uses its checkpoints"))
            continue
        if run.status == "damaged":
            out.skipped.append((run.path, f"damaged: {run.problem}"))
            continue
        for part in run.stages or [run]:
            why = _why_not(part.path, root)
            if why:
                out.skipped.append((part.path, why))
                continue
            paths = checkpoint_dirs(part.path) if _real_dir(part.path) else []
            candidates = [part.path / STAGING, *part.path.glob("checkpoint-*")] if _real_dir(part.path) else []
            out.skipped += [(p, f"a symbolic link (to {os.path.realpath(p)}); links are not followed")
                            for p in candidates if p.is_symlink()]
            paths += [part.path / STAGING] if _real_dir(part.path / STAGING) else []
            if not paths:
                continue
            if part.status != "finished":
                out.skipped.append((part.path, "unfinished: its checkpoints are needed to resume it"))
                continue
            for path in paths:
                try:
                    out.removed += _remove([path], dry_run)
                except OSError as e:
                    out.skipped.append((path, f"could not be removed ({e.strerror or e})"))
    return out


def format_pruned(pruned: Pruned, dry_run: bool = False) -> str:
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb} {p} ({format_bytes(n)})" for p, n in pruned.removed]
    lines += [f"kept {p}: {why}" for p, why in pruned.skipped]
    count = len(pruned.removed)
    lines.append(f"{'would free' if dry_run else 'freed'} {format_bytes(pruned.freed)} "
                 f"({count} checkpoint folder{'s' if count != 1 else ''})")
    return "\n".join(lines)


def listing(runs: list[Run]) -> dict[str, Any]:
    """`sftlab runs --json`: every run (stages inside theirs) and the totals, sizes in bytes."""
    return {"runs": [r.to_dict() for r in runs], "total": {
        "runs": len(runs), "bytes": sum(r.size for r in runs), "model_bytes": sum(r.model_bytes for r in runs),
        "checkpoint_bytes": sum(r.checkpoint_bytes for r in runs), "other_bytes": sum(r.other_bytes for r in runs)}}

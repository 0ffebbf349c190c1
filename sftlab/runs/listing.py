"""Run folders on disk: what each run is, whether it finished, and what its space goes to; dropping the
checkpoints a finished run no longer needs.

A run folder holds config.yaml (written when training starts), metrics.jsonl, data_report.json, loss.png,
checkpoint-N/ (model, optimizer, scheduler and RNG state, for resuming) and, once the run has finished, the
final model (*.safetensors with its config and tokenizer files). A staged run's folder holds config.yaml with
`stages:` and one such folder per stage, with stage_done.json once that stage is finished. While a run trains,
its process holds the run lock (.train.lock, train_process.json: sftlab.runs.lock): that, not the age of its
files, is what makes it `running`, whoever started it. Each file is read by its reader in sftlab.runs.folder.
No torch here: `sftlab runs` answers at once.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftlab import jsonsafe
from sftlab.errors import SftlabError
from sftlab.models import safetensors_problem
from sftlab.runs import lock
from sftlab.runs.folder import (MERGED, MISSING, OS, RECORDS, STAGING, Stage, Unreadable, checkpoint_candidates,
                                checkpoints, count, entries, final_loss, is_run, read_config, read_metrics,
                                read_stages, read_state, run_folders, shown, stage_finished)

log = logging.getLogger("sftlab")


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
    pid: int | None = None  # the training process, while running (sftlab.runs.lock)
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
# Each file through its reader in sftlab.runs.folder: what cannot be read makes the run `damaged`, with the
# reader's sentence naming the file (or, for what the sizes and weights meet, the OSError's), never a traceback.

class _Damaged(Exception):
    """Reading a run stops at a file that cannot be read as sftlab wrote it (args[0]: its Unreadable)."""


def _read(value: Any) -> Any:
    """The value a reader of sftlab.runs.folder gave, or _Damaged when it is Unreadable."""
    if isinstance(value, Unreadable):
        raise _Damaged(value)
    return value


def _why(e: OSError) -> str:
    """What is wrong with a file, after its name: "is a FIFO, …", "cannot be read (Permission denied)"."""
    return e.what if isinstance(e, jsonsafe.NotAFile) else f"cannot be read ({e.strerror or e})"


def _damage(e: Exception) -> str:
    """The sentence of a _Damaged, or of an OSError met anywhere in reading (naming the file it met)."""
    if isinstance(e, OSError):
        return f"{shown(Path(e.filename).name) if e.filename else 'a file'} {_why(e)}"
    return str(e.args[0])


def checkpoint_dirs(folder: Path) -> list[Path]:
    """The checkpoints a run has (sftlab.runs.folder.checkpoints), oldest first; none when they cannot be read."""
    found = checkpoints(folder)
    return [] if isinstance(found, Unreadable) else found


def _final_model_whole(listed: list[Path]) -> bool:
    """Whether the final model is there: weight files at the top of the folder, each whole (a safetensors file's
    header parses and its data ends where the file does)."""
    weights = [p for p in listed if p.suffix == ".safetensors" and p.is_file()]
    try:
        return bool(weights) and not any(map(safetensors_problem, weights))
    except OSError as e:
        raise _Damaged(Unreadable("its weights", _why(e), OS)) from None


def _sizes(listed: list[Path], kept: list[Path], skip: set[str] = frozenset()) -> tuple[int, int, int]:
    """(model, checkpoints, other) bytes of a run folder's entries, less those named in `skip` (stages)."""
    model = checkpoints = other = 0
    names = {p.name for p in kept}
    for entry in listed:
        if entry.name in skip:
            continue
        try:
            size = tree_bytes(entry)
        except OSError as e:
            raise _Damaged(Unreadable(entry.name, _why(e), OS)) from None
        if entry.name in names or entry.name == STAGING:
            checkpoints += size
        elif entry.name == MERGED or (entry.is_file() and entry.name not in RECORDS
                                      and not entry.name.startswith(".")):
            model += size  # the weights, their config, the tokenizer; a merged LoRA stage's model
        else:
            other += size
    return model, checkpoints, other


def _live_total(live: lock.Holder | None, folder: Path) -> int | None:
    """The total steps a live run noted in its lock's record for `folder` (before its first checkpoint says)."""
    if live is None or live.progress.get("output_dir") != str(folder.absolute()):
        return None
    total = live.progress.get("max_steps")
    return total if count(total) else None


def _trainer_state(checkpoint: Path) -> dict[str, Any]:
    state = read_state(checkpoint)
    if isinstance(state, Unreadable):
        if state.cause == MISSING:
            return {}  # (rotated away by the running training since it was listed)
        raise _Damaged(state.inside(checkpoint.name))
    return state


def _holder(folder: Path) -> lock.Holder | None:
    """Who trains `folder`; _Damaged when its lock path is not sftlab's lock file (a FIFO, a link: not ours)."""
    problem = lock.lock_problem(folder)
    if problem:
        raise _Damaged(f"{problem}; not ours, so it is not read (remove it)")
    return lock.holder(folder)


def read_run(folder: Path, *, method: str | None = None, finished: bool | None = None,
             live: lock.Holder | None | bool = True) -> Run:
    """A plain run folder (or one stage's); `finished` overrides what the folder's files say (a stage is finished
    when it has stage_done.json); `live` is the process training it (True: ask its lock; a stage is asked
    through its staged run's). A folder that cannot be read as sftlab wrote it is `damaged`, with the reason."""
    try:
        return _read_run(folder, method, finished, live)
    except (_Damaged, OSError) as e:
        return Run(folder, "damaged", shown(method or "?"), None, None, None, problem=_damage(e))


def _read_run(folder: Path, method: str | None, finished: bool | None, live: lock.Holder | None | bool) -> Run:
    if live is True:
        live = _holder(folder)
    config = _read(read_config(folder))
    listed = _read(entries(folder))
    kept = _read(checkpoints(folder, listed))
    metrics = read_metrics(folder)  # (unreadable: the run is damaged, and the rest of it is still shown)
    records = [] if isinstance(metrics, Unreadable) else metrics.records
    problem = metrics if isinstance(metrics, Unreadable) else metrics.problem
    state = _trainer_state(kept[-1]) if kept else {}
    logged = records[-1]["step"] if records else None
    saved = state.get("global_step")
    steps = max((s for s in (logged, saved) if s is not None), default=None)
    done = _final_model_whole(listed) if finished is None else finished
    total = state.get("max_steps")
    if total is None and live:
        total = _live_total(live, folder)
    if total is None and done:
        total = steps
    model, ckpt, other = _sizes(listed, kept)
    problem = (live.problem if live else None) or (str(problem) if problem else None)
    status = "running" if live else "damaged" if problem else "finished" if done else "unfinished"
    return Run(folder, status, method or shown(config.get("method", "?"), 40), steps, total, final_loss(records),
               model, ckpt, other, [p.name for p in kept], pid=live.pid if live else None, problem=problem)


def read_staged_run(folder: Path) -> Run:
    try:
        return _read_staged_run(folder)
    except (_Damaged, OSError) as e:
        return Run(folder, "damaged", "?", None, None, None, problem=_damage(e))


def _read_stage(stage_dir: Path, stage: Stage, before: list[Run], live: lock.Holder | None) -> Run:
    """One stage of a staged run: `before` are the stages read so far, `live` the staged run's process."""
    try:
        mode = os.lstat(stage_dir).st_mode
    except FileNotFoundError:
        return Run(stage_dir, "not started", stage.method, 0, None, None)
    if not stat.S_ISDIR(os.stat(stage_dir).st_mode):  # (a link to a folder is read as that folder)
        what = "a file" if stat.S_ISREG(mode) else jsonsafe.kind(mode)
        return Run(stage_dir, "damaged", stage.method, None, None, None,
                   problem=f"{what} where the stage's folder goes")
    listed = entries(stage_dir)
    done = listed if isinstance(listed, Unreadable) else stage_finished(stage_dir)
    if isinstance(done, Unreadable):
        return Run(stage_dir, "damaged", stage.method, None, None, None, problem=str(done))
    # the stage in progress is the first one not done while the staged run's process holds its lock
    training = live if live and not done and all(s.status == "finished" for s in before) else None
    return read_run(stage_dir, method=stage.method, finished=done, live=training)


def _read_staged_run(folder: Path) -> Run:
    live = _holder(folder)
    plan = _read(read_stages(folder, _read(read_config(folder))))
    stages: list[Run] = []
    for stage in plan:
        stages.append(_read_stage(folder / stage.name, stage, stages, live))
    listed = _read(entries(folder))
    model, ckpt, other = _sizes(listed, _read(checkpoints(folder, listed)), skip={s.name for s in plan})
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


def read_any(folder: Path) -> Run:
    """The run in `folder`, staged or plain, as its config.yaml says (damaged when that cannot be read)."""
    try:
        _read(entries(folder))  # (a folder that cannot be listed says so, before the files in it)
        staged = _read(read_config(folder)).get("stages") not in (None, [])
    except (_Damaged, OSError) as e:
        return Run(folder, "damaged", "?", None, None, None, problem=_damage(e))
    return read_staged_run(folder) if staged else read_run(folder)


def find_runs(folder: str | Path = "runs", links: list[Path] | None = None) -> list[Run]:
    """Every run under `folder`, in path order (symbolic links to folders are not followed: see
    sftlab.runs.folder.run_folders)."""
    folder = Path(folder)
    if not folder.exists():
        raise SftlabError(f"runs: folder {folder} not found")
    if not folder.is_dir():
        raise SftlabError(f"runs: {folder} is a file, not a folder of runs")
    if not is_run(folder):
        try:
            next(folder.iterdir(), None)
        except OSError as e:
            raise SftlabError(f"runs: folder {folder} cannot be read ({e.strerror or e})") from None
    return [read_any(p) for p in run_folders(folder, links, warn=lambda said: log.warning("runs: %s", said))]


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
            candidates = [part.path / STAGING, *checkpoint_candidates(part.path)] if _real_dir(part.path) else []
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

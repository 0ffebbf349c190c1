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

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from sftlab import runlock
from sftlab.errors import SftlabError
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

    @property
    def size(self) -> int:
        return self.model_bytes + self.checkpoint_bytes + self.other_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "status": self.status, "method": self.method, "steps": self.steps,
            "total_steps": self.total_steps, "final_loss": self.final_loss, "bytes": self.size,
            "model_bytes": self.model_bytes, "checkpoint_bytes": self.checkpoint_bytes,
            "other_bytes": self.other_bytes, "checkpoints": self.checkpoints,
            "stages": [s.to_dict() for s in self.stages], "pid": self.pid,
        }


# ---- sizes -----------------------------------------------------------------------------------------

def tree_bytes(path: Path) -> int:
    """The bytes of a file, or of the files under a folder (their lengths; links are not followed)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for top, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
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

def checkpoint_dirs(folder: Path) -> list[Path]:
    """checkpoint-N folders written by the Trainer (they hold trainer_state.json), oldest (smallest N) first."""
    found = [p for p in folder.glob("checkpoint-*")
             if p.is_dir() and not p.is_symlink() and p.name[len("checkpoint-"):].isdigit()
             and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len("checkpoint-"):]))


def _final_model_whole(folder: Path) -> bool:
    """Whether the final model is there: weight files at the top of the folder, each whole (a safetensors file's
    header parses and its data ends where the file does)."""
    weights = [p for p in folder.glob("*.safetensors") if p.is_file()]
    return bool(weights) and not any(map(safetensors_problem, weights))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _config(folder: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _metrics(folder: Path) -> list[dict[str, Any]]:
    records = []
    try:
        lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def _sizes(folder: Path, skip: set[str] = frozenset()) -> tuple[int, int, int]:
    """(model, checkpoints, other) bytes of a run folder's entries, less those named in `skip` (stages)."""
    model = checkpoints = other = 0
    kept = {p.name for p in checkpoint_dirs(folder)}
    for entry in folder.iterdir():
        if entry.name in skip:
            continue
        size = tree_bytes(entry)
        if entry.name in kept or entry.name == STAGING:
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
    return total if isinstance(total, int) else None


def read_run(folder: Path, *, method: str | None = None, finished: bool | None = None,
             live: runlock.Holder | None | bool = True) -> Run:
    """A plain run folder (or one stage's); `finished` overrides what the folder's files say (a stage is finished
    when it has stage_done.json); `live` is the process training it (True: ask its lock; a stage is asked
    through its staged run's)."""
    if live is True:
        live = runlock.holder(folder)
    config = _config(folder)
    checkpoints = checkpoint_dirs(folder)
    records = _metrics(folder)
    state = _read_json(checkpoints[-1] / "trainer_state.json") if checkpoints else None
    state = state if isinstance(state, dict) else {}
    logged = records[-1]["step"] if records else None
    saved = state.get("global_step") if isinstance(state.get("global_step"), int) else None
    steps = max((s for s in (logged, saved) if s is not None), default=None)
    done = _final_model_whole(folder) if finished is None else finished
    total = state.get("max_steps") if isinstance(state.get("max_steps"), int) else None
    if total is None and live:
        total = _live_total(live, folder)
    if total is None and done:
        total = steps
    loss = next((r["loss"] for r in reversed(records) if isinstance(r.get("loss"), (int, float))), None)
    model, ckpt, other = _sizes(folder)
    status = "running" if live else "finished" if done else "unfinished"
    return Run(folder, status, method or str(config.get("method", "?")), steps, total,
               loss, model, ckpt, other, [p.name for p in checkpoints], pid=live.pid if live else None)


def _stage_names(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, method) of each stage of a staged run's config.yaml, as sftlab.training.stages names them."""
    out = []
    for k, stage in enumerate(config.get("stages") or [], start=1):
        stage = stage if isinstance(stage, dict) else {}
        out.append((str(stage.get("name") or f"stage-{k}"), str(stage.get("method") or config.get("method", DEFAULT_METHOD))))
    return out


def read_staged_run(folder: Path) -> Run:
    config = _config(folder)
    live = runlock.holder(folder)
    stages = []
    for name, method in _stage_names(config):
        stage_dir = folder / name
        if not stage_dir.is_dir():
            stages.append(Run(stage_dir, "not started", method, 0, None, None))
            continue
        done = (stage_dir / STAGE_DONE).is_file()
        # the stage in progress is the first one not done while the staged run's process holds its lock
        training = live if live and not done and all(s.status == "finished" for s in stages) else None
        stages.append(read_run(stage_dir, method=method, finished=done, live=training))
    model, ckpt, other = _sizes(folder, skip={name for name, _ in _stage_names(config)})
    known = [s.total_steps for s in stages]
    return Run(
        folder, "running" if live else "finished" if all(s.status == "finished" for s in stages) else "unfinished",
        "→".join(s.method for s in stages), sum(s.steps or 0 for s in stages),
        sum(known) if None not in known else None,  # type: ignore[arg-type]
        next((s.final_loss for s in reversed(stages) if s.final_loss is not None), None),
        model + sum(s.model_bytes for s in stages), ckpt + sum(s.checkpoint_bytes for s in stages),
        other + sum(s.other_bytes for s in stages), [], stages, pid=live.pid if live else None,
    )


def _run_folders(folder: Path, links: list[Path] | None = None) -> Iterator[Path]:
    """Folders with config.yaml under `folder` (itself included), not looking inside a run for more, nor
    following a symbolic link (those to folders are added to `links`)."""
    if (folder / "config.yaml").is_file():
        yield folder
        return
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return  # a folder we may not read holds no run we could list
    for child in children:
        if child.name.startswith("."):
            continue
        if child.is_symlink():
            if links is not None and child.is_dir():
                links.append(child)
        elif child.is_dir():
            yield from _run_folders(child, links)


def find_runs(folder: str | Path = "runs", links: list[Path] | None = None) -> list[Run]:
    """Every run under `folder`, in path order (symbolic links to folders are not followed: see _run_folders)."""
    folder = Path(folder)
    if not folder.exists():
        raise SftlabError(f"runs: folder {folder} not found")
    if not folder.is_dir():
        raise SftlabError(f"runs: {folder} is a file, not a folder of runs")
    return [read_staged_run(p) if _config(p).get("stages") else read_run(p) for p in _run_folders(folder, links)]


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
        rows.append(_row(run, str(run.path)))
        rows += [_row(stage, f"  {stage.path.name}") for stage in run.stages]
    sizes = [sum(r.model_bytes for r in runs), sum(r.checkpoint_bytes for r in runs), sum(r.other_bytes for r in runs)]
    rows.append(["total", f"{len(runs)} run{'s' if len(runs) != 1 else ''}", "", "", "", *_size_cells(*sizes)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    right = {3, 4, 5, 6, 7, 8}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    for run in runs:
        if run.status == "running":
            lines.append(f"{run.path}: training now (pid {run.pid})" if run.pid else f"{run.path}: training now")
            continue
        for part in [run, *run.stages]:
            if part.status == "unfinished" and not part.stages:
                lines.append(f"{part.path}: {_how_it_goes_on(part)}")
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

"""Resuming a run: which checkpoint (the newest complete one, or the one named), whether a checkpoint is complete
enough for an exact resume, what it holds the run up to, and resuming at another number of processes with the same
global batch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sftlab import jsonsafe
from sftlab.config import TrainConfig
from sftlab.errors import SftlabError
from sftlab.machine.hardware import process_count
from sftlab.models import safetensors_problem
from sftlab.runs.folder import (MISSING, OS, SFTLAB_STATE, SYNTAX, TRAINER_STATE, Unreadable,
                                checkpoint_candidates, read_state)

log = logging.getLogger("sftlab")

STATE_FILE = SFTLAB_STATE  # sftlab's part of a checkpoint: trained tokens, processes, global batch


def existing_checkpoints(out: Path) -> list[Path]:
    """checkpoint-N folders (and links of that name, which checkpoint_problem refuses), oldest (smallest N)
    first: sftlab.runs.folder.checkpoint_candidates, wider than what a run lists as its checkpoints on purpose."""
    return checkpoint_candidates(out)


def _state(path: Path, name: str) -> dict[str, Any]:
    """A state file of a checkpoint checkpoint_problem has passed (ValueError: it has changed since)."""
    state = read_state(path, name)
    if isinstance(state, Unreadable):
        raise ValueError(str(state))
    return state


def _problem(state: Unreadable) -> str:
    """A state file's problem as resuming words it: missing, not a file, a field; else unreadable."""
    if state.cause == MISSING:
        return f"{state.name} is missing"
    if state.cause in (SYNTAX, OS):
        return f"{state.name} is unreadable"
    return str(state)


def checkpoint_problem(path: Path) -> str | None:
    """What keeps `path` from an exact resume (model, optimizer, scheduler, RNG, trainer and sftlab state),
    or None when it is complete. Every file is looked at with lstat before it is opened: a FIFO planted in a
    checkpoint would block a reader forever, a link would read another one."""
    import zipfile

    if path.is_symlink():
        return "it is a symbolic link (sftlab writes checkpoints as folders)"
    for name in (TRAINER_STATE, SFTLAB_STATE):
        state = read_state(path, name)
        if isinstance(state, Unreadable):
            return _problem(state)
        if name == TRAINER_STATE and "global_step" not in state:
            return f"{name}: global_step is missing"
    try:
        planted = next((f"{p.name} {problem}" for p in path.iterdir() if p.suffix in (".pt", ".pth", ".safetensors")
                        and (problem := jsonsafe.not_a_file(p))), None)
    except OSError as e:
        return f"it cannot be read ({e.strerror or e})"
    if planted:
        return planted
    sharded = (path / "pytorch_model_fsdp_0").is_dir()  # FSDP2: model and optimizer in torch.distributed.checkpoint
    rng = sorted(path.glob("rng_state*.pth"))
    files = [("scheduler.pt", [path / "scheduler.pt"]), ("rng_state.pth", rng)]
    for name, found in files if sharded else [("optimizer.pt", [path / "optimizer.pt"]), *files]:
        if not found or not found[0].is_file():
            return f"{name} is missing"
        if not all(zipfile.is_zipfile(f) for f in found):  # torch.save writes zip archives
            return f"{found[0].name} is truncated"
    if sharded:  # (.metadata is written once every process has written its shards)
        return next((f"{d}/.metadata is missing" for d in ("pytorch_model_fsdp_0", "optimizer_0")
                     if not (path / d / ".metadata").is_file()), None)
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        return "the model weights (*.safetensors) are missing"
    return next((p for p in map(safetensors_problem, weights) if p), None)


def resume_checkpoint(config: TrainConfig) -> str | None:
    """The checkpoint to resume from: the one named, or with `resume: true` the newest complete one of
    output_dir (an incomplete newer one is passed over, with a warning)."""
    out = Path(config.output_dir)
    if isinstance(config.resume, str):
        path = Path(config.resume)
        if not (path / TRAINER_STATE).is_file():
            raise SftlabError(f"resume: {config.resume} is not a checkpoint folder (no trainer_state.json)")
        problem = checkpoint_problem(path)
        if problem:
            raise SftlabError(f"resume: checkpoint {config.resume} is incomplete ({problem}); an exact resume needs "
                              "model, optimizer, scheduler, RNG and trainer state")
        return str(path)
    checkpoints = existing_checkpoints(out) if out.is_dir() else []
    if config.resume:
        if not checkpoints:
            log.info("resume: no checkpoint in %s yet; starting from the beginning", out)
            return None
        skipped = []
        for path in reversed(checkpoints):
            problem = checkpoint_problem(path)
            if problem is None:
                if skipped:
                    log.warning("resume: %s; resuming from %s", "; ".join(skipped), path.name)
                return str(path)
            skipped.append(f"{path.name} is incomplete ({problem})")
        raise SftlabError(f"resume: no complete checkpoint in {out} ({'; '.join(skipped)})")
    if checkpoints:
        raise SftlabError(
            f"output_dir {out} already holds checkpoints; set `resume: true` to continue that run "
            "or choose another output_dir"
        )
    return None


def checkpoint_progress(checkpoint: Path) -> tuple[int, int]:
    """(optimizer steps, trained tokens) a complete checkpoint holds the run up to."""
    step = _state(checkpoint, TRAINER_STATE)["global_step"]
    tokens = _state(checkpoint, STATE_FILE).get("trained_tokens", 0)
    return step, tokens


def keep_global_batch(config: TrainConfig, checkpoint: Path) -> TrainConfig:
    """Resuming with another number of processes: grad_accum is set so that an optimizer step takes as many
    examples as before; the data order is the same at any number of processes, so the run goes on where it
    stopped, with the same steps (and the same learning-rate schedule) over the same data."""
    state = _state(checkpoint, STATE_FILE)  # (checked by checkpoint_problem when it was chosen)
    before, now = state.get("processes"), process_count()
    if before is None or before == now:  # (a checkpoint from before sftlab recorded it: resumed as it comes)
        return config
    global_batch, per_pass = state["global_batch"], config.batch_size * now
    if global_batch % per_pass:
        raise SftlabError(
            f"resume: {checkpoint.name} was trained by {before} processes taking {global_batch} examples per optimizer "
            f"step, which {now} processes × batch_size {config.batch_size} cannot divide; choose a batch_size that "
            f"makes {global_batch} a multiple of batch_size × {now}")
    step = checkpoint_progress(checkpoint)[0]
    log.warning("resume: %s was written by %d processes, this run has %d; grad_accum %d → %d keeps %d %s per "
                "optimizer step, and training goes on after the %d already trained on, in the same order", checkpoint.name,
                before, now, config.grad_accum, global_batch // per_pass, global_batch,
                "packed rows" if config.packing else "examples", step * global_batch)
    return config.model_copy(update={"grad_accum": global_batch // per_pass})

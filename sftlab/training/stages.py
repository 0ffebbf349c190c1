"""Staged runs: one config, several trainings in a row (the tutorials' training modes: continued
pre-training on domain text, then general + domain SFT; general SFT, then domain SFT; …).

Stage k is the config with the stage's keys over it, trained from stage k-1's model into
output_dir/<name>/. A LoRA/DoRA stage is merged into a full model before the next stage starts from it
(output_dir/<name>/merged); a prompt-based stage can only be the last. output_dir/metrics.jsonl has every
stage's records with a `stage` field and steps counted across the stages, and output_dir/loss.png
shows them with the stage boundaries. `resume: true` skips the finished stages and resumes the first
unfinished one from its newest checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from sftlab import jsonsafe
from sftlab.config import TrainConfig, explain, file_problem
from sftlab.data.mixture import mixture_problem
from sftlab.errors import SftlabError
from sftlab.config.methods import METHODS
from sftlab.files import child, path_name_problem, require_output_dir, write_text
from sftlab.runs.folder import (CONFIG, LOSS_PLOT, MERGED, METRICS, STAGE_DONE as DONE, Unreadable, read_metrics,
                                read_stage_done)
from sftlab.runs.lock import hold
from sftlab.training.run import TrainResult, check_output_dir, train_one

log = logging.getLogger("sftlab")


def stage_configs(config: TrainConfig) -> list[tuple[str, TrainConfig]]:
    """(name, config) of each stage, in order; each stage's model is left to train_stages to fill in."""
    base = config.model_dump()
    base.pop("stages")
    # Keys the method decides unless given (learning rates, the batch layout of prompt methods) are not
    # inherited as values: a stage with another method gets that method's defaults.
    defaults = TrainConfig.method_defaults(config.method, config.learning_rate)  # (hybrid's rate: from the one given)
    for key, value in defaults.items():
        if base[key] == value:
            base.pop(key)
    out = []
    for k, stage in enumerate(config.stages or [], start=1):
        name = stage.folder(k)
        values = {**base, **stage.keys}
        values["output_dir"] = str(child(config.output_dir, name, f"stages[{k}].name"))
        values["resume"] = False
        try:
            out.append((name, TrainConfig(**values)))
        except ValidationError as e:
            raise SftlabError(explain(e, f"stages[{k}] ({name})")) from None
    return out


def check_stages(config: TrainConfig) -> list[tuple[str, TrainConfig]]:
    """The whole config checked before any work, staged or not: each stage's keys, the files each stage names
    (the sentences a config of one stage gets, said with the stage), its output folder, and the order of the
    stages (a prompt-based stage can only be the last). Returns the stages (none for a config of one stage)."""
    problem = path_name_problem(config.output_dir)
    if problem:
        raise SftlabError(f"output_dir {config.output_dir}: cannot write there ({problem})")
    if not config.stages:
        problem = _problem(config)
        if problem:
            raise SftlabError(f"config: {problem}")
        return []
    stages = stage_configs(config)
    for k, (name, stage) in enumerate(stages, start=1):
        problem = _problem(stage)
        if problem:
            raise SftlabError(f"stages[{k}] ({name}): {problem}")
        if stage.method_spec.adapter and not stage.method_spec.mergeable and k < len(stages):
            raise SftlabError(f"stages[{k}] ({name}): a {stage.method} stage cannot be followed by another (its "
                              "adapter cannot be merged into the model); make it the last stage")
    return stages


def _problem(config: TrainConfig) -> str | None:
    """What stops a config of one stage before any work: a file it names, mixture keys that cannot act."""
    return file_problem(config) or mixture_problem([d.weight for d in config.datasets], config.mixture_examples,
                                                   config.mixture_replacement)


def train(config: TrainConfig, *, callbacks: Sequence[Any] = (), quiet: bool = False) -> TrainResult:
    """Run the training that `config` describes, staged (stages:) or not; returns where everything was written.
    Nothing trains before the whole config has passed check_stages; then the run lock of output_dir is held
    throughout (sftlab.runs.lock): a second training into the same folder is refused before it changes anything
    there."""
    check_stages(config)
    check_output_dir(config)  # (before the lock writes its file there)
    with hold(config.output_dir, "output_dir"):
        if config.stages:
            return train_stages(config, callbacks=callbacks, quiet=quiet)
        if config.task != "sft":
            from sftlab.training.heads import train_head

            return train_head(config, callbacks=callbacks, quiet=quiet)
        return train_one(config, callbacks=callbacks, quiet=quiet)


def train_stages(config: TrainConfig, *, callbacks: Sequence[Any] = (), quiet: bool = False) -> TrainResult:
    from sftlab.training.merge import merge_adapter
    from sftlab.training.plot import plot_metrics

    out = Path(config.output_dir)
    stages = check_stages(config)
    if not config.resume and any((out / name).exists() for name, _ in stages):
        raise SftlabError(f"output_dir {out} already holds stages of a run; set `resume: true` to continue that run "
                          "or choose another output_dir")
    require_output_dir(out, "output_dir")
    write_text(out / CONFIG, config.for_rerun().to_yaml())
    model = config.model
    records: list[dict[str, Any]] = []
    result = None
    for k, (name, stage) in enumerate(stages, start=1):
        stage_dir = Path(stage.output_dir)
        stage.model = model
        if (stage_dir / DONE).exists() or (stage_dir / DONE).is_symlink():
            log.info("stage %d/%d (%s) is finished; going on from its model", k, len(stages), name)
            done = _done(stage_dir)
            stage_records = _records(stage_dir)
        else:
            log.info("stage %d/%d (%s): %s on %s", k, len(stages), name, stage.method,
                     ", ".join(d.path for d in stage.datasets))
            stage.resume = bool(config.resume)
            result = train_one(stage, callbacks=callbacks, quiet=quiet)
            if not result.main_process:
                return result
            final = stage_dir
            following = stages[k][1].method if k < len(stages) else None
            continued = not config.merge_lora_stages and following is not None and METHODS[following].mergeable
            if stage.method_spec.mergeable and k < len(stages) and not continued:
                final = merge_adapter(stage_dir, stage_dir / MERGED)
            done = {"model": str(final)}
            write_text(stage_dir / DONE, jsonsafe.dumps(done))
            stage_records = result.metrics
        offset = records[-1]["step"] if records else 0
        records += [{**r, "stage": name, "stage_step": r["step"], "step": r["step"] + offset} for r in stage_records]
        model = done["model"]
    write_text(out / METRICS, jsonsafe.jsonl(records))
    plot_metrics(records, out / LOSS_PLOT)
    if result is None:  # every stage was finished already
        result = TrainResult(out)
    result.output_dir, result.metrics = out, records
    return result


def _damaged(stage_dir: Path, problem: Unreadable) -> SftlabError:
    return SftlabError(f"{problem.at(stage_dir / problem.name)}; it is sftlab's record of a finished stage: remove "
                       "the stage's folder to train that stage again")


def _done(stage_dir: Path) -> dict[str, Any]:
    """stage_done.json, checked field by field: {"model": the folder the next stage starts from}."""
    model = read_stage_done(stage_dir)
    if isinstance(model, Unreadable):
        raise _damaged(stage_dir, model)
    if model is None:  # (removed since it was seen)
        raise _damaged(stage_dir, Unreadable(DONE, "is missing"))
    return {"model": str(model)}


def _records(stage_dir: Path) -> list[dict[str, Any]]:
    """A finished stage's metrics.jsonl: each line a record with its step (NaN and infinities as null)."""
    metrics = read_metrics(stage_dir)
    problem = metrics if isinstance(metrics, Unreadable) else metrics.problem
    if problem is not None:
        raise _damaged(stage_dir, problem)
    return metrics.records

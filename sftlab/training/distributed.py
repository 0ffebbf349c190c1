"""Training in several processes on one machine: the torchrun command and environment `sftlab train --nproc N`
runs, and the final model gathered from an FSDP2-sharded run into one ordinary folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

import torch


def torchrun_command(nproc: int, config: Path | None, sets: Sequence[str], *, quiet: bool = False) -> list[str]:
    """The command that trains in `nproc` processes on this machine (a free port found by torchrun itself)."""
    args = [str(config)] if config else []
    args += [f"--set={item}" for item in sets] + (["--quiet"] if quiet else [])
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "sftlab", "train", *args]


def torchrun_env(nproc: int, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment for torchrun_command: OMP_NUM_THREADS, where not set already, shares this machine's cores
    among the `nproc` processes (torchrun would set 1 itself, with a banner saying so)."""
    env = dict(environ)
    if not env.get("OMP_NUM_THREADS"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        env["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
    return env


def gathered_state(model: torch.nn.Module, keep: bool) -> dict[str, torch.Tensor]:
    """The whole state dict of an FSDP2-sharded model, one tensor at a time; every process takes part in each
    gather, only `keep` holds the result (the others drop each tensor once gathered: never a whole model in
    their memory). (accelerate's get_state_dict hands back gathers not yet waited for, which a process that
    moves on leaves hanging over gloo.)"""
    from torch.distributed.tensor import DTensor

    state, gathered = {}, {}
    for name, value in model.state_dict(keep_vars=True).items():
        if id(value) not in gathered:  # tied weights are gathered once (on every process) and stay one tensor
            whole = value.full_tensor() if isinstance(value, DTensor) else value
            copy = whole.detach().to("cpu", copy=True)  # (a copy waits for the gather to finish)
            gathered[id(value)] = copy if keep else None
        if keep:
            state[name] = gathered[id(value)]
    return state

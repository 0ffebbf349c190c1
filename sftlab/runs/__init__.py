"""Run folders: their names and readers (folder), the run lock a training holds (lock), and `sftlab runs`'
listing and pruning (listing). What other modules import of `sftlab.runs` is here."""

from sftlab.runs.listing import (Pruned, Run, find_runs, format_bytes, format_pruned, format_runs, listing,
                                 prune_checkpoints, read_any, read_run, settle_checkpoints, tree_bytes)

__all__ = ["Pruned", "Run", "find_runs", "format_bytes", "format_pruned", "format_runs", "listing",
           "prune_checkpoints", "read_any", "read_run", "settle_checkpoints", "tree_bytes"]

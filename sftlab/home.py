"""sftlab's own cache folder ($SFTLAB_HOME, or ~/.cache/sftlab): converted GGUF tokenizers and models, encoded
examples, downloaded datasets, the precision measurement. It lives with the foundations because data, models and
the machine checks all keep files there, and none of them should import another for a path."""

from __future__ import annotations

import os
from pathlib import Path

from sftlab.errors import SftlabError, echo_path
from sftlab.files import output_folder_problem, path_name_problem


def sftlab_home() -> Path:
    """sftlab's cache folder: $SFTLAB_HOME (a relative path taken from the working folder, as an absolute one), or
    ~/.cache/sftlab. Checked on every use, before anything is read or written there: an empty value (which would
    be the working folder), a file, a FIFO, a path through a file or a name too long is one sentence."""
    value = os.environ.get("SFTLAB_HOME")
    if value is None:
        return Path.home() / ".cache" / "sftlab"
    if not value.strip():
        raise SftlabError("SFTLAB_HOME is set but empty: set it to the folder sftlab keeps its cache in, or unset it "
                          "(then ~/.cache/sftlab)")
    problem = path_name_problem(value)
    if problem:
        raise SftlabError(f"SFTLAB_HOME {echo_path(value)}: {problem}")
    home = Path(value).expanduser().absolute()
    problem = output_folder_problem(home)
    if problem:
        raise SftlabError(f"SFTLAB_HOME {echo_path(value)}: {problem}")
    return home

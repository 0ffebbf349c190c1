"""Every path a user names, checked in one place, and every file sftlab writes, written in one way.

Reading: a path must exist (a symlink loop or a broken link is said as such), be what is needed (a regular
file, or a folder where one is expected; never a FIFO, a device or a socket, which would block forever or
never end) and be readable. A name that picks a child of a folder (a stage's name) must stay inside it.
Writing: missing parent folders are created, a folder is never written over as if it were a file, the text
is written whole or not at all (a temporary file renamed into place), and text that UTF-8 cannot encode (a
lone surrogate that came in with the data) is written as its escape instead of failing mid-file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from pathlib import Path
from typing import IO, Iterator, Sequence

from sftlab.errors import SftlabError, echo, echo_path

# Text that UTF-8 cannot encode (lone surrogates) is written as \udXXX: in a JSON string that is the escape of
# the same character, so a rejects line reads back as the row that was rejected.
ENCODING_ERRORS = "backslashreplace"

_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def input_problem(path: str | Path, want: str = "file") -> str | None:
    """Why `path` cannot be read as `want` ("file", "folder" or "any": either), or None when it can."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symlink loop"
        if e.errno == errno.ENOENT and p.is_symlink():
            return f"is a broken symlink (to {os.readlink(p)}, which does not exist)"
        if e.errno == errno.ENOENT:
            return "not found"
        if e.errno == errno.ENOTDIR:
            return "not found (a part of the path is a file, not a folder)"
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        if want == "file":
            return "is a folder, not a file"
    elif stat.S_ISREG(st.st_mode):
        if want == "folder":
            return "is a file, not a folder"
    else:
        kind = next((name for test, name in _SPECIAL if test(st.st_mode)), "not a regular file")
        return f"is {kind}, not a regular file"
    if not os.access(p, os.R_OK | (os.X_OK if stat.S_ISDIR(st.st_mode) else 0)):
        return "cannot be read (permission denied)"
    return None


def require_input(path: str | Path, what: str, want: str = "file") -> Path:
    """`path` as a readable `want`, or a SftlabError "PATH: WHAT PROBLEM" (e.g. "d.jsonl: data file is a FIFO …")."""
    problem = input_problem(path, want)
    if problem:
        raise SftlabError(f"{path}: {what} {problem}")
    return Path(path)


def read_text(path: str | Path, what: str) -> str:
    """A text file a user named (template, config, key file), checked and decoded as UTF-8, or one sentence."""
    data = require_input(path, what).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SftlabError(f"{path}: {what} is not valid UTF-8 (byte {e.start}, line {line})") from None


def child(parent: str | Path, name: str, what: str) -> Path:
    """The folder `name` inside `parent`, where `name` is one plain folder name: never a path that leads out of
    `parent` (`..`, `/`, `\\`), nor an empty name, one with spaces around it or one too long for a file system."""
    if (not name or name.strip() != name or name in (".", "..") or any(c in name for c in "/\\\0")
            or Path(name).is_absolute() or Path(name).name != name):
        raise SftlabError(f"{what} {echo(name)} is not a plain folder name (no '/', '\\', '..' or surrounding spaces): "
                          f"it names a folder inside {parent}")
    too_long = name_too_long(name)
    if too_long:
        raise SftlabError(f"{what} {_short(name)!r} {too_long}")
    return Path(parent) / name


# The longest file or folder name the common file systems take (ext4, XFS, btrfs, APFS, NTFS: 255 bytes or units).
NAME_MAX = 255


def name_too_long(name: str) -> str | None:
    """Why one file or folder name cannot be created anywhere (its UTF-8 longer than NAME_MAX bytes), or None."""
    size = len(name.encode("utf-8", ENCODING_ERRORS))
    return f"is too long for a folder name ({size} bytes; file systems take at most {NAME_MAX})" if size > NAME_MAX else None


def path_name_problem(path: str | Path) -> str | None:
    """Why a path to be created has a part no file system takes (a name longer than NAME_MAX bytes), or None."""
    for part in Path(path).parts:
        problem = name_too_long(part)
        if problem:
            return f"the name {_short(part)!r} {problem}"
    return None


def _short(name: str, keep: int = 40) -> str:
    return name if len(name) <= keep else name[:keep] + "…"


def output_file_problem(path: str | Path) -> str | None:
    """Why a file cannot be written at `path`, or None (missing parent folders are fine: writing creates them)."""
    p = Path(path)
    if p.is_dir():
        return "is a folder; give a file name"
    if p.exists() and not p.is_file():
        return input_problem(p) or "is not a regular file"
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot be written: {ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot be written (no permission to write in {ancestor})"
    return None


def output_folder_problem(path: str | Path) -> str | None:
    """Why `path` cannot be (or become) a folder, said without touching the disk beyond lstat/stat: a file, FIFO,
    broken link or loop there, or a file among the folders above it; None where a folder is or can be made."""
    p = Path(path)
    if os.path.isfile(p):
        return "a file of that name exists; choose a folder"
    if os.path.lexists(p):
        return input_problem(p, "folder")
    ancestor = p.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    return None if ancestor.is_dir() else "a part of the path is a file, not a folder"


def require_output_file(path: str | Path, what: str) -> Path:
    problem = output_file_problem(path)
    if problem:
        raise SftlabError(f"{what} {path}: {problem}")
    return Path(path)


def require_output_dir(path: str | Path, what: str, keep: bool = True) -> Path:
    """Create the folder `path` (and its parents) and check files can be written in it, or one sentence. With
    `keep` False the folders it made are removed again: a probe before a model loads, so a later refusal leaves no
    empty folder behind (asking os.access is not enough: root may "write" where mkdir fails, as in /proc)."""
    import tempfile

    out = Path(path)
    made = []  # the folders this call creates, deepest first
    missing = out
    while not os.path.lexists(missing) and missing != missing.parent:
        made.append(missing)
        missing = missing.parent
    if os.path.lexists(out) and not out.is_dir():  # (a FIFO, a device, a broken link: said as what it is)
        problem = "a file of that name exists" if out.is_file() else input_problem(out, "any")
        raise SftlabError(f"{what} {out}: {problem}; choose a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        # A file of its own (every process of a distributed run probes at once), removed on close.
        with tempfile.NamedTemporaryFile(dir=out, prefix=".sftlab-write-test-"):
            pass
    except FileExistsError:
        raise SftlabError(f"{what} {out}: a file of that name exists; choose a folder") from None
    except NotADirectoryError:
        raise SftlabError(f"{what} {out}: a part of the path is a file, not a folder") from None
    except OSError as e:
        raise SftlabError(f"{what} {out}: cannot write there ({e.strerror or e})") from None
    finally:
        for folder in made if not keep else ():
            with contextlib.suppress(OSError):
                folder.rmdir()
    return out


# The folders sftlab's own layout puts inside a run's folder (`sftlab ui`'s eval/ and export/…, a staged run's
# STAGE/merged): names no model file has, so they may lie inside the model they are made from.
RUN_OUTPUTS = ("eval", "export", "merged")


def require_apart(out: str | Path, what: str, reads: Sequence[tuple[str, str | Path | None]]) -> None:
    """Refuse an output folder that is, is inside (but for RUN_OUTPUTS), or holds a path the command reads (`reads`:
    (what it is, path); None where there is no path, as for a hub name), links resolved: a merge once wrote its
    model over the very base model it had loaded. Called before anything is written or loaded."""
    target = Path(os.path.realpath(Path(out).expanduser()))
    for name, path in reads:
        if path is None:
            continue
        source = Path(os.path.realpath(Path(path).expanduser()))
        inside = target != source and target.is_relative_to(source)
        relation = ("is" if target == source else
                    "is inside" if inside and target.relative_to(source).parts[0] not in RUN_OUTPUTS else
                    "holds" if source.is_relative_to(target) else None)
        if relation:
            shown = echo_path(out)
            if Path(os.path.abspath(Path(out).expanduser())) != target:  # (a link: where it leads)
                shown += f" (-> {echo_path(target)})"
            raise SftlabError(f"{what} {shown} {relation} the {name} {echo_path(path)}, which this command reads; "
                              "write to a folder apart from every model and data file it reads")


@contextlib.contextmanager
def atomic_writer(path: str | Path, what: str = "output") -> Iterator[IO[str]]:
    """A text file to write `path` through: the text appears at `path` whole when the block ends, or not at all
    (an error or an interrupt leaves whatever was there before, and no temporary file)."""
    target = require_output_file(path, what)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SftlabError(f"{what} {path}: cannot be written ({e.strerror or e})") from None
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", errors=ENCODING_ERRORS, newline="\n") as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str, what: str = "output") -> Path:
    """Write `text` to `path` atomically (see atomic_writer)."""
    with atomic_writer(path, what) as f:
        f.write(text)
    return Path(path)


@contextlib.contextmanager
def atomic_folder(path: str | Path, what: str) -> Iterator[Path]:
    """A temporary folder beside `path` to write a whole model into; its files move into `path` when the block
    ends, or it is removed (an error or an interrupt leaves no half-written model in `path`, and no empty `path`
    where there was none)."""
    import shutil

    created = not Path(path).exists()
    target = require_output_dir(path, what)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for item in tmp.iterdir():
            if (target / item.name).is_dir():
                shutil.rmtree(target / item.name)
            os.replace(item, target / item.name)
    except BaseException:
        if created and target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def inside(roots: Sequence[Path], path: str, what: str) -> Path:
    """The absolute path that `path` names inside one of `roots`, symlinks resolved, or a SftlabError: the one check
    every path a request to the UI names goes through (data files, templates, models, stage datasets, outputs), so
    nothing outside those folders is read, rendered or listed. A relative path is taken in the first root where it
    exists (else the first root); `..`, an absolute path elsewhere, or a symlink pointing out are refused."""
    where = ", ".join(str(r) for r in roots)
    if not isinstance(path, str) or not path.strip() or "\0" in path:
        raise SftlabError(f"{what}: no path given")
    resolved_roots = [Path(os.path.realpath(r)) for r in roots]
    given = Path(path).expanduser() if path.startswith("~") else Path(path)
    if not given.is_absolute() and ".." in given.parts:
        raise SftlabError(f"{what} {path}: '..' is not allowed (paths stay inside {where})")
    if given.is_absolute():
        candidates = [Path(os.path.realpath(given))]
    else:
        candidates = [Path(os.path.realpath(root / given)) for root in resolved_roots]
        existing = [c for c in candidates if os.path.lexists(c)]
        candidates = existing[:1] or candidates[:1]
    target = candidates[0]
    if not any(target == root or target.is_relative_to(root) for root in resolved_roots):
        raise SftlabError(f"{what} {path} is outside the folders this UI serves ({where})")
    return target


# A run's folder name: letters (any script), digits, `.`, `_` and `-`, not starting with a dot (a hidden folder
# would never be listed), at most RUN_NAME_CHARS characters (well under every file system's name limit).
RUN_NAME_CHARS = 100
_RUN_NAME = re.compile(r"[^\W_][\w.\-]*", re.UNICODE)


def run_name_problem(name: str) -> str | None:
    """Why `name` cannot name a run folder, or None: the one rule for run names."""
    if not isinstance(name, str) or not name:
        return "is empty"
    if len(name) > RUN_NAME_CHARS:
        return f"is {len(name)} characters long; at most {RUN_NAME_CHARS}"
    if not _RUN_NAME.fullmatch(name):
        return ("may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit "
                "(no '/', spaces, or a leading dot)")
    return None

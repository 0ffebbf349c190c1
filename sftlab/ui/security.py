"""What keeps the UI from being someone else's remote shell (LlamaBoard's CVE-2024-52803): loopback unless a key
is set, the key on every request when it is, no state change from another site's page, no DNS rebinding onto the
loopback UI, and no path that leads out of the folders the UI was started with (its working folder, its runs folder
and each --data-dir)."""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote, urlsplit

from sftlab.errors import SftlabError, echo_path
from sftlab.files import inside

KEY_COOKIE = "sftlab_ui_key"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost` (a hostname, with or without brackets)."""
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_safe_host(host: str, key: str | None) -> None:
    """Listening beyond this machine needs a key; said in one sentence before anything is started."""
    if not is_loopback(host) and not key:
        raise SftlabError(
            f"--host {host} makes the UI reachable from other machines, and anyone who reaches it can train, read "
            "and write files in its folders: give a key (--api-key-file FILE or $SFTLAB_API_KEY), or keep the "
            "default 127.0.0.1 and use an SSH tunnel (ssh -L 7860:127.0.0.1:7860 HOST)")


def key_matches(given: str | None, key: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), key.encode())


def request_key(headers: dict[str, str], cookies: dict[str, str]) -> str | None:
    """The key a request carries: `Authorization: Bearer KEY` (scripts) or the login cookie (the pages)."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return cookies.get(KEY_COOKIE)


def host_name(host_header: str) -> str:
    """The host of a Host header without its port (`[::1]:7860` → `::1`)."""
    return urlsplit(f"//{host_header}").hostname or ""


def cross_site_problem(method: str, headers: dict[str, str]) -> str | None:
    """Why a state-changing request looks as if another site's page sent it, or None. Browsers send
    Sec-Fetch-Site and Origin with such requests; scripts (curl, Python) send neither and are let through (they
    need the key wherever the UI is reachable from elsewhere)."""
    if method.upper() in SAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} request may not change anything here (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if origin == "null" or parts.netloc.lower() != headers.get("host", "").lower():
            return f"a request from {origin} may not change anything here (only pages of this UI may)"
    return None


def rebinding_problem(host_header: str, key: str | None) -> str | None:
    """Without a key the UI listens on loopback only; a page of another site whose name resolves to 127.0.0.1
    (DNS rebinding) would still reach it under that name, so the Host must be a loopback one."""
    if key:
        return None
    name = host_name(host_header)
    if not is_loopback(name):
        return f"Host {host_header!r} is not this machine's loopback name; open the UI as http://127.0.0.1:PORT"
    return None


def same_origin_path(target: str | None) -> str:
    """A redirect target as a path of this UI, or "/": never one a browser would take off-site (`//host`,
    `/\\host`, `https://host`, their percent-encoded forms, control characters)."""
    if not target or len(target) > 2000:
        return "/"
    decoded = target
    for _ in range(3):  # what a browser or a proxy may decode on the way
        decoded = unquote(decoded)
    if (not target.startswith("/") or not decoded.startswith("/") or decoded.startswith("//") or "\\" in decoded
            or any(ord(c) < 32 or ord(c) == 127 for c in decoded)):
        return "/"
    parts = urlsplit(decoded)
    if parts.scheme or parts.netloc:
        return "/"
    return target


# How a refusal of a path outside every folder ends: the way to add a folder.
DATA_DIR_HINT = "to read data from another folder, start the UI with --data-dir FOLDER"


def served_path(roots: Sequence[Path], path: str, what: str) -> Path:
    """The one path rule (sftlab.files.inside) for a path a request names, its refusal of a path outside every
    folder naming the option that adds one."""
    try:
        return inside(roots, path, what)
    except SftlabError as e:
        if "is outside the folders this UI serves" not in str(e):
            raise
        raise SftlabError(f"{e}; {DATA_DIR_HINT}") from None


def data_dirs(folders: Sequence[str | Path]) -> list[Path]:
    """--data-dir's folders as the UI's extra roots: each an existing folder, links resolved (a root is where its
    link points, so a link changed later leads nowhere new); one sentence for anything else."""
    roots = []
    for folder in folders:
        given = Path(folder).expanduser()
        if not given.exists():
            raise SftlabError(f"--data-dir {echo_path(str(folder))}: no such folder")
        if not given.is_dir():
            raise SftlabError(f"--data-dir {echo_path(str(folder))}: not a folder; give the folder that holds the "
                              "data files")
        roots.append(Path(os.path.realpath(given)))
    return roots

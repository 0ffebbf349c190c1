"""/api/files, /api/models, /api/upload, /api/preview, /api/data/check: the data files and models the pickers
offer, uploads, the trained-token preview of a config and `sftlab data check`'s report."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sftlab.errors import SftlabError
from sftlab.files import child, require_input
from sftlab.ui import pickers
from sftlab.ui import preview as data_preview  # (the routes below are named preview and data_check)
from sftlab.ui.bodies import ConfigBody, DataCheckBody
from sftlab.ui.context import UI
from sftlab.ui.forms import ConfigError, config_data, form_schema, validate
from sftlab.ui.manager import not_regular

UPLOADS = "uploads"
MAX_UPLOAD_BYTES = 2 * 1024**3


def router(ui: UI) -> APIRouter:
    router = APIRouter()

    @router.get("/api/form")
    def form() -> dict[str, Any]:
        return {"groups": form_schema()}

    @router.get("/api/files")
    def files() -> dict[str, Any]:
        return {"files": pickers.data_files(ui.roots), "root": str(ui.runs.work_dir)}

    @router.get("/api/models")
    def models() -> dict[str, Any]:
        return {"models": pickers.model_choices(ui.runs.listing(), ui.roots)}

    @router.post("/api/upload")
    async def upload(request: Request, name: str) -> JSONResponse:
        """The request body is the file; it lands in WORK/uploads/NAME (a plain name: no path escapes)."""
        folder = ui.runs.work_dir / UPLOADS
        try:
            target = child(folder, name, "upload name")
        except SftlabError as e:
            raise ConfigError(str(e), "name") from None
        if Path(name).suffix.lower() not in pickers.DATA_FILE_SUFFIXES or len(name) > 255:
            raise ConfigError(f"upload name {name[:80]!r}: a data file is .json, .jsonl, .csv or .parquet, "
                              "its name at most 255 characters", "name")
        if folder.is_symlink():
            raise ConfigError(f"{folder} is a link: uploads are written only into a real folder inside "
                              f"{ui.runs.work_dir}", "name")
        try:
            folder.mkdir(exist_ok=True)
        except OSError as e:
            kind = not_regular(folder) or "a file"
            raise ConfigError(f"upload {name}: {UPLOADS} is {kind}, not a folder; move it away to upload"
                              if isinstance(e, FileExistsError) else
                              f"upload {name}: cannot make the folder {UPLOADS} ({e.strerror or e})", "name") from None
        taken = f"upload {name}: {UPLOADS}/{name} is a folder; choose another name"
        if not_regular(target) == "a folder":  # (said before the body is read; os.replace would refuse it after)
            raise ConfigError(taken, "name")
        # A new file of our own (O_EXCL: never a link or a file planted under that name, never another upload's).
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".part")
        tmp = Path(tmp_name)
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise SftlabError(f"upload {name}: larger than {MAX_UPLOAD_BYTES // 1024**3} GB")
                    f.write(chunk)
            tmp.replace(target)
        except OSError as e:  # a folder made under the name meanwhile, a full disk
            raise ConfigError(taken if not_regular(target) == "a folder"
                              else f"upload {name}: cannot be written ({e.strerror or e})", "name") from None
        finally:
            tmp.unlink(missing_ok=True)
        return JSONResponse({"path": target.relative_to(ui.runs.work_dir).as_posix(), "bytes": size}, status_code=201)

    @router.post("/api/preview")
    async def preview(body: ConfigBody) -> dict[str, Any]:
        config = await run_in_threadpool(validate, config_data(body), ui.roots)
        return await run_in_threadpool(data_preview.preview, config)

    @router.post("/api/data/check")
    async def data_check(body: DataCheckBody) -> dict[str, Any]:
        path = ui.path(body.path, "data file", "path")
        try:
            require_input(path, "data file", "any")
        except SftlabError as e:
            raise ConfigError(str(e), "path") from None
        return await run_in_threadpool(data_preview.data_check, path, ui.model(body.model), ui.template(body.template),
                                       body.format, body.max_length, body.clusters)

    return router

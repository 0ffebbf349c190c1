"""What every route of the UI shares: the run folders, the folders it serves, the loaded chat models, the page
templates, and the one way a path, a model or a template named in a request becomes something to use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftlab import jsonsafe
from sftlab.data.templates import BUILTIN_TEMPLATES
from sftlab.defaults import DEFAULT_MODEL
from sftlab.errors import SftlabError
from sftlab.ui.chat_models import ChatModels
from sftlab.ui.forms import ConfigError
from sftlab.ui.manager import Runs
from sftlab.ui.security import served_path

HERE = Path(__file__).parent


@dataclass
class UI:
    runs: Runs
    api_key: str | None = None
    has_export: bool = False
    chat_models: ChatModels = field(default_factory=ChatModels)
    pages: Any = None
    data_dirs: list[Path] = field(default_factory=list)  # --data-dir's folders, resolved (security.data_dirs)

    def __post_init__(self) -> None:
        from jinja2 import Environment, FileSystemLoader, select_autoescape

        # Autoescaping for every page: a run name, a file name or a data row with markup in it shows as text.
        self.pages = Environment(loader=FileSystemLoader(HERE / "templates"),
                                 autoescape=select_autoescape(["html"], default=True))
        # The data a page carries for its script (`|tojson`) is JSON that JSON.parse takes: NaN/Infinity as null.
        self.pages.policies["json.dumps_function"] = jsonsafe.dumps

    @property
    def roots(self) -> list[Path]:
        """The folders the UI serves: the working folder, the runs folder and each --data-dir."""
        return [self.runs.work_dir, self.runs.runs_dir, *self.data_dirs]

    def path(self, value: str, what: str, field: str) -> Path:
        """A path from a request, inside the UI's folders (security.served_path), or a 400 naming `field`."""
        try:
            return served_path(self.roots, value, what)
        except SftlabError as e:
            raise ConfigError(str(e), field) from None

    def model(self, value: str | None, field: str = "model") -> str | None:
        """None for the default model (or none given), else a model folder or .gguf inside the UI's folders."""
        if not value or value.strip().lower() == DEFAULT_MODEL:
            return None
        return str(self.path(value, "model", field))

    def template(self, value: str | None, field: str = "template") -> str | None:
        """A built-in template's name as it is; anything else is a file, inside the UI's folders."""
        if not value or value in BUILTIN_TEMPLATES:
            return value or None
        return str(self.path(value, "template", field))

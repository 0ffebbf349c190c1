"""How a config key is declared (`setting`: default, help, the form's group) and the groups of the UI's form."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import Field
from pydantic_core import PydanticUndefined

from sftlab.config.bounds import COUNT

# The groups of the UI's form, in its order (sftlab/ui/i18n.py translates them).
WHAT, HOW, OPTIMISATION, EVALUATION, BOOKKEEPING = "What to train", "How", "Optimisation", "Evaluation", "Bookkeeping"
GROUPS = (WHAT, HOW, OPTIMISATION, EVALUATION, BOOKKEEPING)


def setting(default: Any = PydanticUndefined, *, group: str, help: str, transformers: str | tuple[str, ...] = (),
            **kwargs: Any) -> Any:
    """A config key's declaration: its default, the form's group and its help (the one text the form, the schema
    and docs read), and the TrainingArguments it is under transformers' own names (`transformers`), if any."""
    extra: dict[str, Any] = {"group": group}
    if transformers:
        extra["transformers"] = [transformers] if isinstance(transformers, str) else list(transformers)
    return Field(default, description=help, json_schema_extra=extra, **kwargs)


def transformers_arguments(settings: Any) -> dict[str, Any]:
    """The TrainingArguments the keys of `settings` (a TrainConfig) are, under transformers' names."""
    return {name: getattr(settings, key) for key, field in type(settings).model_fields.items()
            for name in (field.json_schema_extra or {}).get("transformers", ())}  # type: ignore[union-attr]


Count = Annotated[int, COUNT]
OptionalCount = Annotated[Optional[int], COUNT]



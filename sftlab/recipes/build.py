"""One recipe → one sftlab config, the same steps for every tool: the tool's rules over every key, its datasets,
the model given to the import, the keys the chosen method does not read set aside, the tool's defaults where
sftlab's differ, and the config validated by TrainConfig itself (a value sftlab refuses is reported, not written)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from sftlab.errors import SftlabError, echo_path
from sftlab.recipes.rules import Default, Imported, Item, Rule, apply_defaults, set_key, shown, translate


@dataclass
class Data:
    """What a tool's dataset keys became: config keys (datasets, eval_datasets, and any key the data decides, such
    as train_on), the items of those keys, and notes."""

    config: dict[str, Any] = field(default_factory=dict)
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Tool:
    """A tool's table and its own steps: `name` as people write it, `rules` and `defaults` (rules.py), the keys its
    `data` function reports itself (`skip`), the recipe's refusals (`check`), the tool's own chat template the
    recipe names (`template`), and notes on how its training differs whatever the recipe says (`notes`)."""

    name: str
    rules: list[Rule]
    defaults: list[Default]
    skip: tuple[str, ...]
    data: Callable[[Mapping[str, Any], str, Optional[str]], Data]
    check: Callable[[Mapping[str, Any], str], None]
    template: Callable[[Mapping[str, Any]], Optional[str]]
    notes: Callable[[Mapping[str, Any], dict[str, Any]], list[str]]


def build(tool_id: str, tool: Tool, recipe: Mapping[str, Any], source: str, *, dataset_dir: Optional[str] = None,
          model: Optional[str] = None) -> Imported:
    """The sftlab config of `recipe` (read from `source`), with its report."""
    tool.check(recipe, source)
    config, items = translate(recipe, tool.rules, tool.name, tool.skip)
    data = tool.data(recipe, source, dataset_dir)
    for key, value in data.config.items():
        set_key(config, key, value)
    items = _in_recipe_order(items + data.items, recipe)
    notes = list(data.notes)
    if model is not None:
        notes += _override_model(config, items, model)
    own = _sftlab_defaults()
    # The method first: the tool's defaults of the other keys are those of the method it trains.
    notes += apply_defaults(config, recipe, [d for d in tool.defaults if d.to == "method"], tool.name, own)
    _set_aside_unread(config, items, tool.name)
    others = [d for d in tool.defaults if d.to != "method"]
    notes += apply_defaults(config, recipe, _read_by_method(others, config), tool.name, own)
    notes += tool.notes(recipe, config) + _batch_note(config, tool.name)
    if not config.get("datasets"):
        raise SftlabError(f"{echo_path(source)}: the recipe names no training data sftlab can read "
                          f"({_why_no_data(items)})")
    config = _validated(config, items, source)
    template = tool.template(recipe)
    return Imported(tool_id, config, items, notes, (tool_id, template) if template else None)


def _in_recipe_order(items: list[Item], recipe: Mapping[str, Any]) -> list[Item]:
    """Items in the order of the recipe's keys (a dataset's own entries after the key that names it)."""
    order = {k: i for i, k in enumerate(recipe)}

    def position(item: Item) -> int:
        root = item.key.split(".")[0].split("[")[0]
        return order.get(root, order.get(DATA_ROOTS.get(root, ""), len(order)))

    return sorted(items, key=position)


# Report keys that are no key of the recipe itself, and the recipe key they belong beside.
DATA_ROOTS = {"dataset_info": "dataset"}


def _override_model(config: dict[str, Any], items: list[Item], model: str) -> list[str]:
    recipe_model = config.get("model")
    config["model"] = model
    for item in items:
        if item.to == "model":
            item.why += f"; overridden by the model given to the import ({shown(model)})"
    return [f"model: {shown(model)}, given to the import" + (f" in place of the recipe's {shown(recipe_model)}"
                                                            if recipe_model else "")]


def _sftlab_defaults() -> dict[str, Any]:
    """sftlab's own default of each key (a tool's default equal to it needs no line in the config)."""
    from sftlab.config.train import TrainConfig

    return {name: f.default for name, f in TrainConfig.model_fields.items() if f.default_factory is None}


def _method(config: Mapping[str, Any]) -> str:
    from sftlab.config.methods import DEFAULT_METHOD

    method = config.get("method")
    return method if isinstance(method, str) else DEFAULT_METHOD


def _read_by_method(defaults: list[Default], config: Mapping[str, Any]) -> list[Default]:
    """The defaults of keys the chosen method reads (the tool's LoRA rank means nothing to a full fine-tune)."""
    from sftlab.config.methods import OWNERS

    method = _method(config)
    return [d for d in defaults if d.to not in OWNERS or method in OWNERS[d.to]]


def _set_aside_unread(config: dict[str, Any], items: list[Item], tool: str) -> None:
    """A key of another method (lora_r under a full fine-tune) reads nothing in the tool's run either: reported
    ignored and left out, as sftlab refuses a method's key with another method."""
    from sftlab.config.methods import OWNERS

    method = _method(config)
    for key, owners in OWNERS.items():
        if key in config and method not in owners:
            del config[key]
            for item in items:
                if item.to == key:
                    item.status, item.to = "ignored", None
                    item.why += f"; not used: method {method} does not read it (nor does the {tool} run)"


def _batch_note(config: Mapping[str, Any], tool: str) -> list[str]:
    """The examples an optimizer step sees, said once: the product is what a recipe's batch means."""
    from sftlab.config.train import TrainConfig

    if "batch_size" not in config and "grad_accum" not in config:
        return []
    fields = TrainConfig.model_fields
    batch = config.get("batch_size", fields["batch_size"].default)
    accum = config.get("grad_accum", fields["grad_accum"].default)
    if not all(isinstance(v, int) for v in (batch, accum)):
        return []
    return [f"per device, each optimizer step sees batch_size {batch} × grad_accum {accum} = {batch * accum} "
            f"examples, as in {tool} (× the number of processes under torchrun)"]


def _why_no_data(items: list[Item]) -> str:
    unread = [i for i in items if i.status == "unsupported" and ("dataset" in i.key or "path" in i.key)]
    unread.sort(key=lambda i: "[" not in i.key)  # (a dataset's own line says why it is not read)
    return f"{unread[0].key}: {unread[0].why}" if unread else "give a dataset of local files"


def _validated(config: dict[str, Any], items: list[Item], source: str) -> dict[str, Any]:
    """The config as TrainConfig takes it: a value it refuses (a scheduler it does not know, tensorboard not
    installed) leaves the config and its item says why; the keys in TrainConfig's order."""
    from pydantic import ValidationError

    from sftlab.config.load import explain
    from sftlab.config.train import TrainConfig

    for _ in range(len(config) + 1):
        try:
            TrainConfig(**config)
        except ValidationError as e:
            loc = e.errors()[0]["loc"]
            key = str(loc[0]) if loc else None
            if key is None or key not in config or key in ("datasets", "eval_datasets"):
                raise SftlabError(f"{echo_path(source)}: the imported config is refused "
                                  f"({explain(e, 'config')})") from None
            del config[key]
            reason = explain(e, "sftlab").removeprefix("sftlab: ")
            for item in items:
                if item.to is not None and item.to.split(".")[0] == key:
                    item.status, item.to = "unsupported", None
                    item.why += f"; sftlab refuses the value: {reason}"
            continue
        order = list(TrainConfig.model_fields)
        return {k: config[k] for k in sorted(config, key=lambda k: order.index(k) if k in order else len(order))}
    raise SftlabError(f"{echo_path(source)}: the imported config is refused")  # (not reached: each round removes a key)

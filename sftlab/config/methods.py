"""The training methods, one record each: everything the rest of sftlab asks about a method (config defaults and
checks, the run, staged runs, merge, the trainer) is a field here; how a method sets up the model is one function
in sftlab/training/methods.py (`apply_<name>`). Adding a method is one record and one function (CONTRIBUTING.md).

No torch or peft here: the config reads this table when it validates."""

from __future__ import annotations

from dataclasses import dataclass

# What TRL, LLaMA-Factory and the peft docs recommend for small-to-medium models.
FULL_LEARNING_RATE = 2e-5
ADAPTER_LEARNING_RATE = 2e-4


@dataclass(frozen=True)
class Method:
    name: str
    learning_rate: float  # the default learning_rate
    adapter: bool = False  # the run's output is a peft adapter (saved as one; chat/eval/serve load it on its base)
    mergeable: bool = False  # a LoRA-type adapter: `sftlab merge` folds it into the base, and a following LoRA-type
    #                          stage of a staged run may train the same adapter on (merge_lora_stages: false)
    peft_type: str | None = None  # the peft_type its adapter_config.json names
    one_example_per_row: bool = False  # virtual tokens go in front of a row: padding_free and packing are off
    lora_phase: bool = False  # hybrid: full fine-tuning, then LoRA (its own learning rate, the adapters merged at the end)
    # How the embedding rows of chat tokens added to a base model's vocabulary train: "all" (the whole embedding
    # trains anyway), "rows" (only the new rows, sftlab/training/tokens.py), "peft" (peft's trainable tokens), or
    # None: the method cannot train them (refused).
    new_token_rows: str | None = "all"
    own_keys: tuple[str, ...] = ()  # config keys that only this method takes (set with another method: refused)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("full", FULL_LEARNING_RATE),
    Method("freeze", FULL_LEARNING_RATE, new_token_rows="rows"),
    Method("lora", ADAPTER_LEARNING_RATE, adapter=True, mergeable=True, peft_type="LORA", new_token_rows="peft"),
    Method("dora", ADAPTER_LEARNING_RATE, adapter=True, mergeable=True, peft_type="LORA", new_token_rows="peft"),
    Method("hybrid", FULL_LEARNING_RATE, lora_phase=True, new_token_rows="rows", own_keys=("hybrid_lora_learning_rate",)),
    # peft's task guides: prompt tuning 3e-2, prefix tuning 1e-2, P-tuning 1e-3; LLaMA-Adapter's paper 9e-3.
    Method("prompt_tuning", 3e-2, adapter=True, peft_type="PROMPT_TUNING", one_example_per_row=True,
           new_token_rows=None, own_keys=("prompt_init_text",)),
    Method("prefix_tuning", 1e-2, adapter=True, peft_type="PREFIX_TUNING", one_example_per_row=True, new_token_rows=None),
    Method("p_tuning", 1e-3, adapter=True, peft_type="P_TUNING", one_example_per_row=True, new_token_rows=None),
    Method("adaption_prompt", 9e-3, adapter=True, peft_type="ADAPTION_PROMPT", new_token_rows=None),
)}
METHOD_NAMES = tuple(METHODS)
DEFAULT_METHOD = METHOD_NAMES[0]
# The adapters `sftlab merge` and `sftlab export` cannot fold into a model (virtual tokens, not weight deltas).
UNMERGEABLE_PEFT_TYPES = tuple(m.peft_type for m in METHODS.values() if m.adapter and not m.mergeable)

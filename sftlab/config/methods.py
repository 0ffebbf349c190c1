"""The training methods, one record each: everything the rest of sftlab asks about a method (config defaults and
checks, the run, staged runs, merge, the trainer) is a field here; how a method sets up the model is one function
in sftlab/training/methods.py, registered for the method's name (`@setup_for("NAME")`). Adding a method is one
record and one function (CONTRIBUTING.md).

No torch or peft here: the config reads this table when it validates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

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
    # peft config options the method fixes (DoRA is LoRA with use_dora), given to its peft config as they are.
    peft_options: Mapping[str, Any] = field(default_factory=dict)
    one_example_per_row: bool = False  # virtual tokens go in front of a row: padding_free and packing are off
    lora_phase: bool = False  # hybrid: full fine-tuning, then LoRA (its own learning rate, the adapters merged at the end)
    # Whether the embedding rows of chat tokens added to a base model's vocabulary can train under it (prompt
    # methods train virtual tokens only: refused).
    trains_new_tokens: bool = True
    # The config keys this method acts on that some methods do not (a key may be several methods' own: LoRA's rank is
    # lora's, dora's, qlora's and hybrid's). Set to other than its default with a method that does not own it, a key
    # is refused (TrainConfig reads OWNERS below): nothing a config gives is silently left unused.
    own_keys: tuple[str, ...] = ()
    quantized: bool = False  # the base's linear layers load in 4-bit NF4 (sftlab/models/quantize.py), frozen
    head: bool = False  # trains a task head (task: classification | reward; sftlab/training/heads.py)


LORA_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "lora_targets")
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("full", FULL_LEARNING_RATE, head=True),
    Method("freeze", FULL_LEARNING_RATE, head=True, own_keys=("freeze_trainable_layers", "freeze_train_embeddings")),
    Method("lora", ADAPTER_LEARNING_RATE, adapter=True, mergeable=True, peft_type="LORA", head=True,
           own_keys=LORA_KEYS),
    Method("dora", ADAPTER_LEARNING_RATE, adapter=True, mergeable=True, peft_type="LORA",
           peft_options={"use_dora": True}, head=True, own_keys=LORA_KEYS),
    # LoRA on a 4-bit NF4 base (bitsandbytes). New chat tokens' rows would be peft's trainable tokens on a quantised
    # model, which sftlab does not test: refused.
    Method("qlora", ADAPTER_LEARNING_RATE, adapter=True, mergeable=True, peft_type="LORA", trains_new_tokens=False,
           quantized=True, own_keys=LORA_KEYS),
    Method("hybrid", FULL_LEARNING_RATE, lora_phase=True,
           own_keys=(*LORA_KEYS, "hybrid_full_fraction", "hybrid_lora_learning_rate")),
    # peft's task guides: prompt tuning 3e-2, prefix tuning 1e-2, P-tuning 1e-3; LLaMA-Adapter's paper 9e-3.
    Method("prompt_tuning", 3e-2, adapter=True, peft_type="PROMPT_TUNING", one_example_per_row=True,
           trains_new_tokens=False, own_keys=("num_virtual_tokens", "prompt_init_text")),
    Method("prefix_tuning", 1e-2, adapter=True, peft_type="PREFIX_TUNING", one_example_per_row=True,
           trains_new_tokens=False, own_keys=("num_virtual_tokens",)),
    Method("p_tuning", 1e-3, adapter=True, peft_type="P_TUNING", one_example_per_row=True, trains_new_tokens=False,
           own_keys=("num_virtual_tokens",)),
    Method("adaption_prompt", 9e-3, adapter=True, peft_type="ADAPTION_PROMPT", trains_new_tokens=False,
           own_keys=("num_virtual_tokens", "adaption_layers")),
)}
# Each own key and the methods that act on it, in METHODS' order.
OWNERS: dict[str, tuple[str, ...]] = {key: tuple(m.name for m in METHODS.values() if key in m.own_keys)
                                      for spec in METHODS.values() for key in spec.own_keys}
METHOD_NAMES = tuple(METHODS)
DEFAULT_METHOD = METHOD_NAMES[0]
# The adapters `sftlab merge` and `sftlab export` cannot fold into a model (virtual tokens, not weight deltas).
UNMERGEABLE_PEFT_TYPES = tuple(m.peft_type for m in METHODS.values() if m.adapter and not m.mergeable)

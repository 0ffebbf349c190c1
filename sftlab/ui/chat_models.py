"""The Chat page's models: generators loaded in the UI's own process (sftlab.inference.generate, the one
generation helper of chat, serve and eval), the last two kept, one generation per model at a time."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Iterator


class ChatModels:
    """Loaded generators, the last two kept (the base and the fine-tuned run side by side); one generation per model
    at a time."""

    def __init__(self, keep: int = 2):
        self.keep = keep
        self.loaded: "OrderedDict[str, tuple[Any, threading.Lock]]" = OrderedDict()
        self.lock = threading.Lock()

    def get(self, model: str) -> tuple[Any, threading.Lock]:
        from sftlab.inference.generate import load_generator

        with self.lock:
            if model in self.loaded:
                self.loaded.move_to_end(model)
                return self.loaded[model]
            generator = load_generator(model)
            self.loaded[model] = (generator, threading.Lock())
            while len(self.loaded) > self.keep:
                self.loaded.popitem(last=False)
            return self.loaded[model]

    def stream(self, model: str, messages: list[dict[str, str]], temperature: float | None,
               max_new_tokens: int) -> Iterator[str]:
        """`temperature` None: the model's own generation_config, else greedy with the repetition guard (as chat)."""
        from sftlab.inference.generate import check_options

        check_options(max_new_tokens, temperature)
        generator, lock = self.get(model)
        ids = generator.prompt_ids(messages)
        max_new = min(max_new_tokens, max(1, generator.context - len(ids)))
        generator.check_room(len(ids), 1, "max_new_tokens")
        options: dict[str, Any] = {"max_new_tokens": max_new, **generator.sampling(temperature)}
        yield from generator.stream(ids, lock=lock, **options)

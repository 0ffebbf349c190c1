"""A TRL recipe imported into sftlab: on the same rows and template, which tokens TRL trains and which sftlab
trains, and whether the imported run takes the same number of optimizer steps.

    .venv/bin/python benchmarks/recipe_vs_trl.py               # a minute or two on 2 cores (TRL 1.16: `bench` extra)
    .venv/bin/python benchmarks/recipe_vs_trl.py --work DIR    # keep the model, rows, recipe and both runs in DIR

The recipe is a YAML as `trl sft --config` reads it: a tiny random model, a local folder of `messages` rows (13
rows written below: English and Chinese, one with a system message, one of three turns, one longer than
max_length), batch 2 × accumulation 2, 2 epochs, `assistant_only_loss: true`. That is the setup TRL documents
for conversational data, and it needs a chat template with `{% generation %}` markers: TRL 1.16 swaps in its own
marked copy for the templates it knows. The Qwen2 tokenizer of tests/fixtures carries Qwen2-0.5B's (base) template,
which TRL refuses for assistant_only_loss, so the tiny model gets Qwen2.5-Instruct's template, the one TRL ships
(same vocabulary). `use_cpu: true` is in the recipe because TRL's default bf16 needs it on a CPU-only host.

TRL runs the recipe as its `sft` script does (its own argument parser, `load_dataset(dataset_name)`,
`SFTTrainer`); its examples are the trainer's processed train dataset with the labels its collator makes.
sftlab runs `sftlab.recipes.import_recipe(recipe, model=...)`'s config with `sftlab.train`; its examples are
`build_examples` with that config's data settings.

Printed: the host, the import's report, then per row whether the token ids are equal (or the first position where
they differ, decoded both sides), the trained tokens each side, and the positions only one side trains (decoded,
with the token before them); the totals; and `optimizer steps: TRL N, sftlab M` with the verdict. Exits 1 when the
steps differ.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
QWEN_TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizers" / "qwen2"
MAX_LENGTH = 160
IGNORE = -100

LONG_ANSWER = (
    "Gradient accumulation runs several micro-batches through the model before each optimizer step, adding up "
    "their gradients instead of applying them one by one. The step then sees the gradient of the whole group, "
    "as if the micro-batches had been one large batch, while memory holds only one micro-batch's activations at "
    "a time. With a batch of 2 and 2 accumulation steps, each optimizer step learns from 4 examples; the learning "
    "rate schedule counts optimizer steps, not micro-batches, so a run of 13 examples takes 4 steps per epoch, "
    "the last of them on a single example. The price is time: the micro-batches run one after the other."
)


def _chat(*turns: str, system: str | None = None) -> dict:
    roles = ["user", "assistant"] * (len(turns) // 2)
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": messages + [{"role": r, "content": c} for r, c in zip(roles, turns)]}


ROWS = [
    _chat("What is the capital of France?", "Paris."),
    _chat("Colour of a clear daytime sky?", "Blue.", system="You answer in one word."),
    _chat("用一句话介绍一下长城。", "长城是中国古代修建的军事防御工程，全长两万多公里。"),
    _chat("把“你好”翻译成英文。", "Hello."),
    _chat("I have 3 apples.", "Good: 3 apples.", "I eat one. How many now?", "2 apples.",
          "那用中文说呢？", "还剩两个苹果。"),
    _chat("Write a Python expression that squares 7.", "`7 ** 2`, which is 49."),
    _chat("今天天气怎么样？", "我无法查看实时天气，请查看当地的天气预报。"),
    _chat("List three primary colours.", "Red, yellow and blue."),
    _chat("写一首两行的诗。", "春风拂面花自开，\n明月照人归去来。"),
    _chat("Say only OK.", "OK"),
    _chat("Explain gradient accumulation.", LONG_ANSWER),
    _chat("1 加 1 等于几？", "等于 2。"),
    _chat("Name a prime number above 10.", "11 is one; 13 is another."),
]


def tiny_model(path: Path) -> Path:
    """A tiny random Llama with the real Qwen2 tokenizer (as tests/helpers.py's make_tiny_model builds it) and
    Qwen2.5-Instruct's chat template as TRL ships it, so that assistant_only_loss has a template TRL can mark."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl.chat_template_utils import qwen2_5_chat_template

    tok = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
    tok.chat_template = qwen2_5_chat_template
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def fixture_template_refused() -> str:
    """What TRL says of the fixture tokenizer's own template under assistant_only_loss (why it is not used)."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import get_training_chat_template

    try:
        get_training_chat_template(AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER)))
    except ValueError as e:
        return f"refused ({str(e).split('(')[0].strip()})"
    return "accepted"


def write_recipe(work: Path, model: Path) -> Path:
    data = work / "rows"  # `trl sft` loads dataset_name with load_dataset: a local dataset is a folder of files
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    recipe = work / "trl_sft.yaml"
    recipe.write_text(
        f"model_name_or_path: {model}\n"
        f"dataset_name: {data}\n"
        f"output_dir: {work / 'trl'}\n"
        "per_device_train_batch_size: 2\n"
        "gradient_accumulation_steps: 2\n"
        "num_train_epochs: 2\n"
        f"max_length: {MAX_LENGTH}\n"
        "learning_rate: 2.0e-4\n"
        "assistant_only_loss: true\n"
        "logging_steps: 1\n"
        "report_to: none\n"
        "use_cpu: true\n",
        encoding="utf-8",
    )
    return recipe


def run_trl(recipe: Path) -> dict:
    """The recipe as `trl sft --config RECIPE` runs it; the examples TRL trains on and its optimizer steps."""
    from datasets import load_dataset
    from transformers import PrinterCallback
    from trl import SFTTrainer
    from trl.scripts.sft import make_parser

    script, args, model_args, _ = make_parser().parse_args_and_config(["--config", str(recipe)])
    args.disable_tqdm = True  # (progress bars only: the training is the recipe's)
    args.model_init_kwargs = {"revision": model_args.model_revision, "trust_remote_code": args.trust_remote_code,
                              "attn_implementation": model_args.attn_implementation, "dtype": model_args.dtype}
    dataset = load_dataset(script.dataset_name, name=script.dataset_config)
    trainer = SFTTrainer(model=model_args.model_name_or_path, args=args, train_dataset=dataset[script.dataset_train_split])
    trainer.remove_callback(PrinterCallback)  # (its per-step log lines; the steps are counted below)
    rows = list(trainer.train_dataset)
    # The labels TRL trains on are its collator's (one row at a time: no padding to strip).
    labels = [trainer.data_collator([r])["labels"][0].tolist() for r in rows]
    trainer.train()
    return {"ids": [r["input_ids"] for r in rows], "labels": labels, "steps": trainer.state.global_step,
            "tokenizer": trainer.processing_class}


def run_sftlab(recipe: Path, model: Path, out: Path) -> dict:
    """The imported config trained with sftlab; its examples (build_examples, the config's data settings) and its
    optimizer steps, as its last checkpoint's trainer_state.json records them."""
    from sftlab import build_examples, load_tokenizer, train
    from sftlab.config import TrainConfig
    from sftlab.data.pipeline import Source
    from sftlab.recipes import import_recipe

    imported = import_recipe(recipe, model=str(model))
    config = TrainConfig(**{**imported.config, "output_dir": str(out)})
    tokenizer = load_tokenizer(config.model)
    examples, report = build_examples([Source.of(d) for d in config.datasets], tokenizer, config.data)
    result = train(config, quiet=True)
    states = sorted(out.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    steps = json.loads(states[-1].read_text())["global_step"] if states else None
    return {"imported": imported, "config": config, "examples": examples, "report": report, "steps": steps,
            "result_steps": result.steps, "run_report": result.report, "run_trained": result.trained_tokens}


def _tok(tokenizer, ids: list[int]) -> str:
    return repr(tokenizer.decode(ids))


def one_side(tokenizer, ids: list[int], mine: list[int], other: list[int]) -> collections.Counter:
    """The positions `mine` trains and `other` does not, as (token, the token before it) pairs, counted."""
    found: collections.Counter = collections.Counter()
    for i, (a, b) in enumerate(zip(mine, other)):
        if a != IGNORE and b == IGNORE:
            found[(_tok(tokenizer, [ids[i]]), _tok(tokenizer, ids[max(i - 1, 0):i]))] += 1
    return found


def _listed(found: collections.Counter) -> str:
    return ", ".join(f"{tok} after {before}" + (f" ×{n}" if n > 1 else "") for (tok, before), n in found.items())


def compare_row(n: int, tokenizer, trl_ids, trl_labels, lab_ids, lab_labels, totals: dict) -> None:
    trained = (sum(x != IGNORE for x in trl_labels), sum(x != IGNORE for x in lab_labels))
    if trl_ids == lab_ids:
        head = f"ids equal ({len(trl_ids)} tokens)"
    else:
        at = next((i for i, (a, b) in enumerate(zip(trl_ids, lab_ids)) if a != b), min(len(trl_ids), len(lab_ids)))
        head = (f"ids DIFFER at {at} ({len(trl_ids)} vs {len(lab_ids)} tokens): TRL {_tok(tokenizer, trl_ids[at:at + 3])}"
                f" | sftlab {_tok(tokenizer, lab_ids[at:at + 3])}")
        totals["differing_rows"] += 1
    print(f"row {n:>2}: {head}; trained TRL {trained[0]}, sftlab {trained[1]}")
    if trl_ids != lab_ids:
        return  # positions mean different tokens: only the counts compare
    for who, mine, other in (("TRL", trl_labels, lab_labels), ("sftlab", lab_labels, trl_labels)):
        found = one_side(tokenizer, trl_ids, mine, other)
        totals[f"{who}_only"].update(found)
        if found:
            print(f"        {who} only ({sum(found.values())}): {_listed(found)}")


def report(trl: dict, lab: dict, work: Path) -> bool:
    """Prints the comparison; True when both took the same number of optimizer steps."""
    tokenizer = trl["tokenizer"]
    imported = lab["imported"]
    print(f"imported ({imported.tool}; $WORK the work folder):")
    lines = [f"{item.key}: {item.status}" + (f" -> {item.to}" if item.to else "") + (f" ({item.why})" if item.why else "")
             for item in imported.report] + [f"note: {note}" for note in imported.notes]
    print("\n".join("  " + line.replace(str(work), "$WORK") for line in lines))
    trl_rows, lab_rows = len(trl["ids"]), len(lab["examples"])
    print(f"examples: TRL {trl_rows}, sftlab {lab_rows} (rows {len(ROWS)}); truncated by sftlab: "
          f"{lab['report'].encoded.truncated}")
    totals = {"differing_rows": 0, "TRL_only": collections.Counter(), "sftlab_only": collections.Counter()}
    for n, (ti, tl, ex) in enumerate(zip(trl["ids"], trl["labels"], lab["examples"]), start=1):
        if ex.row != n:
            print(f"row {n:>2}: sftlab's example {n} is of row {ex.row}: the rows are compared in TRL's order")
        compare_row(n, tokenizer, ti, tl, ex.input_ids, ex.labels, totals)
    tokens = (sum(map(len, trl["ids"])), sum(len(e.input_ids) for e in lab["examples"]))
    trained = (sum(x != IGNORE for row in trl["labels"] for x in row),
               sum(x != IGNORE for e in lab["examples"] for x in e.labels))
    print(f"totals: tokens TRL {tokens[0]}, sftlab {tokens[1]}; trained TRL {trained[0]}, sftlab {trained[1]}; "
          f"rows with different ids: {totals['differing_rows']}")
    # The examples above are build_examples'; the run encodes its own: the same count says they are the ones trained.
    run_trained = lab["run_report"].trained_tokens if lab["run_report"] is not None else None
    print(f"sftlab's run: {run_trained} trained tokens per epoch ({'as above' if run_trained == trained[1] else 'NOT as above'}),"
          f" {lab['run_trained']} over its {lab['config'].epochs:g} epochs")
    for who in ("TRL", "sftlab"):
        found = totals[f"{who}_only"]
        print(f"trained by {who} only: {sum(found.values())}" + (f" ({_listed(found)})" if found else ""))
    same = trl["steps"] == lab["steps"]
    print(f"optimizer steps: TRL {trl['steps']}, sftlab {lab['steps']} (TrainResult.steps {lab['result_steps']}): "
          f"{'same' if same else 'DIFFERENT'}")
    return same


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, help="folder for the model, rows, recipe and runs (default: a temporary one)")
    args = ap.parse_args()
    import logging

    from train_speed import cpu_flags  # (this script's folder is first on sys.path)

    import datasets
    import transformers

    logging.disable(logging.INFO)  # both trainers' progress lines; warnings still show
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"host: {cpu_flags()}")
        model = tiny_model(work / "model")
        recipe = write_recipe(work, model)
        print(f"Qwen2 fixture tokenizer's own template under TRL's assistant_only_loss: {fixture_template_refused()}")
        shown = recipe.read_text().replace(str(work), "$WORK")
        print(f"recipe ({recipe.name}, $WORK the work folder):\n  " + "\n  ".join(shown.splitlines()))
        trl = run_trl(recipe)
        lab = run_sftlab(recipe, model, work / "sftlab")
        same = report(trl, lab, work)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()

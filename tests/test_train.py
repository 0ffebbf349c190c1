"""Training runs with a tiny random Llama and the real Llama 2 tokenizer (seconds each)."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from helpers import SHARED_DATA, make_tiny_model
from sftlab.config import load_config
from sftlab.errors import SftlabError
from sftlab.training import train

pytestmark = pytest.mark.slow  # real trainings, models, servers and subprocess CLIs

DATA = str(SHARED_DATA / "alpaca_en_demo.json")


def config(tiny_model, out, **over):
    sets = {
        "model": str(tiny_model), "datasets": f"[{DATA}]", "template": "llama2", "limit": 24,
        "max_length": 256, "batch_size": 4, "epochs": 1, "logging_steps": 1, "learning_rate": 1e-3,
        "output_dir": str(out), "precision": "fp32", "seed": 7,
    }
    sets.update({k: str(v) for k, v in over.items()})
    return load_config(None, [f"{k}={v}" for k, v in sets.items()])


def losses(result):
    return [r["loss"] for r in result.metrics if "loss" in r]


def test_output_layout_and_the_model_loads_with_transformers(tiny_model, tmp_path):
    out = tmp_path / "run"
    result = train(config(tiny_model, out, eval_split=0.2, eval_steps=2, save_steps=2, packing="false"), quiet=True)
    for name in ("config.yaml", "metrics.jsonl", "data_report.json", "loss.png", "config.json",
                 "model.safetensors", "tokenizer.json"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]  # limit 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    for r in records:
        assert {"step", "epoch", "loss", "learning_rate", "grad_norm", "trained_tokens", "tokens_per_second"} <= set(r)
    assert [("eval_loss" in r) for r in records] == [False, True, False, True, True]
    counts = [r["trained_tokens"] for r in records]
    assert counts == sorted(counts) and 0 < counts[-1] < result.report.trained_tokens  # eval held out
    report = json.loads((out / "data_report.json").read_text())
    assert report["rows_read"] == 999 and report["examples"] == 24
    assert report["train_examples"] == 19 and report["eval_examples"] == 5
    assert report["packing_efficiency"] is None  # not packed
    saved = load_config(out / "config.yaml")
    assert saved.model_dump() == result_config(out).model_dump()
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert "[INST]" in tok.chat_template  # the template it was trained with travels with it
    assert model.config.num_hidden_layers == 2


def result_config(out):
    return load_config(out / "config.yaml")


def test_existing_run_is_not_overwritten_without_resume(tiny_model, tmp_path):
    out = tmp_path / "run"
    train(config(tiny_model, out, max_steps=2, save_steps=2), quiet=True)
    with pytest.raises(SftlabError, match="already holds checkpoints; set `resume: true`"):
        train(config(tiny_model, out, max_steps=2, save_steps=2), quiet=True)


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_gradient_accumulation_does_not_change_loss_or_update(tiny_model, tmp_path):
    common = dict(packing="false", max_steps=1, limit=8, max_grad_norm=0)
    one = train(config(tiny_model, tmp_path / "a", batch_size=8, grad_accum=1, **common), quiet=True)
    acc = train(config(tiny_model, tmp_path / "b", batch_size=2, grad_accum=4, **common), quiet=True)
    assert losses(one) == pytest.approx(losses(acc), rel=1e-5)
    assert one.metrics[0]["trained_tokens"] == acc.metrics[0]["trained_tokens"] == one.report.trained_tokens
    assert one.metrics[0]["grad_norm"] == pytest.approx(acc.metrics[0]["grad_norm"], rel=1e-4)
    a = AutoModelForCausalLM.from_pretrained(str(tmp_path / "a"))
    b = AutoModelForCausalLM.from_pretrained(str(tmp_path / "b"))
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), n


def test_micro_batches_give_the_loss_and_update_of_the_whole_batch(tiny_model, tmp_path):
    common = dict(max_steps=2, limit=16, packing="false", batch_size=8, max_length=128)
    whole = train(config(tiny_model, tmp_path / "a", micro_batch_tokens=10**6, **common), quiet=True)
    # 8 rows of ≤ 128 tokens in slices of at most 2 rows: 4 forward/backward passes per step.
    sliced = train(config(tiny_model, tmp_path / "b", micro_batch_tokens=256, **common), quiet=True)
    assert losses(whole) == pytest.approx(losses(sliced), rel=1e-5)
    assert [m["trained_tokens"] for m in whole.metrics] == [m["trained_tokens"] for m in sliced.metrics]
    assert whole.metrics[0]["grad_norm"] == pytest.approx(sliced.metrics[0]["grad_norm"], rel=1e-4)
    a = AutoModelForCausalLM.from_pretrained(str(tmp_path / "a"))
    b = AutoModelForCausalLM.from_pretrained(str(tmp_path / "b"))
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), n


@pytest.mark.parametrize("micro_batch_tokens", [10**6, 200])
def test_padding_free_and_padded_training_are_the_same_training(tiny_model, tmp_path, micro_batch_tokens):
    """The same examples per step in the same order, so the same steps, losses, gradients and weights."""
    common = dict(limit=22, batch_size=4, epochs=2, packing="false", max_grad_norm=0)
    padded = train(config(tiny_model, tmp_path / "p", padding_free="false", **common), quiet=True)
    flat = train(config(tiny_model, tmp_path / "f", padding_free="true", micro_batch_tokens=micro_batch_tokens,
                        **common), quiet=True)
    assert padded.steps == flat.steps == 12  # ceil(22 / 4) = 6 batches per epoch, 2 epochs
    assert [m["step"] for m in flat.metrics] == list(range(1, 13))
    assert losses(flat) == pytest.approx(losses(padded), rel=1e-4)
    assert [m["trained_tokens"] for m in flat.metrics] == [m["trained_tokens"] for m in padded.metrics]
    assert [m["grad_norm"] for m in flat.metrics] == pytest.approx([m["grad_norm"] for m in padded.metrics], rel=1e-3)
    a = AutoModelForCausalLM.from_pretrained(str(tmp_path / "p"))
    b = AutoModelForCausalLM.from_pretrained(str(tmp_path / "f"))
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-5), n


def test_packing_is_opt_in_and_changes_the_number_of_steps(tiny_model, tmp_path):
    common = dict(limit=22, batch_size=4, epochs=1)
    default = train(config(tiny_model, tmp_path / "d", **common), quiet=True)
    packed = train(config(tiny_model, tmp_path / "p", packing="true", **common), quiet=True)
    assert default.steps == 6 and default.report.packed_rows is None
    rows = packed.report.packed_rows
    assert rows < 22 and packed.steps == -(-rows // 4) < 6


def test_packed_and_unpacked_training_give_the_same_loss(tiny_model, tmp_path):
    common = dict(max_steps=1, limit=8, batch_size=8)
    unpacked = train(config(tiny_model, tmp_path / "u", packing="false", **common), quiet=True)
    packed = train(config(tiny_model, tmp_path / "p", packing="true", **common), quiet=True)
    padded = train(config(tiny_model, tmp_path / "pp", packing="true", padding_free="false", **common), quiet=True)
    assert losses(padded) == pytest.approx(losses(unpacked), rel=1e-5)
    assert packed.report.packed_rows < 8 and 0.5 < packed.report.packing_efficiency <= 1
    assert losses(packed) == pytest.approx(losses(unpacked), rel=1e-5)
    assert packed.metrics[0]["grad_norm"] == pytest.approx(unpacked.metrics[0]["grad_norm"], rel=1e-4)


class Snapshot(TrainerCallback):
    """Which parameters changed during each optimizer step."""

    def __init__(self):
        self.changed = []

    def on_step_begin(self, args, state, control, model=None, **kw):
        self.before = _params(model)

    def on_step_end(self, args, state, control, model=None, **kw):
        after = _params(model)
        self.changed.append({n for n in after if not torch.equal(after[n], self.before[n])})


LAYER1 = "model.layers.1."


def test_every_method_record_has_one_registered_setup():
    from sftlab.config import METHODS
    from sftlab.training.methods import SETUPS, apply_lora

    assert sorted(SETUPS) == sorted(METHODS)
    assert SETUPS["lora"] is SETUPS["dora"] is apply_lora  # (DoRA: LoRA with the record's use_dora)
    assert METHODS["dora"].peft_options == {"use_dora": True} and METHODS["lora"].peft_options == {}


@pytest.mark.parametrize("method", ["full", "freeze", "lora", "dora"])
def test_each_method_trains_exactly_its_parameters(tiny_model, tmp_path, method):
    snap = Snapshot()
    own = {"freeze": {"freeze_trainable_layers": 1}, "lora": {"lora_r": 4}, "dora": {"lora_r": 4}}.get(method, {})
    train(config(tiny_model, tmp_path / method, method=method, max_steps=2, learning_rate=1e-2, **own),
          callbacks=[snap], quiet=True)
    changed = snap.changed[-1]
    if method == "full":
        assert changed == {n for n in _params(AutoModelForCausalLM.from_pretrained(str(tiny_model)))}
    elif method == "freeze":
        assert changed and all(n.startswith(LAYER1) or n == "model.norm.weight" for n in changed)
        assert any(n.startswith(LAYER1) for n in changed) and "model.norm.weight" in changed
    else:
        assert changed and all("lora_" in n for n in changed)
        assert any("lora_B" in n for n in changed)
        if method == "dora":
            assert any("lora_magnitude_vector" in n for n in changed)
        assert (tmp_path / method / "adapter_config.json").is_file()


def test_hybrid_switches_from_full_to_lora_at_the_right_step(tiny_model, tmp_path):
    snap = Snapshot()
    out = tmp_path / "hybrid"
    train(config(tiny_model, out, method="hybrid", max_steps=5, hybrid_full_fraction=0.4, lora_r=4,
                 learning_rate=1e-2, warmup_ratio=0), callbacks=[snap], quiet=True)
    assert len(snap.changed) == 5
    for step, changed in enumerate(snap.changed, start=1):
        base = {n for n in changed if "lora_" not in n}
        adapter = changed - base
        if step <= 2:  # 40 % of 5 steps: full fine-tuning, adapters untouched
            assert "model.embed_tokens.weight" in base and not adapter, step
        else:
            assert not base and any("lora_B" in n for n in adapter), step
    merged = AutoModelForCausalLM.from_pretrained(str(out))  # a plain model: adapters merged
    assert not any("lora_" in n for n, _ in merged.named_parameters())


def test_lora_adapter_loads_and_merges_into_the_same_model(tiny_model, tmp_path):
    from peft import PeftModel

    from sftlab.training.merge import merge_adapter

    out = tmp_path / "lora"
    train(config(tiny_model, out, method="lora", max_steps=3, lora_r=4, learning_rate=5e-2), quiet=True)
    ids = torch.tensor([[1, 450, 4996, 17354, 1701]])
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    with_adapter = PeftModel.from_pretrained(base, str(out)).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(merge_adapter(out, tmp_path / "merged"))).eval()
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    with torch.no_grad():
        a, b, c = with_adapter(ids).logits, merged(ids).logits, plain(ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-4)  # the adapter did change the model
    loaded = AutoModelForCausalLM.from_pretrained(str(out))  # transformers + peft load an adapter dir
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(ids).logits, a, atol=1e-5)


def test_a_run_shorter_than_logging_steps_is_still_logged(tiny_model, tmp_path):
    out = tmp_path / "short"
    result = train(config(tiny_model, out, limit=12, logging_steps=10), quiet=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 3]  # the first and the last step (3 steps of 4 examples)
    assert all(isinstance(r["loss"], float) and r["loss"] > 0 for r in records)
    assert records[-1]["trained_tokens"] == result.trained_tokens == result.report.trained_tokens
    assert "nan" not in result.summary() and "3 steps" in result.summary()


def test_progress_prints_plain_lines_when_not_on_a_terminal(tiny_model, tmp_path, capsys):
    from sftlab.training.trainer import Progress

    train(config(tiny_model, tmp_path / "p", limit=12, logging_steps=2), callbacks=[Progress(terminal=False)],
          quiet=True)
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("step ")]
    assert [l.split()[1] for l in lines] == ["1/3", "2/3", "3/3"]
    assert all("loss " in l and "nan" not in l for l in lines)


def test_warmup_ratio_is_a_fraction_of_the_steps(tiny_model, tmp_path):
    lrs = []

    class Rates(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kw):
            lrs.append(optimizer.param_groups[0]["lr"])

    train(config(tiny_model, tmp_path / "w", limit=40, warmup_ratio=0.25, lr_scheduler="linear",
                 learning_rate=1e-3), callbacks=[Rates()], quiet=True)
    # 10 steps, warmup ceil(0.25 × 10) = 3 steps: 0, 1/3, 2/3 of the rate, then linear decay from the top.
    assert lrs[:4] == pytest.approx([0.0, 1e-3 / 3, 2e-3 / 3, 1e-3])
    assert lrs[4] == pytest.approx(1e-3 * 6 / 7)


def test_hybrid_adapters_get_their_own_learning_rate_under_one_schedule(tiny_model, tmp_path):
    seen = []

    class Groups(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, model=None, **kw):
            names = {id(p): n for n, p in model.named_parameters()}
            seen.append(sorted((g["lr"], all("lora_" in names[id(p)] for p in g["params"]))
                               for g in optimizer.param_groups))

    train(config(tiny_model, tmp_path / "h", method="hybrid", max_steps=4, lora_r=4, learning_rate=1e-3,
                 hybrid_lora_learning_rate=1e-2, warmup_ratio=0, lr_scheduler="constant"),
          callbacks=[Groups()], quiet=True)
    lrs = {lr for step in seen for lr, _ in step}
    assert lrs == {1e-3, 1e-2}
    for step in seen:
        assert all(is_lora == (lr == 1e-2) for lr, is_lora in step)


def test_lora_adapter_names_the_base_model_as_the_user_did(tmp_path):
    """adapter_config.json records `smollm2-135m-instruct`, not the cache folder the GGUF was converted
    into, and sftlab loads the adapter by resolving that name again."""
    from sftlab.models import load_model

    out = tmp_path / "lora"
    sets = {"datasets": f"[{DATA}]", "template": "chatml", "limit": 4, "max_length": 64, "batch_size": 4,
            "max_steps": 1, "method": "lora", "lora_r": 2, "output_dir": str(out), "precision": "fp32"}
    train(load_config(None, [f"{k}={v}" for k, v in sets.items()]), quiet=True)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "smollm2-135m-instruct"
    model = load_model(str(out))
    assert type(model).__name__ == "PeftModelForCausalLM"


def test_default_system_is_trained_and_saved_into_the_models_template(tiny_chat_model, tmp_path):
    """The trained model's own template gives conversations without a system message the system prompt it was trained
    with, so chat, serve and eval use it without being told."""
    from sftlab.inference.generate import load_generator

    out = tmp_path / "run"
    cfg = load_config(None, [f"model={tiny_chat_model}", f"datasets=[{DATA}]", "limit=8", "max_steps=1",
                             "batch_size=4", "max_length=128", f"output_dir={out}", "precision=fp32",
                             "default_system=You are Lumi."])
    train(cfg, quiet=True)
    report = json.loads((out / "data_report.json").read_text())
    assert report["system_prompt"] == {"conversations": 8, "of": 8, "system": "You are Lumi.", "from": "default_system",
                                       "template": "tokenizer's own", "replaces": "You are a helpful assistant"}
    expected = "<|im_start|>system\nYou are Lumi.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    saved = AutoTokenizer.from_pretrained(str(out))
    user = [{"role": "user", "content": "hi"}]
    assert saved.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == expected
    gen = load_generator(str(out), precision="fp32")
    assert gen.prompt_ids(user) == saved(expected, add_special_tokens=False)["input_ids"]



def _cli_train(tiny_model, out, **over):
    import subprocess
    import sys

    sets = {"model": tiny_model, "datasets": f"[{DATA}]", "template": "llama2", "limit": 24, "max_length": 128,
            "batch_size": 1, "max_steps": 5000, "logging_steps": 1, "save_steps": 5000, "output_dir": out,
            "precision": "fp32", **over}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "sftlab", "train", *args, "--quiet"], subprocess


def test_two_trainings_into_one_folder_the_second_refused_touching_nothing_then_sigkill(tiny_model, tmp_path):
    """`sftlab train` twice into one output_dir: the second says in one sentence which folder and which pid,
    exits non-zero and changes nothing there; the first, SIGKILLed, holds nothing any more (issue 38.1)."""
    import os
    import signal
    import time

    from sftlab import runlock
    from sftlab.runs import find_runs

    out = tmp_path / "run"
    command, subprocess = _cli_train(tiny_model, out)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not ((out / "metrics.jsonl").is_file() and runlock.holder(out) and runlock.holder(out).pid):
            assert first.poll() is None and time.time() < deadline, first.stderr.read().decode()[-2000:]
            time.sleep(0.5)
        assert runlock.holder(out).pid == first.pid and runlock.holder(out).is_live()
        assert find_runs(out)[0].status == "running"
        os.kill(first.pid, signal.SIGSTOP)  # (so that the folder holds still while the second one tries)
        before = {p.relative_to(out).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*")}
        second = subprocess.run(command, capture_output=True, text=True, timeout=300)
        after = {p.relative_to(out).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*")}
        assert second.returncode == 2 and "Traceback" not in second.stderr
        sentence = " ".join(second.stderr.split())  # (rich wraps it at the terminal's width)
        assert sentence.count("error:") == 1
        sentence = sentence[sentence.index("error:"):]  # (after any library's warning on import)
        assert sentence.startswith(f"error: output_dir {out} is being trained by pid {first.pid} (since ")
        assert sentence.endswith("; wait for it to end or stop it, or choose another output_dir")
        assert after == before
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert not runlock.is_running(out) and find_runs(out)[0].status == "unfinished"


def test_qlora_trains_an_adapter_on_a_4bit_base_and_merges_into_that_base_dequantised(tmp_path):
    """method qlora: only LoRA weights change, over bitsandbytes' NF4 layers; the merged model answers as the adapter
    on its 4-bit base does — the same greedy answer, logits within 3e-3 (the same dequantised W, but bitsandbytes'
    CPU inference kernel computes in bf16 on CPUs with avx512_bf16; 1e-6 elsewhere) — and not as the adapter on
    the original float32 base (2e-2 apart here: NF4's rounding)."""
    import bitsandbytes as bnb
    from peft import PeftModel

    from sftlab.models import load_model
    from sftlab.training.merge import merge_adapter

    # (bitsandbytes quantises in blocks of 64 values along a row: the layers here are 64 wide)
    tiny_model = make_tiny_model(tmp_path / "base", hidden=64)
    snap = Snapshot()
    out = tmp_path / "qlora"
    train(config(tiny_model, out, method="qlora", max_steps=3, lora_r=4, learning_rate=5e-2), callbacks=[snap],
          quiet=True)
    changed = snap.changed[-1]
    assert changed and all("lora_" in n for n in changed) and any("lora_B" in n for n in changed)
    assert json.loads((out / "quantization.json").read_text()) == {
        "method": "bitsandbytes", "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}
    adapter = load_model(str(out)).eval()
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in adapter.modules()) == 2 * 7  # q k v o gate up down, 2 layers
    merged_dir = merge_adapter(out, tmp_path / "merged")
    assert "quantization_config" not in json.loads((merged_dir / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
    on_float_base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(out)).eval()
    ids = torch.tensor([[1, 450, 4996, 17354, 1701]])
    with torch.no_grad():
        a, b, c = adapter(ids).logits, merged(ids).logits, on_float_base(ids).logits
        answers = [m.generate(ids, max_new_tokens=8, do_sample=False)[0].tolist() for m in (adapter, merged)]
    torch.testing.assert_close(b, a, atol=3e-3, rtol=0)
    assert (c - a).abs().max() > 1e-2  # the 4-bit base is not the float one: merging onto that would differ
    assert answers[0] == answers[1]


@pytest.mark.cuda
def test_on_cuda_a_bf16_step_trains_on_the_gpu_with_the_fp32_steps_loss(tmp_path):
    """A bf16 run on a GPU: the model sits on it, and each step's loss is the fp32 run's within 2e-2 relative (head
    dim 16, which the GPU attention kernels take)."""
    tiny_model = make_tiny_model(tmp_path / "base", hidden=64)
    seen = []

    class Where(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            seen.append(next(model.parameters()).device.type)

    bf16 = train(config(tiny_model, tmp_path / "bf16", max_steps=3, precision="bf16"), callbacks=[Where()], quiet=True)
    fp32 = train(config(tiny_model, tmp_path / "fp32", max_steps=3, precision="fp32"), quiet=True)
    assert seen == ["cuda"] * 3
    assert losses(bf16) == pytest.approx(losses(fp32), rel=2e-2)


@pytest.mark.cuda
def test_on_cuda_qlora_steps_train_the_adapter_over_4bit_layers_on_the_gpu(tmp_path):
    import bitsandbytes as bnb

    from sftlab.models import load_model

    tiny_model = make_tiny_model(tmp_path / "base", hidden=64)
    snap = Snapshot()
    out = tmp_path / "qlora"
    result = train(config(tiny_model, out, method="qlora", max_steps=3, lora_r=4, learning_rate=5e-2,
                          precision="bf16"), callbacks=[snap], quiet=True)
    assert all(loss == loss for loss in losses(result))  # no NaN
    assert snap.changed[-1] and all("lora_" in n for n in snap.changed[-1])
    assert json.loads((out / "quantization.json").read_text())["compute_dtype"] == "bfloat16"
    layers = [m for m in load_model(str(out)).modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14 and all(m.weight.device.type == "cuda" for m in layers)


def test_the_keys_reach_training_arguments_under_transformers_names(tmp_path):
    from sftlab.config import load_config
    from sftlab.training.arguments import training_arguments

    config = load_config(None, [f"datasets=[{DATA}]", "batch_size=3", "grad_accum=2", "learning_rate=0.001",
                                "lr_scheduler=linear", "warmup_ratio=0.1", "weight_decay=0.01", "max_grad_norm=0.5",
                                "epochs=2", "max_steps=7", "logging_steps=3", "save_total_limit=4", "eval_steps=5",
                                "seed=9", f"output_dir={tmp_path / 'run'}"], check_files=False)
    args = training_arguments(config, bf16=False, device="cpu", has_eval=True, quiet=True)
    got = {k: getattr(args, k) for k in (
        "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "learning_rate",
        "warmup_steps", "weight_decay", "max_grad_norm", "num_train_epochs", "max_steps", "logging_steps",
        "save_total_limit", "eval_steps", "seed", "data_seed", "output_dir")}
    assert got == {"per_device_train_batch_size": 3, "per_device_eval_batch_size": 3, "gradient_accumulation_steps": 2,
                   "learning_rate": 0.001, "warmup_steps": 0.1, "weight_decay": 0.01, "max_grad_norm": 0.5,
                   "num_train_epochs": 2.0, "max_steps": 7, "logging_steps": 3, "save_total_limit": 4,
                   "eval_steps": 5, "seed": 9, "data_seed": 9, "output_dir": str(tmp_path / "run")}
    assert args.lr_scheduler_type == "linear" and args.eval_strategy == "steps"


def test_the_console_line_says_what_of_the_data_did_not_reach_training():
    from sftlab.training.run import data_losses

    counts = {"rows_read": 1000, "rejected": 2, "rejected_reasons": {"field 'output' is empty": 2}, "cleaned": 54,
              "cleaned_reasons": {"exact_duplicate": 50, "empty_answer": 4}, "dropped": 8,
              "dropped_reasons": {"answer lost to truncation at max_length=64": 8}, "truncated": 11}
    assert data_losses(counts) == (
        "of 1000 rows read, 2 rejected (field 'output' is empty 2); 54 removed by clean (exact_duplicate 50, "
        "empty_answer 4); 8 dropped (answer lost to truncation at max_length=64 8); 11 cut to max_length (the start "
        "kept; one that lost its whole answer is dropped)")
    nothing = {**counts, "rejected": 0, "cleaned": 0, "dropped": 0, "truncated": 0}
    assert data_losses(nothing) == ""

"""Task heads (sftlab/training/heads.py): the losses and batches worked by hand, which parameters each method
trains, and classification / reward runs from the command line on tiny models with a real tokenizer."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sftlab.training.heads import HeadCollator, class_weight_vector, pairwise_loss


def test_pairwise_loss_by_hand():
    loss = pairwise_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    # -log σ(1) = log(1 + e^-1); -log σ(-2) = log(1 + e^2)
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(1 + math.exp(2))) / 2, rel=1e-6)


def test_class_weights():
    assert class_weight_vector("balanced", ["a", "b"], {"a": 3, "b": 1}) == pytest.approx([4 / 6, 4 / 2])
    assert class_weight_vector({"b": 5}, ["a", "b"], {"a": 3, "b": 1}) == [1.0, 5.0]
    assert class_weight_vector(None, ["a", "b"], {}) is None
    with pytest.raises(Exception, match="class_weights names 'c', which the training data has no rows of"):
        class_weight_vector({"c": 2}, ["a", "b"], {"a": 1, "b": 1})


def test_collator_pads_right_and_puts_rejected_after_chosen():
    collate = HeadCollator(pad_id=0)
    batch = collate([{"input_ids": [5, 6, 7], "labels": 1}, {"input_ids": [8], "labels": 0}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]
    pairs = collate([{"chosen_ids": [1, 2], "rejected_ids": [3]}, {"chosen_ids": [4], "rejected_ids": [5, 6, 7]}])
    assert pairs["input_ids"].tolist() == [[1, 2, 0], [4, 0, 0], [3, 0, 0], [5, 6, 7]]
    assert pairs["pairs"] == 2


def _head_model(tiny_chat_model, names=("neg", "pos")):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        str(tiny_chat_model), num_labels=len(names), id2label=dict(enumerate(names)))


@pytest.mark.parametrize("method, trained", [
    ("full", None),  # everything
    ("freeze", {"model.layers.1.", "model.norm.", "score."}),
    ("lora", {"lora_", "score."}),
])
def test_each_method_trains_the_head(tiny_chat_model, method, trained):
    from sftlab.config import TrainConfig
    from sftlab.training.heads import apply_head_method

    own = {"freeze": {"freeze_trainable_layers": 1}, "lora": {"lora_targets": ["q_proj", "v_proj"]}}.get(method, {})
    config = TrainConfig(model=str(tiny_chat_model), datasets=["x.json"], task="classification", method=method, **own)
    model = apply_head_method(_head_model(tiny_chat_model), config)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    if trained is None:
        assert names == {n for n, _ in model.named_parameters()}
        return
    assert names and all(any(part in n for part in trained) for n in names), names
    assert any("score" in n for n in names)  # the head trains in full with every method
    assert all(any(part in n for n in names) for part in trained)


@pytest.mark.parametrize("sets, sentence", [
    (["task=classification", "method=prompt_tuning", "padding_free=false"],
     "task classification trains a head with method full, freeze, lora, dora; method prompt_tuning cannot"),
    (["task=reward", "packing=true"], "`packing` does not apply to task: reward"),
    (["class_weights=balanced"], "`class_weights` is for task: classification only"),
])
def test_config_refuses_what_a_head_cannot_do(cli, sets, sentence):
    result = cli("train", "--set", "datasets=x.json", *[a for s in sets for a in ("--set", s)])
    assert result.returncode != 0
    assert sentence in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def _rows(path, rows):
    path.write_text(json.dumps(rows, ensure_ascii=False))
    return path


@pytest.mark.slow
def test_classification_trains_saves_and_evaluates(cli, tiny_chat_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rows = ([{"text": f"good great fine {i}", "label": "pos"} for i in range(12)]
            + [{"messages": [{"role": "user", "content": f"坏 糟糕 {i}"}], "label": "neg"} for i in range(12)])
    data = _rows(tmp_path / "cls.json", rows)
    out = tmp_path / "run"
    result = cli("train", "--quiet", "--set", f"model={tiny_chat_model}", "--set", f"datasets={data}",
                 "--set", "task=classification", "--set", f"output_dir={out}", "--set", "epochs=3",
                 "--set", "learning_rate=3e-3", "--set", "batch_size=8", "--set", "logging_steps=1",
                 "--set", "class_weights=balanced")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "data_report.json").read_text())
    assert report["labels"] == {"neg": 12, "pos": 12} and report["examples"] == 24
    assert report["class_weights"] == {"neg": 1.0, "pos": 1.0}
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert losses[-1] < losses[0]
    saved = json.loads((out / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForSequenceClassification"]
    assert saved["id2label"] == {"0": "neg", "1": "pos"} and saved["sftlab_task"] == "classification"

    ev = tmp_path / "eval"
    result = cli("eval", "--model", out, "--data", data, "--out", ev, "--precision", "fp32")  # (compared in fp32)
    assert result.returncode == 0, result.stderr
    summary = json.loads((ev / "summary.json").read_text())
    # Independently: the folder loaded as transformers loads it, scored row by row (no padding).
    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    predictions = [json.loads(line) for line in (ev / "predictions.jsonl").read_text().splitlines()]
    for record, row in zip(predictions, rows):
        if "text" in row:
            ids = tok(row["text"], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        else:
            text = tok.apply_chat_template(row["messages"], add_generation_prompt=True, tokenize=False)
            ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        assert record["predicted"] == model.config.id2label[int(logits.argmax())]
    correct = sum(p["predicted"] == p["label"] for p in predictions)
    assert summary["accuracy"] == pytest.approx(correct / 24)
    assert (ev / "confusion.png").stat().st_size > 0
    assert "macro-F1" in result.stdout

    # A head model is not a chat model: one sentence saying what to use instead.
    result = cli("chat", "--model", out)
    assert result.returncode != 0
    assert "a classification head model scores text and writes none" in " ".join(result.stderr.split())
    # A label the model never saw: one sentence naming file and row.
    unseen = _rows(tmp_path / "unseen.json", [{"text": "x", "label": "pos"}, {"text": "y", "label": "meh"}])
    result = cli("eval", "--model", out, "--data", unseen, "--out", tmp_path / "eval2")
    assert result.returncode != 0
    assert (f"{unseen}, row 2, field 'label': label 'meh' is not one the model was trained on (neg, pos)"
            in "".join(result.stderr.split("\n")))


@pytest.mark.slow
def test_reward_trains_and_scores_pairs(cli, tiny_chat_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pairs = [{"prompt": f"Question {i}?", "chosen": "A kind, helpful answer.", "rejected": "Go away."}
             for i in range(16)]
    data = _rows(tmp_path / "pairs.json", pairs)
    out = tmp_path / "rm"
    result = cli("train", "--quiet", "--set", f"model={tiny_chat_model}", "--set", f"datasets={data}",
                 "--set", "task=reward", "--set", "method=lora", "--set", "lora_targets=[q_proj, v_proj]",
                 "--set", f"output_dir={out}", "--set", "epochs=2", "--set", "learning_rate=5e-3",
                 "--set", "batch_size=4", "--set", "keep_checkpoints=none")
    assert result.returncode == 0, result.stderr
    assert not (out / "adapter_config.json").exists()  # merged: one model from_pretrained loads, head included
    ev = tmp_path / "eval"
    assert cli("eval", "--model", out, "--data", data, "--out", ev, "--precision", "fp32").returncode == 0
    summary = json.loads((ev / "summary.json").read_text())
    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))

    def reward(answer):
        text = tok.apply_chat_template([{"role": "user", "content": "Question 0?"},
                                        {"role": "assistant", "content": answer}], tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0, 0].item()

    first = json.loads((ev / "predictions.jsonl").read_text().splitlines()[0])
    assert first["chosen_reward"] == pytest.approx(reward("A kind, helpful answer."), abs=1e-4)
    assert first["rejected_reward"] == pytest.approx(reward("Go away."), abs=1e-4)
    assert summary["pairs"] == 16 and summary["pairwise_accuracy"] == 1.0  # one pair repeated: learnt


def test_single_class_is_refused(cli, tiny_chat_model, tmp_path):
    data = _rows(tmp_path / "one.json", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])
    result = cli("train", "--set", f"model={tiny_chat_model}", "--set", f"datasets={data}",
                 "--set", "task=classification", "--set", f"output_dir={tmp_path / 'o'}")
    assert result.returncode != 0
    assert (f"{data}: every row has the label 'x'; a classifier needs rows of two labels or more"
            in "".join(result.stderr.split("\n")))


@pytest.mark.slow
def test_eval_of_a_head_of_ten_thousand_labels_stays_small(cli, tiny_chat_model, tmp_path):
    """Issue 46: 20 rows of a 10,000-label head once built a 10,000 × 10,001 table and its plot for minutes."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    names = [f"label-{i}" for i in range(10_000)]
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_chat_model), num_labels=len(names),
                                                               id2label=dict(enumerate(names)))
    model.config.sftlab_task, model.config.pad_token_id = "classification", 0
    model.save_pretrained(str(tmp_path / "head"))
    AutoTokenizer.from_pretrained(str(tiny_chat_model)).save_pretrained(str(tmp_path / "head"))
    data = _rows(tmp_path / "held.json", [{"text": f"row {i}", "label": f"label-{i * 7}"} for i in range(20)])
    result = cli("eval", "--model", tmp_path / "head", "--data", data, "--out", tmp_path / "eval")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["examples"] == 20 and summary["labels_left_out"] >= 10_000 - 40
    assert len(summary["confusion"]["labels"]) <= 40 and "label-7" in summary["confusion"]["labels"]
    records = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 20 and all(len(r["probabilities"]) == 10 for r in records)
    assert sum(f.stat().st_size for f in (tmp_path / "eval").iterdir()) < 2_000_000

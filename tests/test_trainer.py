"""sftlab.training.trainer on literal inputs (no training): micro-batch slices, the callbacks' bookkeeping."""

import torch


def test_batch_slices_by_hand():
    from sftlab.training.trainer import batch_slices

    batch = {"input_ids": torch.arange(12).view(4, 3), "labels": torch.arange(12).view(4, 3), "flag": 1}
    parts = batch_slices(batch, 7)  # 7 // 3 = 2 rows per slice
    assert [p["input_ids"].tolist() for p in parts] == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]
    assert all(p["flag"] == 1 for p in parts)
    assert batch_slices(batch, 2)[0]["input_ids"].tolist() == [[0, 1, 2]]  # never less than one row
    assert batch_slices(batch, 100) == [batch] and batch_slices(batch, None) == [batch]


def test_padding_free_batch_slices_cut_between_examples():
    from sftlab.training.trainer import batch_slices

    # Examples of 3, 2, 4, 1 and 5 tokens end to end.
    positions = [0, 1, 2, 0, 1, 0, 1, 2, 3, 0, 0, 1, 2, 3, 4]
    batch = {"input_ids": torch.arange(15)[None], "position_ids": torch.tensor([positions])}
    parts = batch_slices(batch, 6)
    assert [p["input_ids"][0].tolist() for p in parts] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]
    assert [p["position_ids"][0].tolist() for p in parts] == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0], [0, 1, 2, 3, 4]]
    # An example longer than the limit is never split: it is a part of its own.
    assert [p["input_ids"].shape[1] for p in batch_slices(batch, 4)] == [3, 2, 4, 1, 5]
    assert batch_slices(batch, 15) == [batch]


def test_the_first_loss_after_a_resume_says_how_many_steps_it_averages(tmp_path):
    from types import SimpleNamespace

    from sftlab.training.trainer import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 10, "loss": 1.5}\n{"step": 20, "loss": 1.0}\n')
    metrics = MetricsLog(path)
    state = SimpleNamespace(is_world_process_zero=True, global_step=15, epoch=1.5)
    metrics.on_train_begin(None, state, None)  # resumed from checkpoint-15: the record of step 20 is gone
    assert [r["step"] for r in metrics.records] == [1, 10]
    state.global_step = 20
    metrics.on_log(None, state, None, logs={"loss": 1.1})
    state.global_step = 30
    metrics.on_log(None, state, None, logs={"loss": 0.9})
    assert metrics.records[2:] == [{"step": 20, "epoch": 1.5, "loss": 1.1, "loss_steps": 5},
                                   {"step": 30, "epoch": 1.5, "loss": 0.9}]

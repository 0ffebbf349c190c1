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


def test_piped_progress_prints_a_line_at_least_every_30_seconds(capsys):
    """Piped (not a terminal), with steps slowed to 25 s of wall time each and logging every 10 steps: between the
    logged lines a heartbeat line comes whenever 30 s have passed since the last line."""
    from types import SimpleNamespace

    from sftlab.training.trainer import Progress

    now = [1000.0]
    progress = Progress(terminal=False, every=30.0, clock=lambda: now[0])
    state = SimpleNamespace(is_local_process_zero=True, global_step=0, max_steps=20)
    progress.on_train_begin(None, state, None)
    printed_at = []
    for step in range(1, 21):
        now[0] += 25.0  # a slow step
        state.global_step = step
        if step in (1, 10, 20):  # the Trainer's logging steps (first, every 10, last)
            progress.on_log(None, state, None, logs={"loss": 2.5 - step / 10, "tokens_per_second": 40.0,
                                                     "learning_rate": 1e-4})
        before = capsys.readouterr().err
        progress.on_step_end(None, state, None)
        after = capsys.readouterr().err
        if before:
            printed_at.append(now[0])
        if after:
            printed_at.append(now[0])
            if step == 3:  # 50 s after the line of step 1: the last loss, its step, the rate and the time left
                assert after == "step 3/20  loss 2.4000 (step 1)  40 trained tok/s  7 min 05 s left\n"
    gaps = [b - a for a, b in zip([1000.0, *printed_at], printed_at)]
    assert max(gaps) <= 50.0  # never more than 30 s plus one step without a line
    # 3 logged lines (steps 1, 10, 20) and heartbeats at steps 3, 5, 7, 9, 12, 14, 16, 18
    assert len(printed_at) == 11


def test_only_the_main_process_prints_heartbeat_lines(capsys):
    from types import SimpleNamespace

    from sftlab.training.trainer import Progress

    now = [0.0]
    progress = Progress(terminal=False, every=30.0, clock=lambda: now[0])
    state = SimpleNamespace(is_local_process_zero=False, global_step=0, max_steps=5)  # not the main process
    progress.on_train_begin(None, state, None)
    for step in range(1, 6):
        now[0] += 100.0
        state.global_step = step
        progress.on_step_end(None, state, None)
    assert capsys.readouterr().err == ""


def test_a_run_whose_every_step_has_learning_rate_zero_says_so(caplog):
    """`max_steps: 1` with the default warmup (3 % of 1 step, rounded up to 1): transformers' linear warmup gives
    step 0 the learning rate 0 × lr, so the one step changes nothing. Two steps: the second trains."""
    from types import SimpleNamespace

    from transformers import get_scheduler

    from sftlab.training.trainer import ZeroLearningRate

    def warned(max_steps: int, warmup: int) -> list[str]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
        scheduler = get_scheduler("linear", optimizer, num_warmup_steps=warmup, num_training_steps=max_steps)
        state = SimpleNamespace(is_world_process_zero=True, global_step=0, max_steps=max_steps)
        args = SimpleNamespace(get_warmup_steps=lambda n: warmup)
        caplog.clear()
        with caplog.at_level("WARNING", logger="sftlab"):
            ZeroLearningRate().on_train_begin(args, state, None, lr_scheduler=scheduler)
        return [r.getMessage() for r in caplog.records]

    assert warned(1, 1) == ["every optimizer step of this run has learning rate 0 (steps 1 to 1 of 1, with a warmup "
                            "of 1 steps): the model will not change; lower warmup_ratio or train more steps"]
    assert warned(2, 1) == []
    assert warned(1, 0) == []


def test_metrics_jsonl_is_read_back_split_on_newlines_only(tmp_path):
    """A resumed run reads its metrics.jsonl as JSONL: a U+2028 inside a string (which str.splitlines splits on)
    is no line break; the records are written back line-safe and NaN-free."""
    from types import SimpleNamespace

    from sftlab.training.trainer import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0, "note": "a\u2028b"}\n{"step": 2, "loss": NaN}\n', encoding="utf-8")
    metrics = MetricsLog(path)
    metrics.on_train_begin(None, SimpleNamespace(is_world_process_zero=True, global_step=2, epoch=1.0), None)
    assert path.read_text(encoding="utf-8") == ('{"step": 1, "loss": 2.0, "note": "a\\u2028b"}\n'
                                                '{"step": 2, "loss": null}\n')

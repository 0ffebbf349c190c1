"""sftlab.train.trainer: the callbacks' bookkeeping, on literal records (no training)."""


def test_the_first_loss_after_a_resume_says_how_many_steps_it_averages(tmp_path):
    from types import SimpleNamespace

    from sftlab.train.trainer import MetricsLog

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

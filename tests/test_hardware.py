"""precision: auto decides bf16 by a measured check on CPU (cached), not by a CPU flag."""

import datetime
import json

import pytest

from sftlab.machine import hardware
from sftlab.errors import SftlabError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTLAB_HOME", str(tmp_path))
    return tmp_path


def _fake_measure(monkeypatch, speedup):
    calls = []

    def measure(**_):
        calls.append(1)
        return speedup

    monkeypatch.setattr(hardware, "measure_cpu_bf16_speedup", measure)
    return calls


@pytest.mark.parametrize("speedup, chosen", [(0.53, False), (2.1, True)])
def test_auto_picks_bf16_only_where_it_measures_faster(home, monkeypatch, speedup, chosen):
    monkeypatch.setattr(hardware, "bf16_native", lambda device: True)
    calls = _fake_measure(monkeypatch, speedup)
    assert hardware.use_bf16("auto", "cpu") is chosen
    assert hardware.use_bf16("auto", "cpu") is chosen
    assert len(calls) == 1  # clear of the threshold: measured once, then read from the cache
    cached = json.loads((home / "precision.json").read_text())
    assert [v["bf16_speedup"] for v in cached.values()] == [speedup]


def test_no_native_bf16_means_fp32_without_measuring(home, monkeypatch):
    monkeypatch.setattr(hardware, "bf16_native", lambda device: False)
    calls = _fake_measure(monkeypatch, 9.0)
    assert hardware.use_bf16("auto", "cpu") is False and not calls


def test_explicit_precision_is_obeyed(home, monkeypatch):
    calls = _fake_measure(monkeypatch, 9.0)
    assert hardware.use_bf16("fp32", "cpu") is False and hardware.use_bf16("bf16", "cpu") is True and not calls
    with pytest.raises(SftlabError, match="mps"):
        hardware.use_bf16("bf16", "mps")


def test_the_measurement_runs_and_gives_a_ratio():
    speedup = hardware.measure_cpu_bf16_speedup(tokens=64, hidden=64, inner=128, repeats=1)
    assert 0 < speedup < 1000


# --- a figure near the threshold is measured again; every decision says why ---------------------------------

@pytest.fixture
def native(monkeypatch):
    monkeypatch.setattr(hardware, "bf16_native", lambda device: True)


def _key():
    return hardware._machine_key()


def _poison(home, **entry):
    (home / "precision.json").write_text(json.dumps({_key(): entry}))


def _measures(monkeypatch, figures):
    """The measurement returns `figures` in turn; the list of calls made is returned."""
    calls = []

    def measure(**_):
        calls.append(1)
        return figures[len(calls) - 1]

    monkeypatch.setattr(hardware, "measure_cpu_bf16_speedup", measure)
    return calls


def test_a_poisoned_slow_figure_is_measured_again_and_replaced(home, native, monkeypatch):
    # A busy machine once measured 0.975× (the cache of before: no count, no date) where bf16 runs 2.4× faster.
    _poison(home, bf16_speedup=0.975)
    calls = _measures(monkeypatch, [2.4])
    choice = hardware.choose_precision("auto", "cpu")
    assert choice.bf16 is True and len(calls) == 1  # out of the band after one measurement: no more
    assert choice.note == ("precision: bf16 autocast — measured 2.40× faster than fp32 on this CPU (measured now, "
                           f"cached in {home}/precision.json, best of 2 measurements; --set precision=fp32 to override)")
    today = datetime.date.today().isoformat()
    assert json.loads((home / "precision.json").read_text()) == {
        _key(): {"bf16_speedup": 2.4, "measurements": 2, "measured": today}}
    assert hardware.choose_precision("auto", "cpu").bf16 is True and len(calls) == 1  # now trusted


def test_a_figure_near_the_threshold_is_measured_until_it_rests_on_enough(home, native, monkeypatch):
    calls = _measures(monkeypatch, [0.97, 1.05, 1.02, 0.99, 1.1, 1.0, 9.0])
    first = hardware.choose_precision("auto", "cpu")
    assert len(calls) == 3  # three rounds in a row, the best kept
    assert first.bf16 is False and first.note.endswith("best of 3 measurements; measured again on the next run)")
    second = hardware.choose_precision("auto", "cpu")
    assert len(calls) == 6 and second.bf16 is False
    assert second.note == (
        "precision: fp32 — bf16 autocast measured 1.10× the speed of fp32 on this CPU, under the 1.15× it must reach "
        f"(measured now, cached in {home}/precision.json, best of 6 measurements; re-measure: sftlab doctor --remeasure)")
    hardware.choose_precision("auto", "cpu")
    assert len(calls) == 6  # settled: six measurements, never the seventh (9.0)


def test_a_clear_cached_figure_is_trusted_without_measuring(home, native, monkeypatch):
    calls = _measures(monkeypatch, [])
    _poison(home, bf16_speedup=3.0, measurements=1, measured="2026-01-02")
    assert hardware.choose_precision("auto", "cpu").note == (
        f"precision: bf16 autocast — measured 3.00× faster than fp32 on this CPU (cached in {home}/precision.json, "
        "2026-01-02; --set precision=fp32 to override)")
    _poison(home, bf16_speedup=0.5, measurements=1, measured="2026-01-02")
    assert hardware.choose_precision("auto", "cpu").note == (
        "precision: fp32 — bf16 autocast measured 0.50× the speed of fp32 on this CPU, under the 1.15× it must reach "
        f"(cached in {home}/precision.json, 2026-01-02; re-measure: sftlab doctor --remeasure)")
    assert not calls


def test_remeasure_replaces_the_figure_with_the_best_of_three_new_ones(home, native, monkeypatch):
    _poison(home, bf16_speedup=3.0, measurements=6, measured="2026-01-02")
    calls = _measures(monkeypatch, [1.1, 1.3, 1.2])
    figure = hardware.cpu_bf16_figure(remeasure=True)
    assert (figure.speedup, figure.measurements, len(calls)) == (1.3, 3, 3)
    assert json.loads((home / "precision.json").read_text())[_key()]["bf16_speedup"] == 1.3


@pytest.mark.parametrize("entry", ["fast", {"bf16_speedup": "fast"}, {"bf16_speedup": -1}, {"bf16_speedup": True}])
def test_a_damaged_cache_entry_is_measured_again(home, native, monkeypatch, entry):
    (home / "precision.json").write_text(json.dumps({_key(): entry}))
    calls = _measures(monkeypatch, [2.0])
    assert hardware.use_bf16("auto", "cpu") is True and len(calls) == 1


def test_the_notes_of_set_precisions_and_of_cpus_without_bf16(home, monkeypatch):
    calls = _measures(monkeypatch, [])
    assert hardware.choose_precision("fp32", "cpu").note == "precision: fp32 (set in the config)"
    monkeypatch.setattr(hardware, "bf16_native", lambda device: device == "cuda")
    assert hardware.choose_precision("auto", "cpu") == hardware.Precision(
        False, "precision: fp32 — this CPU has no native bf16 (avx512_bf16 or AMX), so bf16 would be emulated and "
               "far slower")
    assert hardware.choose_precision("bf16", "cpu").note.startswith(
        "precision: bf16 autocast (set in the config), although this CPU has no native bf16")
    assert hardware.choose_precision("auto", "cuda") == hardware.Precision(
        True, "precision: bf16 autocast — this GPU computes bf16 natively (--set precision=fp32 to override)")
    assert not calls


# --- a long check says how far it is ------------------------------------------------------------------------------

def slow_clock_phase(monkeypatch, module):
    """`module`'s Phase with a clock that moves one second each time it is read: every step is slow."""
    import functools

    from sftlab import progress

    now = [0.0]

    def clock():
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(module, "Phase", functools.partial(progress.Phase, clock=clock))


def test_a_long_precision_check_says_how_far_it_is(home, native, monkeypatch, caplog):
    import logging

    def measure(on_pair):
        for _ in range(hardware.PAIRS + 1):
            on_pair()
        return 1.0  # in the noise band: all three rounds run

    monkeypatch.setattr(hardware, "measure_cpu_bf16_speedup", measure)
    slow_clock_phase(monkeypatch, hardware)
    with caplog.at_level(logging.INFO, logger="sftlab"):
        hardware.cpu_bf16_figure()
    assert [r.getMessage() for r in caplog.records] == [
        "precision check (fp32 against bf16 autocast): 3/18 timed step pairs, 15 s left",
        "precision check (fp32 against bf16 autocast): 18 timed step pairs done in 19 s",
    ]


def test_a_settled_first_figure_ends_the_check_and_its_phase(home, native, monkeypatch, caplog):
    import logging

    def measure(on_pair):
        for _ in range(hardware.PAIRS + 1):
            on_pair()
        return 2.4  # clear of the band: one round

    monkeypatch.setattr(hardware, "measure_cpu_bf16_speedup", measure)
    slow_clock_phase(monkeypatch, hardware)
    with caplog.at_level(logging.INFO, logger="sftlab"):
        hardware.cpu_bf16_figure()
    assert [r.getMessage() for r in caplog.records][-1] == (
        "precision check (fp32 against bf16 autocast): 6 timed step pairs done in 7 s")


def test_the_measurement_reports_each_pair_of_steps():
    pairs = []
    hardware.measure_cpu_bf16_speedup(tokens=8, hidden=8, inner=8, repeats=2, on_pair=lambda: pairs.append(1))
    assert len(pairs) == 3  # the warm-up pair and the two timed ones

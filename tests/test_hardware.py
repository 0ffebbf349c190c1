"""precision: auto decides bf16 by a measured check on CPU (cached), not by a CPU flag."""

import json

import pytest

from sftlab import hardware
from sftlab.errors import SftlabError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTLAB_HOME", str(tmp_path))
    return tmp_path


def _fake_measure(monkeypatch, speedup):
    calls = []

    def measure():
        calls.append(1)
        return speedup

    monkeypatch.setattr(hardware, "measure_cpu_bf16_speedup", measure)
    return calls


@pytest.mark.parametrize("speedup, chosen", [(0.53, False), (1.05, False), (2.1, True)])
def test_auto_picks_bf16_only_where_it_measures_faster(home, monkeypatch, speedup, chosen):
    monkeypatch.setattr(hardware, "bf16_native", lambda device: True)
    calls = _fake_measure(monkeypatch, speedup)
    assert hardware.use_bf16("auto", "cpu") is chosen
    assert hardware.use_bf16("auto", "cpu") is chosen
    assert len(calls) == 1  # measured once, then read from the cache
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

"""sftlab doctor: the machine's facts and the precision decision, measurements replaced by known figures."""

import json
import re
from pathlib import Path

import pytest
import torch

from sftlab.machine import doctor, hardware


def test_cpu_flags_are_the_ones_that_matter_in_a_fixed_order():
    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse amx_tile avx512_bf16 avx2 avx512f avx512vl\n"
    assert doctor.cpu_flags(cpuinfo) == ["avx2", "avx512f", "avx512_bf16", "amx_tile"]
    assert doctor.cpu_flags("model name\t: a CPU\n") == []


@pytest.mark.parametrize("flags, capability, kind", [
    (["avx2", "avx512f", "avx512_bf16"], "AVX512", "native bf16 (avx512_bf16)"),
    (["avx2", "avx512f", "amx_bf16", "amx_tile"], "AVX512", "native bf16 (amx_bf16)"),
    (["avx2"], "AVX2", "AVX2 only, bf16 emulated (no avx512_bf16 or AMX)"),
    (["avx2", "avx512f"], "AVX512", "AVX2 only, bf16 emulated (no avx512_bf16 or AMX)"),
    # The same AMD EPYC with torch held to AVX2 (ATEN_CPU_CAPABILITY=avx2): it runs as an AVX2-only CPU does.
    (["avx2", "avx512f", "avx512_bf16"], "AVX2", "AVX2 only, bf16 emulated (torch limited to AVX2)"),
    ([], "DEFAULT", "no AVX2 (no avx512_bf16 or AMX)"),
])
def test_the_kind_of_cpu_from_its_flags(flags, capability, kind):
    got = doctor.cpu_kind(flags, capability)
    assert got.name == kind
    assert ("bf16 autocast" in got.speed) == kind.startswith("native")
    assert ("training runs in fp32" in got.speed) == (not kind.startswith("native"))


def test_the_doctor_says_the_kind_and_what_it_means(machine, cli, monkeypatch):
    monkeypatch.setattr(doctor, "cpu_flags", lambda: ["avx2"])
    monkeypatch.setattr(doctor, "bf16_native", lambda device: False)
    monkeypatch.setattr(hardware, "bf16_native", lambda device: False)
    lines = _lines(cli("doctor").stdout)
    assert lines["cpu flags"] == "avx2"
    assert lines["cpu kind"] == "AVX2 only, bf16 emulated (no avx512_bf16 or AMX)"
    assert lines["what it means"] == doctor.cpu_kind(["avx2"]).speed
    assert lines["bf16 matmul (cpu)"] == "not measured (no native bf16)"


def test_the_matmul_rate_is_a_rate():
    assert doctor.matmul_gflops(torch.float32, n=64, repeats=1) > 0


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A CPU with native bf16 whose measurements give known figures; SFTLAB_HOME in tmp_path."""
    monkeypatch.setenv("SFTLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(doctor, "pick_device", lambda: "cpu")
    monkeypatch.setattr(doctor, "bf16_native", lambda device: True)
    monkeypatch.setattr(hardware, "bf16_native", lambda device: True)
    rates = {torch.float32: 100.0, torch.bfloat16: 250.0}
    monkeypatch.setattr(doctor, "matmul_gflops", lambda dtype, device="cpu", n=1024: rates[dtype])
    figures = []
    monkeypatch.setattr(hardware, "measure_cpu_bf16_speedup", lambda **_: figures.pop(0))
    return figures


def _lines(stdout):
    """{what: value} of the report's lines ("what" padded to one width, then two spaces, then the value)."""
    return dict(re.split(r"\s{2,}", line, maxsplit=1) for line in stdout.splitlines())


def test_doctor_reports_the_machine_and_the_precision_with_its_figure(machine, cli, tmp_path):
    machine += [2.4]
    result = cli("doctor")
    assert result.returncode == 0
    lines = _lines(result.stdout)
    reported = set(" ".join(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split())
    expected = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in reported]
    assert lines["cpu flags"] == (" ".join(expected) or "none of avx2, avx512f, avx512_bf16, amx_bf16, amx_tile")
    assert lines["fp32 matmul (cpu)"] == "100 GFLOP/s" and lines["bf16 matmul (cpu)"] == "250 GFLOP/s"
    assert lines["threads"].startswith(f"{torch.get_num_threads()} torch threads")
    assert lines["precision (auto)"] == (
        f"bf16 autocast — measured 2.40× faster than fp32 on this CPU (measured now, cached in "
        f"{tmp_path}/home/precision.json; --set precision=fp32 to override)")
    assert lines["SFTLAB_HOME"].startswith(f"{tmp_path / 'home'} (")
    assert not machine  # the one figure was used


def test_doctor_remeasure_replaces_the_cached_figure(machine, cli, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "precision.json").write_text(json.dumps({hardware._machine_key(): {"bf16_speedup": 3.0, "measurements": 6}}))
    machine += [1.05, 1.1, 1.0]
    lines = _lines(cli("doctor", "--remeasure").stdout)
    assert lines["precision (auto)"] == (
        "fp32 — bf16 autocast measured 1.10× the speed of fp32 on this CPU, under the 1.15× it must reach (measured now, "
        f"cached in {home}/precision.json, best of 3 measurements; measured again on the next run)")
    cached = json.loads((home / "precision.json").read_text())[hardware._machine_key()]
    assert (cached["bf16_speedup"], cached["measurements"]) == (1.1, 3)

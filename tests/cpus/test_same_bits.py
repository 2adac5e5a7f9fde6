"""The portable default trains the same bits on every x86-64 CPU, whatever its vendor and level.

tests/cpus/workload.py trains every kernel the recipes use for a few steps, natively and under
qemu-user's emulated Intel Haswell and AMD EPYC-Rome (AVX2 only: another level than an AVX-512
machine, and at least one of them another vendor than any machine), at 1 and at 2 threads; each
CPU must give the same weights file and the same evaluation, bit for bit. Slow (about 8 minutes
on 2 cores: qemu runs the venv's Python 60 to 120 times slower): `make test-cpus`, which .ci/run calls,
and not part of `make test`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT, tool_env
from tests.cpus.workload import CASES, first_difference

EMULATED = {"Haswell": "GenuineIntel", "EPYC-Rome-v1": "AuthenticAMD"}  # qemu's -cpu, and the vendor it reports
THREADS = (1, 2)
QEMU_HINT = "`make qemu` puts qemu-user >= 8 in the venv (tests/cpus/get_qemu.sh)"


def qemu() -> str:
    found = shutil.which("qemu-x86_64", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert found, f"no qemu-x86_64: {QEMU_HINT}"
    return found


def workload(cpu: str | None, threads: int, folder: Path, *extra: str) -> tuple[list[dict], Path]:
    """Run the workload on `cpu` (None: this machine's own); returns its lines and its trace."""
    trace = folder / f"{cpu or 'native'}-{threads}.jsonl"
    command = [sys.executable, "-m", "tests.cpus.workload", "--threads", str(threads), "--trace", str(trace), *extra]
    if cpu:
        command = [qemu(), "-cpu", cpu, *command]
    # without this process's kernel pins: it pins its own, as a stage does
    result = subprocess.run(command, cwd=ROOT, env=tool_env(), capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"{cpu or 'native'}, {threads} thread(s):\n{result.stderr[-3000:]}"
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")], trace


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, int], tuple[list[dict], Path]]:
    """Every (CPU, threads) run, two at a time (qemu runs each guest thread on a host thread)."""
    folder = tmp_path_factory.mktemp("cpus")
    configs = [(cpu, threads) for cpu in ("native", *EMULATED) for threads in THREADS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda c: workload(None if c[0] == "native" else c[0], c[1], folder), configs)
        return dict(zip(configs, results))


def test_the_emulated_cpus_are_the_vendors_asked_for_at_the_portable_level(runs):
    for (cpu, threads), (lines, _) in runs.items():
        header = lines[0]
        assert header["torch_kernels"] == "AVX2" and header["env.kernels"] == "portable"
        assert header["machine_specific"] is False
        if cpu != "native":
            assert header["vendor"] == EMULATED[cpu], header


@pytest.mark.parametrize("threads", THREADS)
def test_every_cpu_trains_and_scores_every_case_to_the_same_bits(runs, threads):
    native, native_trace = runs[("native", threads)]
    assert [line["case"] for line in native[1:]] == list(CASES)
    for cpu in EMULATED:
        emulated, emulated_trace = runs[(cpu, threads)]
        for here, there in zip(native[1:], emulated[1:], strict=True):
            assert here == there, (f"{cpu} ({emulated[0]['model']}) against {native[0]['model']}, {threads} "
                                   f"thread(s): first op that differs: {first_difference(native_trace, emulated_trace)}")


def test_the_comparison_sees_a_change_in_the_order_of_sums(runs):
    # 1 and 2 threads split sums differently: the hashes must tell them apart, or they prove nothing
    one, two = runs[("native", 1)][0][1:], runs[("native", 2)][0][1:]
    assert any(a["weights"] != b["weights"] for a, b in zip(one, two))


def test_a_cpu_without_avx2_is_told_machine_specific(tmp_path):
    # SandyBridge has AVX but no AVX2: torch falls back to its generic kernels, which are not the portable ones
    lines, _ = workload("SandyBridge", 1, tmp_path, "--cases")
    assert lines[0]["torch_kernels"] == "DEFAULT" and lines[0]["machine_specific"] is True

"""The portable default trains the same bits on every x86-64 CPU, whatever its vendor and level.

tests/cpus/workload.py trains every kernel the recipes use for a few steps, natively and under
qemu-user's emulated Intel Haswell and AMD EPYC-Rome (AVX2 only: another level than an AVX-512
machine, and at least one of them another vendor than any machine), at 1 and at 2 threads; each
CPU must give the same weights file and the same evaluation, bit for bit. Where one differs, that
case is run again with every op traced, natively and on that CPU, to name the first op that parts.
Slow (about 5 minutes on 2 cores: qemu runs the venv's Python 60 to 1,000 times slower):
`make test-cpus`, which .ci/run calls, and not part of `make test` (pyproject's norecursedirs).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT, tool_env
from tests.cpus.workload import CASES, first_difference

EMULATED = {"Haswell": "GenuineIntel", "EPYC-Rome-v1": "AuthenticAMD"}  # qemu's -cpu, and the vendor it reports
THREADS = (1, 2)
QEMU_HINT = "`make qemu` puts qemu-user >= 8 in the venv (tests/cpus/get_qemu.sh)"
# A hang detector, not a budget: an emulated run of every case takes 1 to 3 minutes on a core to itself.
HANG = 1800


def qemu() -> str:
    found = shutil.which("qemu-x86_64", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert found, f"no qemu-x86_64: {QEMU_HINT}"
    return found


def workload(cpu: str | None, threads: int, *extra: str) -> list[dict]:
    """Run the workload on `cpu` (None: this machine's own); returns its lines."""
    command = [sys.executable, "-m", "tests.cpus.workload", "--threads", str(threads), *extra]
    if cpu:
        command = [qemu(), "-cpu", cpu, *command]
    # without this process's kernel pins: it pins its own, as a stage does
    result = subprocess.run(command, cwd=ROOT, env=tool_env(), capture_output=True, text=True, timeout=HANG)
    assert result.returncode == 0, f"{cpu or 'native'}, {threads} thread(s):\n{result.stderr[-3000:]}"
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def parting_op(case: str, folder: Path, *runs: tuple[str | None, int]) -> str:
    """Run `case` again as each of the two `runs` (CPU, threads) did, every op traced; where their
    traces first part."""
    traces = [folder / f"{cpu or 'native'}-{threads}-{case}.jsonl" for cpu, threads in runs]
    for (cpu, threads), trace in zip(runs, traces):
        workload(cpu, threads, "--cases", case, "--trace", str(trace))
    return first_difference(*traces)


class Cores:
    """Threads handed out from a fixed number of cores: an emulated run that shares its core with
    another runs at half speed or worse, so no run starts until the cores it needs are free."""

    def __init__(self, count: int):
        self.count, self.free = count, count
        self.changed = threading.Condition()

    @contextlib.contextmanager
    def take(self, threads: int):
        threads = min(threads, self.count)
        with self.changed:
            self.changed.wait_for(lambda: self.free >= threads)
            self.free -= threads
        try:
            yield
        finally:
            with self.changed:
                self.free += threads
                self.changed.notify_all()


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, int], list[dict]]:
    """Every (CPU, threads) run, the emulated 2-thread ones first, as many at once as the cores hold."""
    configs = [(cpu, threads) for threads in sorted(THREADS, reverse=True) for cpu in (*EMULATED, "native")]
    cores = Cores(max(len(os.sched_getaffinity(0)), 1))

    def run(config: tuple[str, int]) -> list[dict]:
        cpu, threads = config
        with cores.take(threads):
            return workload(None if cpu == "native" else cpu, threads)

    with ThreadPoolExecutor(max_workers=len(configs)) as pool:
        return dict(zip(configs, pool.map(run, configs)))


def test_the_emulated_cpus_are_the_vendors_asked_for_at_the_portable_level(runs):
    for (cpu, threads), lines in runs.items():
        header = lines[0]
        assert header["torch_kernels"] == "AVX2" and header["env.kernels"] == "portable"
        assert header["machine_specific"] is False
        if cpu != "native":
            assert header["vendor"] == EMULATED[cpu], header


@pytest.mark.parametrize("threads", THREADS)
def test_every_cpu_trains_and_scores_every_case_to_the_same_bits(runs, threads, tmp_path):
    native = runs[("native", threads)]
    assert [line["case"] for line in native[1:]] == list(CASES)
    for cpu in EMULATED:
        emulated = runs[(cpu, threads)]
        for here, there in zip(native[1:], emulated[1:], strict=True):
            if here != there:
                pytest.fail(f"{cpu} ({emulated[0]['model']}) against {native[0]['model']}, {threads} thread(s), "
                            f"case {here['case']}: {here} against {there}; first op that differs: "
                            f"{parting_op(here['case'], tmp_path, (None, threads), (cpu, threads))}")


def test_the_comparison_sees_a_change_in_the_order_of_sums_and_names_the_op(runs, tmp_path):
    # 1 and 2 threads split sums differently: the hashes must tell them apart, or they prove nothing,
    # and the trace that explains a difference must find the op where it starts
    one, two = runs[("native", 1)][1:], runs[("native", 2)][1:]
    parted = [a["case"] for a, b in zip(one, two) if a["weights"] != b["weights"]]
    assert parted, "1 and 2 threads trained the same weights in every case"
    where = parting_op(parted[0], tmp_path, (None, 1), (None, 2))
    assert where.startswith(f"case {parted[0]}, op ") and "aten." in where, where


def test_a_cpu_without_avx2_is_told_machine_specific():
    # SandyBridge has AVX but no AVX2: torch falls back to its generic kernels, which are not the portable ones
    lines = workload("SandyBridge", 1, "--cases")
    assert lines[0]["torch_kernels"] == "DEFAULT" and lines[0]["machine_specific"] is True

"""Which code the CPU libraries under torch run: the same on every x86-64 CPU, or this machine's fastest.

Three libraries pick their code by the CPU they find, so the same commit trains other weights on
another machine: torch's own vector kernels (ATen: elementwise ops, pooling, batch norm, the fused
optimisers, resampling), oneDNN (convolutions, forward and backward) and MKL (matrix products, and
the random numbers of dropout). `portable`, the default (`train.kernels`), caps all three at AVX2
with FMA, which every x86-64 CPU of the last decade has, Intel or AMD; MKL's compatible mode is the
one whose matrix products agree across the two vendors. `native` lets each pick the fastest code
for this machine: its runs are machine-specific. A fourth, MKL's vector maths (where torch sends
sqrt, exp, sin, cos... of float tensors), follows none of these settings (its sqrt differed between
two CPUs under every MKL_CBWR), so the training code keeps away from it (mnistcnn.training.engine).

The libraries read these variables once, at their first use in a process: `select()` must run
before any tensor work, and checks, where it can, that it did. A variable the user set is kept,
in either mode, and recorded (`tags()`). On a CPU without AVX2 and FMA (Intel's before 2013, AMD's
before 2015, or another architecture) there is no portable code to pin: torch's generic kernels run, and the
run is machine-specific.
"""

from __future__ import annotations

import os
import platform
import sys

from mnistcnn.params.fields import KERNEL_MODES as MODES

PORTABLE = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's vector kernels: default, avx2 or avx512
    "ONEDNN_MAX_CPU_ISA": "AVX2",   # oneDNN's convolutions
    "MKL_CBWR": "COMPATIBLE",       # MKL's conditional numerical reproducibility: one code path for all CPUs
    "MKL_DYNAMIC": "FALSE",         # MKL uses the threads it is given, never fewer by its own count
}
OURS = "MNISTCNN_KERNEL_PINS"  # which of them this project set (not the user), inherited by child processes
_RANK = {"DEFAULT": 0, "AVX2": 1, "AVX512": 2}  # torch's vector kernels, lowest first

_selected: str | None = None  # the mode this process selected


class TooLate(RuntimeError):
    """torch chose its kernels before select() could pin them."""


def _ours() -> set[str]:
    return set(os.environ.get(OURS, "").split())


def select(mode: str) -> None:
    """Pin (`portable`) or unpin (`native`) the libraries' code paths for this process and its children."""
    global _selected
    if mode not in MODES:
        raise ValueError(f"kernels must be one of {', '.join(MODES)}, not {mode!r}")
    ours = _ours()
    pinnable = PORTABLE if avx2_and_fma() else {}
    if mode == "portable" and not pinnable:
        print(f"kernels: this CPU ({platform.machine()}) has no AVX2 and FMA, so no portable code: "
              "its results are machine-specific", file=sys.stderr)
    for name, value in PORTABLE.items():
        if mode == "portable" and name in pinnable and name not in os.environ:
            os.environ[name] = value
            ours.add(name)
        elif mode == "native" and name in ours:
            os.environ.pop(name, None)
            ours.discard(name)
    os.environ[OURS] = " ".join(sorted(ours))
    _selected = mode
    _check()


def avx2_and_fma() -> bool:
    """Whether this CPU is x86-64 with AVX2 and FMA, as its CPUID says (numpy asks it for its own
    dispatch). ATEN_CPU_CAPABILITY=avx2 makes torch run AVX2 code without asking the CPU: on one
    without, the process would die of an illegal instruction."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    from numpy._core._multiarray_umath import __cpu_features__  # noqa: PLC0415

    return bool(__cpu_features__.get("AVX2") and __cpu_features__.get("FMA3"))


def _check() -> None:
    """Fail where torch chose vector kernels above the pinned level: the pin came too late to apply.

    (Not checkable the other way: a `native` run records the kernels it got, env.cpu_capability.)"""
    import torch  # noqa: PLC0415 (the libraries read the variables at their first use, not at import)

    asked, chosen = os.environ.get("ATEN_CPU_CAPABILITY", "").upper(), torch.backends.cpu.get_cpu_capability()
    if asked in _RANK and chosen in _RANK and _RANK[chosen] > _RANK[asked]:
        raise TooLate(f"torch already runs its {chosen} kernels, not the {asked} ones pinned: "
                      "reproducible.configure() must run before any tensor work in the process")


def portable() -> bool:
    """Whether this process's CPU code is the portable one: every pin at its value, on x86-64 with AVX2."""
    import torch  # noqa: PLC0415

    return (_selected == "portable" and all(os.environ.get(k) == v for k, v in PORTABLE.items())
            and torch.backends.cpu.get_cpu_capability() == "AVX2")


def tags() -> dict[str, str]:
    """The `env.*` tags naming the code paths a run's bits depend on."""
    set_ = {name: os.environ[name] for name in PORTABLE if name in os.environ}
    by_user = sorted(name for name in set_ if name not in _ours())
    return {
        "env.kernels": _selected or "unselected",
        "env.kernel_pins": " ".join(f"{k}={v}" for k, v in sorted(set_.items())) or "none",
        "env.kernel_pins_by_user": " ".join(by_user) or "none",
    }

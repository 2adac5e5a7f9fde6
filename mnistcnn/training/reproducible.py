"""Bitwise-reproducible training: seeds, threads and deterministic kernels, and what a result depends on.

The same params and seed give the same weights on any x86-64 CPU with AVX2 and FMA, Intel
or AMD, with the portable kernels (mnistcnn.training.kernels) and a fixed thread count: CPU kernels
split their sums by thread. They depend on the torch build, and on the device: GPU kernels
split theirs by launch shape. `environment()` names those dependencies so every run records
them, and says whether its bits are machine-specific.
"""

from __future__ import annotations

import ctypes
import os
import platform
import random
import warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from mnistcnn.training import engine, kernels


def configure(threads: int, kernel_mode: str = "portable") -> int:
    """Choose the CPU code paths (`portable` or `native`), fix the thread count and choose
    deterministic kernels; returns the number of threads used.

    `threads` 0 keeps torch's default (the number of cores). Call before any tensor work: the
    CPU libraries fix their code paths, and cuBLAS its workspace, at their first use.
    """
    kernels.select(kernel_mode)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS reductions
    if threads:
        torch.set_num_threads(threads)
    # warn_only: some CUDA kernels (adaptive average pooling's backward) have no deterministic
    # version; they warn rather than stop the run (`nondeterministic_kernels` records which ran).
    # On the CPU every kernel used here is deterministic. The flag is set where the kernels read
    # it: torch.use_deterministic_algorithms also imports the Inductor compiler to set its own
    # flag, 0.8 s of every stage's start-up on 2 cores, and nothing here compiles.
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor's memory with NaN, so that a kernel reading
    # memory it never wrote shows; none here does (the weights are the same either way), and the
    # fill cost 5% of a cnn24k epoch, 2% of quick25k's (alternating epochs in one process).
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False  # benchmarking picks kernels by timing, which varies
    torch.backends.cudnn.deterministic = True
    # Values below ~1e-38 (Adam's second moments of nearly idle weights, for one) take CPUs a
    # slow path: flushing them to zero made cnn9k's one-cycle epoch 4x faster on this project's
    # 2-core machine. Deterministic, and far below anything that moves a weight.
    torch.set_flush_denormal(True)
    reuse_freed_memory()
    return torch.get_num_threads()


# glibc's mallopt parameters, and the values set: activations of a few MB each are allocated and
# freed every step; by default glibc returns each to the kernel (mmap above its threshold) and the
# next one faults its pages in again, about 3,000 faults a step for quick25k, 10% of the step.
_KEEP = {-3: 32 << 20,   # M_MMAP_THRESHOLD: blocks up to 32 MiB (glibc's most) come from the heap
         -1: 1 << 30,    # M_TRIM_THRESHOLD: return the heap's free top only past 1 GiB
         -2: 64 << 20}   # M_TOP_PAD: grow the heap 64 MiB at a time


def reuse_freed_memory() -> bool:
    """Keep freed tensors' memory in the process for the next step (glibc only; speed, never bits);
    whether it applied."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return all(libc.mallopt(option, value) == 1 for option, value in _KEEP.items())


NONDETERMINISTIC = " does not have a deterministic implementation"  # torch's warning, after the op's name


@contextmanager
def nondeterministic_kernels() -> Iterator[set[str]]:
    """Collect the names of the ops that ran without a deterministic kernel inside the block.

    Under `warn_only=True` such an op (adaptive average pooling's backward on CUDA) warns and
    runs; a run that used one cannot claim bitwise reproducibility. Other warnings pass through.
    """
    found: set[str] = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield found
    for warning in caught:
        text = str(warning.message)
        if NONDETERMINISTIC in text:
            found.add(text.split(NONDETERMINISTIC)[0])
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def determinism(ops: set[str]) -> dict[str, str]:
    """The `env.*` tags saying whether a run was deterministic, given the ops that were not."""
    return {"env.deterministic": str(torch.are_deterministic_algorithms_enabled() and not ops).lower(),
            "env.nondeterministic_kernels": ", ".join(sorted(ops)) or "none"}


def seed_everything(seed: int) -> None:
    """Seed every random generator a run could draw from (weights, dropout)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def memory_format() -> str:
    """The layout the engine trains and scores in: kernels, and so the low bits of results, differ by layout."""
    return str(engine.MEMORY_FORMAT).removeprefix("torch.")


def machine_specific(device: torch.device, threads: int) -> bool:
    """Whether a run's bits hold only on machines like this one: on a GPU, with the native or
    user-set kernels, on a CPU without AVX2, or with the thread count left to the core count."""
    return device.type != "cpu" or not kernels.portable() or threads == 0


def environment(device: torch.device, threads: int) -> dict[str, str]:
    """What a result depends on beyond params and data, as `env.*` tags (`threads`: the param)."""
    return {
        "env.machine_specific": str(machine_specific(device, threads)).lower(),
        **kernels.tags(),
        "env.torch": torch.__version__,
        "env.python": platform.python_version(),
        "env.device": str(device),
        "env.device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else engine.cpu_name(),
        "env.cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the SIMD kernels torch picked
        "env.threads": str(torch.get_num_threads()),
        "env.memory_format": memory_format(),
        **determinism(set()),  # until training shows otherwise
        "env.platform": platform.platform(),
        "env.libc": " ".join(platform.libc_ver()) or "unknown",  # the scalar maths of the schedules
    }

"""A few steps of every kernel the recipes use, trained and scored as the train and evaluate stages do.

Run as `python -m tests.cpus.workload --threads N [--cases ...] [--trace FILE]`, natively or under
`qemu-x86_64 -cpu MODEL`. Prints one JSON line naming the CPU it ran on, then one per case: the
SHA-256 of the weights file the train stage would write, and the evaluation's loss, accuracy and
predictions. `--trace` also writes every op's output hashes, in order, so that two CPUs that
part can be compared op by op (`first_difference`). Hashing every op in Python costs more than the
training itself (natively, a run of every case took 7.8 s with it, 4.7 s without), so the trace is
asked for only where two runs already differ.

Each case trains two full batches and a short last one, and evaluates as many images in batches of
the same size: BATCH, not the recipe's. Under emulation an image costs a thousand times what it
costs natively, and oneDNN runs the same implementations at 8 as at 64, 128 and 1000 on the
engine's channels-last tensors (brg_conv_fwd:avx2, brg_conv_bwd:avx2 and jit:avx2 convolutions,
its jit reorders; ONEDNN_VERBOSE=1 over the four models, forward, backward and scoring), with
sums still split by thread: 1 and 2 threads give other weights (in every case, on the 2-core
Intel Xeon where this was chosen). Batch norm's channels-last form (mnistcnn.model.layers) runs
in every case with a norm whose channels are not a multiple of 16, torch's kernel in the others.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import mmap
import tempfile
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from mnistcnn.data import mnist
from mnistcnn.model import models
from mnistcnn.model import weights as weights_file
from mnistcnn.outputs import save_torch, sha256_file
from mnistcnn.params import config, recipes
from mnistcnn.training import engine, kernels, reproducible
from tests.conftest import ROOT, synthetic_split

# name -> (recipe, changes): each recipe as it is, plus what the recipes can be set to use but do
# not yet: rotation, AdamW with weight decay, SGD. Together: every model's layers, all three
# optimisers, both schedules, label smoothing, both augmentations and both dropouts.
CASES = {
    "quick25k": ("quick25k", {}),
    "tiny10k+rotate": ("tiny10k", {"augment": {"rotate": 15.0, "translate": 0.1}}),
    "cnn24k-reference": ("cnn24k-reference", {}),
    "cnn9k-reference+adamw": ("cnn9k-reference", {"optimizer": "adamw", "weight_decay": 0.01}),
    "quick25k+sgd": ("quick25k", {"optimizer": "sgd", "lr": 0.05}),
}
BATCH = 8  # training's and evaluation's batch size
IMAGES = 2 * BATCH + BATCH // 2  # two full batches and a short last one, as an epoch of 55,000 ends
UNINITIALISED = ("empty", "empty_like", "new_empty", "empty_strided")  # ops whose output is not data


def train_params(recipe: str, changes: dict, threads: int):
    """params.yaml's train section with the recipe and `changes` laid over it: one epoch on the CPU.
    (Run from the repository's root, where recipes/ is.)"""
    section = config.merge(recipes.train_section(recipe, ROOT / "params.yaml"), changes)
    return config.parse_train({**section, "epochs": 1, "batch_size": BATCH, "device": "cpu", "threads": threads,
                               "kernels": "portable"})


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


class Trace(TorchDispatchMode):
    """Writes each op's name and the hashes of its outputs, one JSON line an op."""

    def __init__(self, handle):
        super().__init__()
        self.handle = handle

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        hashes = [None if name in UNINITIALISED else digest(t) for t in outputs]
        self.handle.write(json.dumps([str(func), hashes]) + "\n")
        return out


def run_case(name: str, threads: int, trace) -> dict:
    """Train and evaluate one case, tracing its ops to `trace` (a file, or None); returns what
    must be the same on every CPU."""
    recipe, changes = CASES[name]
    train = train_params(recipe, changes, threads)
    images, labels = synthetic_split(IMAGES, seed=1)
    test_images, test_labels = synthetic_split(IMAGES, seed=2)
    reproducible.seed_everything(train.seed)
    model = models.build(train.architecture, train.dropout)
    if trace:
        trace.write(json.dumps(["case", name]) + "\n")
    with Trace(trace) if trace else contextlib.nullcontext():  # hashing every op costs, under qemu most
        engine.fit(model, train, mnist.normalize(images), labels.long(), on_epoch=lambda row, seconds: None)
        result = engine.evaluate(model, mnist.normalize(test_images), test_labels.long(), BATCH)
    with tempfile.TemporaryDirectory() as tmp:
        save_torch(weights_file.state(model), Path(tmp, "model.pt"))  # as the train stage writes it
        weights = sha256_file(Path(tmp, "model.pt"))
    return {"case": name, "weights": weights, "loss": result.loss.hex(), "accuracy": result.accuracy,
            "predictions": digest(result.predictions)}


def cpuid(leaf: int) -> tuple[int, int, int, int]:
    """The processor's own answer to CPUID `leaf` (eax, ebx, ecx, edx): under qemu, the emulated one's
    (qemu's /proc/cpuinfo is the host's)."""
    code = bytes([0x53, 0x89, 0xF8, 0x31, 0xC9, 0x0F, 0xA2,  # push rbx; mov eax, edi; xor ecx, ecx; cpuid
                  0x89, 0x06, 0x89, 0x5E, 0x04, 0x89, 0x4E, 0x08, 0x89, 0x56, 0x0C,  # store eax ebx ecx edx at rsi
                  0x5B, 0xC3])  # pop rbx; ret
    memory = mmap.mmap(-1, len(code), prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    memory.write(code)
    registers = (ctypes.c_uint32 * 4)()
    function = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_void_p)(
        ctypes.addressof(ctypes.c_char.from_buffer(memory)))
    function(leaf, ctypes.addressof(registers))
    return tuple(registers)


def processor(threads: int) -> dict:
    """The vendor and model the CPU reports, and the vector kernels torch chose on it."""
    def text(*words: int) -> str:
        return b"".join(w.to_bytes(4, "little") for w in words).decode(errors="replace").strip("\0 ")

    _, ebx, ecx, edx = cpuid(0)
    brand = "".join(text(*cpuid(leaf)) for leaf in (0x80000002, 0x80000003, 0x80000004))
    return {"vendor": text(ebx, edx, ecx), "model": brand.strip(), "torch_kernels": torch.backends.cpu.get_cpu_capability(),
            "machine_specific": reproducible.machine_specific(torch.device("cpu"), threads),
            **kernels.tags()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES), help="none: the CPU only")
    parser.add_argument("--trace", type=Path, help="write every op's output hashes here")
    args = parser.parse_args()
    reproducible.configure(args.threads, "portable")  # as the stages do, before any tensor work
    print(json.dumps(processor(args.threads)), flush=True)
    with open(args.trace, "w") if args.trace else contextlib.nullcontext() as trace:
        for name in args.cases:
            print(json.dumps(run_case(name, args.threads, trace)), flush=True)


def first_difference(trace_a: Path, trace_b: Path) -> str:
    """Where two traces first part: the case, the op's position in it and its name."""
    case, position = None, 0
    for line_a, line_b in zip(trace_a.read_text().splitlines(), trace_b.read_text().splitlines()):
        a, b = json.loads(line_a), json.loads(line_b)
        if a[0] == "case":
            case, position = a[1], 0
            continue
        position += 1
        if a != b:
            return f"case {case}, op {position}: {a[0]} (outputs {a[1]} against {b[1]})"
    return "no op differs"


if __name__ == "__main__":
    main()

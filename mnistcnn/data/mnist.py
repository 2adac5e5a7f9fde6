"""MNIST files: verify their content, decode them once, and read the decoded tensors.

The .gz wrappers of the same data differ between mirrors, so files are verified
by the SHA-256 of their decompressed content. Decoding reuses torchvision's IDX
reader; what it lacks (checksums, clear errors, one compact file) lives here.
"""

from __future__ import annotations

import hashlib
import tempfile
import zlib
from pathlib import Path

import torch

from mnistcnn.outputs import DataError, missing_output, verify_sha256
from mnistcnn.params.config import ParamsError

# The statistics of the MNIST training images, as the reference scripts used them.
MEAN, STD = 0.1307, 0.3081
IMAGE_SIZE = 28
MAX_FILE_BYTES = 64 << 20  # 64 MiB: each MNIST file is under 48 MB, compressed or not
SPLITS = ("train", "test")


def decompress(gz_bytes: bytes, name: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The content of a gzip file, at most `limit` bytes of it (a small file can inflate a
    thousandfold); a DataError naming `name` if it is not gzip or inflates past the limit."""
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing, one member
    try:
        content = inflate.decompress(gz_bytes, limit + 1)
        if len(content) > limit:
            raise DataError(f"{name}: inflates to more than {limit:,} bytes: refused")
        if not inflate.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")
    except (EOFError, zlib.error) as err:
        raise DataError(f"{name}: not a valid gzip file ({err})") from None
    return content


def content_sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def decode_idx(content: bytes, kind: str, name: str) -> torch.Tensor:
    """Decode decompressed IDX bytes: `kind` is "images" (N, 28, 28) uint8 or "labels" (N,) int64."""
    # Imported here: only the download stage decodes, and torchvision costs the stages that
    # merely read the decoded tensors over a second of start-up.
    from torchvision.datasets.mnist import read_image_file, read_label_file  # noqa: PLC0415

    reader = read_image_file if kind == "images" else read_label_file
    with tempfile.TemporaryDirectory() as tmp:  # torchvision's reader takes a path
        path = Path(tmp) / "idx"
        path.write_bytes(content)
        try:
            tensor = reader(str(path))
        except (AssertionError, KeyError, TypeError, ValueError, RuntimeError) as err:
            raise DataError(f"{name}: not a valid IDX {kind} file ({err or type(err).__name__})") from None
    if kind == "images" and tuple(tensor.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{name}: images are {tuple(tensor.shape[1:])}, expected 28x28")
    return tensor  # torchvision copies the bytes it reads, so the file may go


def assemble(decoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Check that images and labels agree, keyed e.g. `train_images`, `train_labels`."""
    for split in SPLITS:
        images, labels = decoded[f"{split}_images"], decoded[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataError(f"{split}: {len(images)} images but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise DataError(f"{split}: labels outside 0-9")
    return decoded


def split_files(dataset: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The decoded tensors, one mapping per split (written to a file each: train reads only its own)."""
    return {split: {f"{split}_{kind}": dataset[f"{split}_{kind}"] for kind in ("images", "labels")}
            for split in SPLITS}


def load_split(path: str | Path, split: str, provenance: dict, provenance_path: str | Path) -> dict[str, torch.Tensor]:
    """Read one split's decoded tensors (`train_images`, `train_labels`), written by the download stage,
    once their bytes are checked against the SHA-256 the provenance records; no code is unpickled."""
    path = Path(path)
    if not path.exists():
        raise missing_output(path, produced_by="download")
    verify_sha256(path, provenance.get(f"{split}_sha256"), str(provenance_path), produced_by="download")
    try:
        tensors = torch.load(path, weights_only=True)
    except Exception as err:  # torch raises several types for a damaged archive
        raise DataError(f"{path}: cannot be read as decoded {split} data ({err})") from None
    missing = [f"{split}_{k}" for k in ("images", "labels") if f"{split}_{k}" not in tensors]
    if missing:
        raise DataError(f"{path}: missing entries {missing}; rerun the download stage")
    return tensors


def validation_split(labels: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out) indices, each ascending: `size` images held out, stratified by digit.

    Each digit gives its share of `size` (largest remainders settle the rounding), drawn by a
    generator of its own seed: the held-out set's classes are the training set's proportions,
    and the split never depends on train.seed, so runs with other seeds are scored on the same images.
    """
    if not 0 <= size < len(labels):
        raise ParamsError(f"train.validation.size = {size}: must be below the {len(labels):,} training images")
    counts = torch.bincount(labels, minlength=10).tolist()
    exact = [size * c / len(labels) for c in counts]
    shares = [int(e) for e in exact]
    for digit in sorted(range(10), key=lambda d: exact[d] - shares[d], reverse=True)[:size - sum(shares)]:
        shares[digit] += 1
    generator = torch.Generator().manual_seed(seed)
    held = []
    for digit, share in enumerate(shares):
        members = (labels == digit).nonzero().flatten()
        held.append(members[torch.randperm(len(members), generator=generator)[:share]])
    held_out = torch.cat(held).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held_out] = False
    return keep.nonzero().flatten(), held_out


def train_and_validation(data: dict, validation, device) -> tuple[tuple, tuple | None]:
    """(images, labels) to train on and the held-out (images, labels), or None when none is held out;
    `validation` is params.yaml's train.validation. The train stage and the search split alike."""
    kept, held_out = validation_split(data["train_labels"], validation.size, validation.seed)
    images, labels = normalize(data["train_images"]), data["train_labels"]
    fit = images[kept].to(device), labels[kept].to(device)
    return fit, (images[held_out].to(device), labels[held_out].to(device)) if len(held_out) else None


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), standardised like the reference scripts."""
    return ((images.float() / 255 - MEAN) / STD).unsqueeze(1)

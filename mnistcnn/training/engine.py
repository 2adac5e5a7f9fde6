"""The training engine: whole-dataset tensors in memory, batches drawn by index.

No per-image Python and no DataLoader: the dataset is one tensor (on the GPU
when there is one), an epoch is one seeded permutation, and running sums stay
on the device so no step waits on a `.item()`.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from mnistcnn.model.models import NUM_CLASSES
from mnistcnn.params.config import ParamsError
from mnistcnn.training.optim import make_optimizer, make_scheduler

if TYPE_CHECKING:
    from mnistcnn.params.schema import TrainParams

VALIDATION_BATCH = 1000  # images a forward pass while scoring: speed and memory only, never the result
MEMORY_FORMAT = torch.channels_last  # models train and score in it: faster here (docs/speed.md, model.layers)


@dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    predictions: torch.Tensor  # (N,) int64, the predicted class of each example
    confusion: torch.Tensor  # (NUM_CLASSES, NUM_CLASSES) int64, rows = true class, columns = predicted


def pick_device(requested: str) -> torch.device:
    """The device to train on: `auto` takes CUDA, then Apple MPS, then the CPU; ParamsError for a
    device this machine lacks (torch would fail with a traceback after the data loaded)."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if requested == "auto":
        return torch.device(next(device for device, present in available.items() if present))
    if not available.get(requested, True):
        raise ParamsError(f"train.device = {requested!r}: torch finds no {requested.upper()} device on this machine "
                          "(auto takes the best there is; cpu always works)")
    return torch.device(requested)


def cpu_name() -> str:
    """The processor's model name, which results and timings depend on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Index batches covering 0..n-1: shuffled by `generator`, or in order when None."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    yield from order.split(batch_size)


def augment(images: torch.Tensor, generator: torch.Generator, rotate: float, translate: float) -> torch.Tensor:
    """Rotate each image by up to +-`rotate` degrees and shift it by up to +-`translate` of its
    size, all in one batched resampling (the edge pixels, background, fill the margins)."""
    n = len(images)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(rotate)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * translate)  # the grid spans [-1, 1]
    # cos and sin from the C library, one image at a time: torch's go through MKL's vector maths,
    # whose code depends on the CPU (mnistcnn.training.kernels). One angle an image: microseconds a batch.
    cos = torch.tensor([math.cos(a) for a in angle.tolist()])
    sin = torch.tensor([math.sin(a) for a in angle.tolist()])
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,  # (N, 1, 28, 28) float, on the model's device
    labels: torch.Tensor,  # (N,) int64, same device
    batch_size: int,
    generator: torch.Generator,
    on_batch: Callable[[int], None] = lambda n: None,
    *,
    on_step: Callable[[int], None] = lambda batch: None,  # after each step, its number in the epoch (from 1)
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,  # stepped after every batch
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,  # augmentation of a batch
    label_smoothing: float = 0.0,
) -> EpochStats:
    """One pass over the data in a seeded random order; returns mean loss and accuracy."""
    model.train()
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    for batch, index in enumerate(batches(len(labels), batch_size, generator), start=1):
        index = index.to(images.device)
        x, y = images[index], labels[index]
        if transform is not None:
            x = transform(x)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        on_batch(len(y))
        on_step(batch)
    n = len(labels)
    return EpochStats(loss=loss_sum.item() / n, accuracy=correct.item() / n)


def scoring_steps(steps_per_epoch: int, per_epoch: int) -> list[int]:
    """The steps of an epoch (from 1) after which validation scores: evenly spaced, the last at its end."""
    return sorted({math.ceil(steps_per_epoch * j / per_epoch) for j in range(1, per_epoch + 1)})


def fit(model: nn.Module, train: TrainParams, images: torch.Tensor, labels: torch.Tensor,
        on_epoch: Callable[[dict, float], None], validation: tuple[torch.Tensor, torch.Tensor] | None = None,
        on_score: Callable[[dict], None] = lambda row: None) -> list[dict]:
    """Train `model` in place for `train.epochs` epochs as params.yaml's train section says, with a
    progress bar on a terminal; calls `on_epoch(row, seconds)` after each; returns the per-epoch history.

    With `validation` (images, labels), scores the model on it train.validation.per_epoch times an
    epoch and calls `on_score(row)`: {"step", "epoch" (fractional), "loss", "accuracy"}. Scoring
    changes nothing of the training: the same weights come out with it or without it."""
    model.to(memory_format=MEMORY_FORMAT)  # before the optimiser takes the parameters
    optimizer = make_optimizer(train.optimizer, model.parameters(), train.lr, train.weight_decay)
    steps_per_epoch = math.ceil(len(labels) / train.batch_size)
    scheduler = make_scheduler(train.schedule, optimizer, train.epochs * steps_per_epoch, train.warmup)
    generator = torch.Generator().manual_seed(train.seed)  # data order and augmentation: the seed only
    shift = train.augment
    transform = (lambda x: augment(x, generator, shift.rotate, shift.translate)) if shift.active else None
    score_after = set(scoring_steps(steps_per_epoch, train.validation.per_epoch)) if validation else set()
    history = []
    for epoch in range(1, train.epochs + 1):
        start = time.perf_counter()
        with tqdm(total=len(labels), desc=f"epoch {epoch}/{train.epochs}", unit="img", disable=None,
                  file=sys.stderr, leave=False) as bar:

            def score(batch: int) -> None:
                if batch in score_after:
                    result = evaluate(model, *validation, batch_size=VALIDATION_BATCH)
                    model.train()
                    step = (epoch - 1) * steps_per_epoch + batch
                    on_score({"step": step, "epoch": step / steps_per_epoch, "loss": result.loss,
                              "accuracy": result.accuracy})
                    bar.set_postfix_str(f"val accuracy {result.accuracy:.4f}")

            stats = train_epoch(model, optimizer, images, labels, train.batch_size, generator, bar.update,
                                on_step=score, scheduler=scheduler, transform=transform,
                                label_smoothing=train.label_smoothing)
        row = {"epoch": epoch, "step": epoch * steps_per_epoch, "loss": stats.loss, "accuracy": stats.accuracy}
        history.append(row)  # no timings here: the history is a reproducible DVC output
        on_epoch(row, time.perf_counter() - start)
    return history


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Evaluation:
    """Mean loss, accuracy, predictions and confusion matrix of `model` on the given tensors
    (`model` is put in the engine's memory format)."""
    model.to(memory_format=MEMORY_FORMAT).eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=images.device)
    predictions = torch.empty_like(labels)
    for index in batches(len(labels), batch_size, generator=None):
        index = index.to(images.device)
        logits = model(images[index])
        loss_sum += F.cross_entropy(logits, labels[index], reduction="sum").double()
        predictions[index] = logits.argmax(1)
    labels, predictions = labels.cpu(), predictions.cpu()
    confusion = torch.bincount(labels * NUM_CLASSES + predictions, minlength=NUM_CLASSES**2)
    confusion = confusion.view(NUM_CLASSES, NUM_CLASSES)
    n = len(labels)
    return Evaluation(loss=loss_sum.item() / n, accuracy=confusion.trace().item() / n,
                      predictions=predictions, confusion=confusion)


def per_class_accuracy(confusion: torch.Tensor) -> list[float | None]:
    """Recall of each true class; None where a class has no examples."""
    totals = confusion.sum(1).tolist()
    return [int(hit) / total if total else None for hit, total in zip(confusion.diag().tolist(), totals)]

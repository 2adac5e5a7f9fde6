"""The model registry: compact CNNs for 28x28 single-channel digits.

Pure `nn.Module`s: no I/O, no device calls. cnn24k and cnn9k reproduce the two
reference networks exactly; quick25k and tiny10k are this project's own, designed
to beat them within the same budgets. Each entry names its default dropout (for
the references, the value they used), which `train.dropout: null` selects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

NUM_CLASSES = 10


def _conv_bn_relu_bn(c_in: int, c_out: int) -> list[nn.Module]:
    """The reference 24k block: batch norm on both sides of the activation."""
    return [nn.Conv2d(c_in, c_out, 3), nn.BatchNorm2d(c_out), nn.ReLU(), nn.BatchNorm2d(c_out)]


def cnn24k(dropout: float) -> nn.Sequential:
    """The 24,394-parameter reference network (no padding: 28 -> 26 -> 24 -> 12 -> 10)."""
    return nn.Sequential(
        *_conv_bn_relu_bn(1, 16),  # (B, 16, 26, 26)
        *_conv_bn_relu_bn(16, 32),  # (B, 32, 24, 24)
        nn.MaxPool2d(2),  # (B, 32, 12, 12)
        nn.Dropout(dropout),
        *_conv_bn_relu_bn(32, 64),  # (B, 64, 10, 10)
        nn.AdaptiveAvgPool2d(1),  # (B, 64, 1, 1)
        nn.Flatten(),  # (B, 64)
        nn.Dropout(dropout),
        nn.Linear(64, NUM_CLASSES),
    )


def _conv_bn_relu_pool(c_in: int, c_out: int) -> list[nn.Module]:
    """The reference 9k block: a same-size conv, then halve the resolution."""
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]


def cnn9k(dropout: float) -> nn.Sequential:
    """The 8,890-parameter reference network (28 -> 14 -> 7 -> 3)."""
    return nn.Sequential(
        *_conv_bn_relu_pool(1, 8),  # (B, 8, 14, 14)
        *_conv_bn_relu_pool(8, 16),  # (B, 16, 7, 7)
        *_conv_bn_relu_pool(16, 32),  # (B, 32, 3, 3)
        nn.Dropout2d(dropout),
        nn.Flatten(),  # (B, 288)
        nn.Linear(32 * 3 * 3, NUM_CLASSES),
    )


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    """A same-size conv without bias (the batch norm after it has one), then BatchNorm -> ReLU."""
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def quick25k(dropout: float) -> nn.Sequential:
    """22,350 parameters, built to train in one epoch: halve the resolution early so most
    of the arithmetic runs at 14x14 and 7x7 (1.4M multiply-adds per image, cnn24k's third)."""
    return nn.Sequential(
        *_conv_bn_relu(1, 12),  # (B, 12, 28, 28)
        nn.MaxPool2d(2),  # (B, 12, 14, 14)
        *_conv_bn_relu(12, 24),  # (B, 24, 14, 14)
        nn.MaxPool2d(2),  # (B, 24, 7, 7)
        *_conv_bn_relu(24, 40),  # (B, 40, 7, 7)
        *_conv_bn_relu(40, 24),  # (B, 24, 7, 7)
        nn.MaxPool2d(2),  # (B, 24, 3, 3)
        nn.Dropout(dropout),
        nn.Flatten(),  # (B, 216)
        nn.Linear(24 * 3 * 3, NUM_CLASSES),
    )


def tiny10k(dropout: float) -> nn.Sequential:
    """9,610 parameters: five narrow convs, two poolings, and a global average pool in
    place of a large linear layer, so the parameters go to features, not the head."""
    return nn.Sequential(
        *_conv_bn_relu(1, 8),  # (B, 8, 28, 28)
        nn.MaxPool2d(2),  # (B, 8, 14, 14)
        *_conv_bn_relu(8, 16),  # (B, 16, 14, 14)
        *_conv_bn_relu(16, 16),  # (B, 16, 14, 14)
        nn.MaxPool2d(2),  # (B, 16, 7, 7)
        *_conv_bn_relu(16, 20),  # (B, 20, 7, 7)
        *_conv_bn_relu(20, 16),  # (B, 16, 7, 7)
        nn.AdaptiveAvgPool2d(1),  # (B, 16, 1, 1)
        nn.Flatten(),  # (B, 16)
        nn.Dropout(dropout),
        nn.Linear(16, NUM_CLASSES),
    )


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[float], nn.Module]
    reference_dropout: float


REGISTRY: dict[str, ModelSpec] = {
    "cnn24k": ModelSpec(cnn24k, reference_dropout=0.1),
    "cnn9k": ModelSpec(cnn9k, reference_dropout=0.2),
    "quick25k": ModelSpec(quick25k, reference_dropout=0.0),
    "tiny10k": ModelSpec(tiny10k, reference_dropout=0.0),
}


def resolve_dropout(name: str, dropout: float | None) -> float:
    """The dropout to build with: the configured one, else the reference's."""
    return REGISTRY[name].reference_dropout if dropout is None else dropout


def build(name: str, dropout: float | None = None) -> nn.Module:
    """Build a registered model by name; `dropout=None` uses its reference value."""
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name].build(resolve_dropout(name, dropout))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, the figure the budgets are stated in."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

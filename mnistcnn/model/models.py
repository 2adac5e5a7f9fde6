"""The models: a declared architecture (mnistcnn.model.arch) built as an nn.Module.

Pure `nn.Module`s: no I/O, no device calls. One flat nn.Sequential per architecture,
module by module as arch.plan lists them, so its state dict's keys and its seeded
initial weights follow from the declaration alone. cnn24k and cnn9k reproduce the
two reference networks exactly; quick25k and tiny10k are this project's own, designed
to beat them within the same budgets.
"""

from __future__ import annotations

from torch import nn

from mnistcnn.model.arch import NAMED, NUM_CLASSES, Arch, Layer, plan
from mnistcnn.model.layers import BatchNorm2d

__all__ = ["NAMED", "NUM_CLASSES", "build", "build_named", "count_parameters", "rate"]


def _module(layer: Layer, dropout: float) -> nn.Module:
    """The torch module of one planned layer."""
    if layer.kind == "conv":
        return nn.Conv2d(layer.c_in, layer.c_out, layer.kernel, padding=layer.padding, bias=layer.bias)
    modules = {
        "bn": lambda: BatchNorm2d(layer.c_out),  # nn.BatchNorm2d, trained faster (mnistcnn.model.layers)
        "relu": nn.ReLU,
        "maxpool": lambda: nn.MaxPool2d(2),
        "avgpool": lambda: nn.AvgPool2d(2),
        "globalavg": lambda: nn.AdaptiveAvgPool2d(1),
        "dropout": lambda: nn.Dropout(dropout),
        "dropout2d": lambda: nn.Dropout2d(dropout),
        "flatten": nn.Flatten,
        "linear": lambda: nn.Linear(layer.c_in, layer.c_out),
    }
    return modules[layer.kind]()


def rate(arch: Arch, dropout: float | None) -> float:
    """The dropout to build with: the configured one (train.dropout), else the architecture's."""
    return arch.dropout if dropout is None else dropout


def build(arch: Arch, dropout: float | None = None) -> nn.Sequential:
    """The module `arch` declares; `dropout=None` gives its dropout layers the architecture's rate."""
    return nn.Sequential(*(_module(layer, rate(arch, dropout)) for layer in plan(arch)))


def build_named(name: str, dropout: float | None = None) -> nn.Sequential:
    """A named model (arch.NAMED: quick25k, tiny10k, cnn24k, cnn9k)."""
    if name not in NAMED:
        raise KeyError(f"unknown model {name!r}; named: {', '.join(NAMED)}")
    return build(NAMED[name], dropout)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, the figure the budgets are stated in."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""The optimisers and learning-rate schedules params.yaml may name, built by name.

The names are mnistcnn.params.fields' (`train.optimizer`, `train.schedule`), so params are
checked without torch; each is built here, and tests/test_params.py fails while a name
allowed there has no builder here, or a builder has no name there.

Adam and AdamW are fused: one kernel of torch's own per step. The unfused ones take the square
root through MKL's vector maths, whose code (and last bits) differ between CPUs whatever it is
told (mnistcnn.training.kernels). Fused is faster too: 0.14 against 0.43 ms a step for quick25k on 2 cores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch


def _adam(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    from torch.optim import Adam  # here: the schema reads this module without torch
    return Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


def _adamw(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    from torch.optim import AdamW
    return AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


def _sgd(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    from torch.optim import SGD
    return SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)


def _constant(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float) -> None:
    return None  # the optimiser's own rate throughout


def _onecycle(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float):
    """Warm up to the optimiser's rate over the first `warmup` fraction of the steps, then anneal
    to almost zero by the last step."""
    from torch.optim.lr_scheduler import OneCycleLR
    max_lr = optimizer.param_groups[0]["lr"]
    return OneCycleLR(optimizer, max_lr, total_steps=total_steps, pct_start=warmup)


OPTIMIZERS: dict[str, Callable] = {"adam": _adam, "adamw": _adamw, "sgd": _sgd}  # (params, lr, weight_decay)
SCHEDULES: dict[str, Callable] = {"constant": _constant, "onecycle": _onecycle}  # (optimizer, steps, warmup)


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimiser params.yaml names (`train.optimizer`, one of OPTIMIZERS)."""
    return OPTIMIZERS[name](params, lr, weight_decay)


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, total_steps: int, warmup: float):
    """The learning-rate schedule params.yaml names (`train.schedule`, one of SCHEDULES); None: constant."""
    return SCHEDULES[name](optimizer, total_steps, warmup)

"""The training every result comes from: the train stage's and each trial of the search.

Seed, build, fit, in this order and nowhere else, so a search's winner trains again as
the train stage bit for bit (its recipe through `make exp` reproduces its validation curve).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from mnistcnn.model import models
from mnistcnn.params.schema import TrainParams
from mnistcnn.training import engine, reproducible


def train_model(train: TrainParams, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                on_epoch: Callable[[dict, float], None], validation: tuple | None = None,
                on_score: Callable[[dict], None] = lambda row: None) -> tuple[nn.Module, list[dict]]:
    """The model `train` declares, seeded by train.seed, built on `device` and fitted (engine.fit's
    callbacks and scoring); returns it with its per-epoch history."""
    reproducible.seed_everything(train.seed)
    model = models.build(train.architecture, train.dropout).to(device)
    return model, engine.fit(model, train, images, labels, on_epoch, validation, on_score)

"""Model weights on disk: a state dict, read back into the architecture its card declares.

Loading uses `weights_only=True`, so a weights file can hold tensors and nothing
that runs code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import ValidationError

from mnistcnn.model import models
from mnistcnn.model.arch import Arch
from mnistcnn.outputs import DataError, missing_output, verify_sha256


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a weights file holds: the state dict on the CPU, each tensor copied to NCHW strides, so that
    its bytes do not depend on the memory format the model trained in (engine.MEMORY_FORMAT). (Not
    `.contiguous()`: a (12, 1, 3, 3) channels-last tensor is contiguous too, and torch.save keeps strides.)"""
    return {key: value.cpu().clone(memory_format=torch.contiguous_format) for key, value in model.state_dict().items()}


def card_arch(card: dict, card_path: str | Path = "the model card") -> Arch:
    """The architecture a model card declares; a DataError naming the card if it cannot be built."""
    try:
        return Arch.model_validate(card["arch"])
    except KeyError:
        reason = "no `arch`"
    except ValidationError as err:
        first = err.errors()[0]
        reason = ".".join(["arch", *map(str, first["loc"])]) + f": {first['msg']}"
    raise DataError(f"{card_path}: does not declare a buildable architecture ({reason}); rerun the train stage")


def load_model(card: dict, weights_path: str | Path, card_path: str | Path = "the model card") -> torch.nn.Module:
    """Rebuild the architecture the card declares and load its weights (no code is unpickled), once
    their bytes are checked against the SHA-256 the card records."""
    model = models.build(card_arch(card, card_path), card["dropout"])
    if not Path(weights_path).exists():
        raise missing_output(weights_path, produced_by="train")
    verify_sha256(weights_path, card.get("weights_sha256"), str(card_path), produced_by="train")
    try:
        state = torch.load(weights_path, weights_only=True, map_location="cpu")
        model.load_state_dict(state)
    except FileNotFoundError:
        raise missing_output(weights_path, produced_by="train") from None
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise DataError(f"{weights_path}: does not hold {card['model']} weights ({err})") from None
    return model

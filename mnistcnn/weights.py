"""Model weights on disk: a state dict, read back into the architecture its card names.

Loading uses `weights_only=True`, so a weights file can hold tensors and nothing
that runs code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mnistcnn import models
from mnistcnn.outputs import DataError, missing_output


def load_model(card: dict, weights_path: str | Path) -> torch.nn.Module:
    """Rebuild the architecture the card names and load its weights (no code is unpickled)."""
    model = models.build(card["model"], card["dropout"])
    try:
        state = torch.load(weights_path, weights_only=True, map_location="cpu")
        model.load_state_dict(state)
    except FileNotFoundError:
        raise missing_output(weights_path, produced_by="train") from None
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise DataError(f"{weights_path}: does not hold {card['model']} weights ({err})") from None
    return model

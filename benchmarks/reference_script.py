"""The plain, untracked way, end to end: what the reference scripts did, as one script.

torchvision's MNIST from the raw files, ToTensor + Normalize per image, a shuffling
DataLoader, Adam, one epoch with a `.item()` per step, then the test set scored;
no DVC, no MLflow, nothing written. `python -m benchmarks.reference_script RAW_DIR
[MODEL LR BATCH]`; prints the test accuracy. The end-to-end benchmark times it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision import datasets

from benchmarks.loops import torchvision_mnist
from mnistcnn.model import models


def main(raw: Path, model_name: str = "cnn24k", lr: float = 1e-3, batch_size: int = 64) -> float:
    torch.manual_seed(0)
    with torchvision_mnist(raw) as (root, transform):
        train = DataLoader(datasets.MNIST(root, train=True, transform=transform), batch_size=batch_size, shuffle=True)
        test = DataLoader(datasets.MNIST(root, train=False, transform=transform), batch_size=1000)
        model = models.build_named(model_name)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for images, labels in train:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            loss.item()  # the reference logged the running loss every step
        model.eval()
        with torch.no_grad():
            correct = sum((model(images).argmax(1) == labels).sum().item() for images, labels in test)
    return correct / len(test.dataset)


if __name__ == "__main__":
    raw, *rest = sys.argv[1:]
    name, lr, batch = (rest + ["cnn24k", "1e-3", "64"][len(rest):])[:3]
    print(f"test accuracy {main(Path(raw), name, float(lr), int(batch)):.4f}")

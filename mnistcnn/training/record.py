"""A model's record: what it is (architecture, counts) and what made it (params and data digests).

One function, `record`, builds it for every reader: the train stage's model card, run
params and tags; evaluate's run for a model this store never saw trained; promote's
registry version; each trial of the search. Equal records, equal models to compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mnistcnn.model import arch, models
from mnistcnn.params import config
from mnistcnn.params.schema import TrainParams
from mnistcnn.training import replicates


@dataclass(frozen=True)
class Record:
    model: str  # train.model: a named architecture, or `declared`
    arch: dict  # the architecture that trains, declared in full
    dropout: float  # the rate its dropout layers train at
    params: int  # trainable parameters
    macs: int  # multiply-adds per image
    arch_digest: str
    params_digest: str  # of the whole train section
    group: str  # of the train section without its seed: the group of replicates
    dataset_digest: str

    def card(self) -> dict[str, Any]:
        """The model card's fields (the train stage adds the weights' SHA-256)."""
        return {"model": self.model, "arch": self.arch, "dropout": self.dropout, "params": self.params,
                "macs": self.macs, "dataset_digest": self.dataset_digest}

    def run_params(self, train: TrainParams) -> dict[str, Any]:
        """A training run's params: the train section, the architecture in full, the counts."""
        return {**config.as_dict(train), "arch": self.arch, "dropout": self.dropout, "param_count": self.params,
                "macs": self.macs}

    def tags(self) -> dict[str, str]:
        """What runs and registry versions are found and compared by."""
        return {"model": self.model, "arch.digest": self.arch_digest, "params.digest": self.params_digest,
                replicates.GROUP_TAG: self.group, "dataset.digest": self.dataset_digest}


def record(train: TrainParams, dataset_digest: str) -> Record:
    """The record of the model `train` declares, trained on the dataset of this digest."""
    declared = train.architecture
    return Record(model=train.model, arch=declared.model_dump(), dropout=models.rate(declared, train.dropout),
                  params=arch.count_parameters(declared), macs=arch.count_macs(declared),
                  arch_digest=config.digest(declared), params_digest=config.digest(train),
                  group=replicates.group_key(train), dataset_digest=dataset_digest)

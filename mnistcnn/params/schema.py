"""The parameter schema: every section of params.yaml declared as a pydantic model.

Unknown keys are refused, so a typo never passes for a change; what each value may be
is mnistcnn.params.fields. It imports no torch, so params are checked (and a declared
model counted, `make budget`) in well under a second.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from mnistcnn.model.arch import DECLARED, NAMED, Arch, resolve
from mnistcnn.params.fields import (DEVICES, KERNEL_MODES, MAX_REPLICATES, OPTIMIZERS, SCHEDULES, Alias, FileName,
                                    FilePath, ModelName, Positive, Section, Text, choice, integer, number, overlapping)
from mnistcnn.params.search_section import (HeartbeatParams, PrunerParams, RaceParams,  # noqa: F401 (re-exported)
                                            SearchParams)

MODELS = (*NAMED, DECLARED)


class DataFile(Section):
    name: FileName  # on a mirror and in paths.raw, e.g. train-images-idx3-ubyte.gz
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$", description="64 hexadecimal digits")]


class DataFiles(Section):
    train_images: DataFile
    train_labels: DataFile
    test_images: DataFile
    test_labels: DataFile

    def items(self):
        """(key, DataFile) pairs, e.g. ("train_images", ...), in this order."""
        return dict(self).items()


class DownloadParams(Section):
    mirrors: Annotated[list[Text], Field(min_length=1, description="a non-empty list of URLs or folders")]
    files: DataFiles  # sha256 of each file's decompressed content
    timeout: Positive  # seconds per request


class AugmentParams(Section):
    rotate: number(0, 180)  # up to +- this many degrees, drawn per image
    translate: number(0, 0.5)  # up to +- this fraction of the image size, per image

    @property
    def active(self) -> bool:
        return self.rotate > 0 or self.translate > 0


class ValidationParams(Section):
    """Training images held out to choose on: the test set is for the final score only."""

    size: integer(0)  # images, stratified by digit; 0: none held out (train on all, no validation metrics)
    seed: integer(0)  # which images: apart from train.seed, so every run is scored on the same ones
    per_epoch: integer(1)  # scorings per epoch, evenly spaced, the last at the epoch's end


class TrainParams(Section):
    model: choice(MODELS)  # a named architecture, or `declared`: the one under `arch`
    arch: Arch  # the declared architecture (mnistcnn/model/arch.py), used when model is `declared`
    validation: ValidationParams
    optimizer: choice(OPTIMIZERS)
    lr: Positive  # the peak rate under the onecycle schedule
    schedule: choice(SCHEDULES)
    warmup: number(0, 1, open_low=True)  # onecycle: the fraction of steps spent rising to `lr`
    weight_decay: number(0, 1)
    label_smoothing: number(0, 1)
    augment: AugmentParams
    batch_size: integer(1)
    epochs: integer(1)
    seed: integer(0)
    replicates: integer(1, MAX_REPLICATES)  # runs at seeds seed, seed + 1, ...: their spread is the noise
    dropout: Annotated[float | None, Field(ge=0, lt=1, description="null (the architecture's own rate) "
                                                                   "or a number in [0, 1)")]
    device: choice(DEVICES)
    threads: integer(0)  # CPU threads; 0: the number of cores. Results depend on it, so DVC tracks it.
    kernels: choice(KERNEL_MODES)  # portable: the same bits on every x86-64 CPU; native: this CPU's fastest

    @property
    def architecture(self) -> Arch:
        """What trains: the named model's declaration, or train.arch."""
        return resolve(self.model, self.arch)

    @property
    def seeds(self) -> list[int]:
        """The replicates' seeds; the first is train.seed, whose model the pipeline serves."""
        return list(range(self.seed, self.seed + self.replicates))


class EvaluateParams(Section):
    batch_size: integer(1)


class TrackingParams(Section):
    experiment: Text


class GateParams(Section):
    """Merge thresholds read by `python -m stages.gate`; no pipeline stage depends on them."""

    min_accuracy: number(0, 1, hint="a fraction: 0.95 means 95%")  # test accuracy
    max_params: integer(1)
    max_accuracy_drop: number(0, 100, hint="percentage points")  # of the mean test accuracy below the baseline's
    confidence: number(0.5, 1, hint="0.95: a drop is called real at p < 0.05")  # the replicates' test


class PromoteParams(Section):
    """Where `make promote` registers a model that passed the gate; no pipeline stage depends on it."""

    model_name: ModelName
    alias: Alias

    @property
    def model_uri(self) -> str:
        """The promoted model: what `make serve` serves and `stages.predict` uses by default."""
        return f"models:/{self.model_name}@{self.alias}"


class PathsParams(Section):
    """Every file a stage reads or writes; dvc.yaml names the same ones via ${paths.*}."""

    raw: FilePath
    train_data: FilePath
    test_data: FilePath
    provenance: FilePath
    model: FilePath
    model_card: FilePath
    train_metrics: FilePath
    train_history: FilePath
    val_history: FilePath
    test_metrics: FilePath
    predictions: FilePath
    replicate_models: FilePath  # a folder
    replicate_metrics: FilePath
    gate_report: FilePath

    @model_validator(mode="after")
    def _nothing_inside_a_replaced_folder(self) -> PathsParams:
        """A stage replaces paths.raw (download) and paths.replicate_models (train) whole."""
        overlap = overlapping(dict(self), {"raw": "download", "replicate_models": "train"})
        if overlap:
            raise ValueError(overlap)
        return self


class Params(Section):
    paths: PathsParams
    download: DownloadParams
    train: TrainParams
    evaluate: EvaluateParams
    tracking: TrackingParams
    gate: GateParams
    promote: PromoteParams
    search: SearchParams


"""The parameter schema: every section of params.yaml declared as a pydantic model.

Unknown keys are refused, so a typo never passes for a change; what each value may be
is mnistcnn.params.fields. It imports no torch, so params are checked (and a declared
model counted, `make budget`) in well under a second.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mnistcnn.model.arch import DECLARED, NAMED, Arch, resolve
from mnistcnn.params.fields import (DEVICES, KERNEL_MODES, OPTIMIZERS, PRUNERS, SCHEDULES, Alias, FileName,
                                    FilePath, ModelName, Positive, Text, choice, integer, number)

MODELS = (*NAMED, DECLARED)
MAX_REPLICATES = 32  # seeds a train section runs at: 32 of the default take about 8 minutes on 2 cores


class _Section(BaseModel):
    """A mapping of params.yaml: exactly these keys, values of exactly these types, read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataFile(_Section):
    name: FileName  # on a mirror and in paths.raw, e.g. train-images-idx3-ubyte.gz
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$", description="64 hexadecimal digits")]


class DataFiles(_Section):
    train_images: DataFile
    train_labels: DataFile
    test_images: DataFile
    test_labels: DataFile

    def items(self):
        """(key, DataFile) pairs, e.g. ("train_images", ...), in this order."""
        return dict(self).items()


class DownloadParams(_Section):
    mirrors: Annotated[list[Text], Field(min_length=1, description="a non-empty list of URLs or folders")]
    files: DataFiles  # sha256 of each file's decompressed content
    timeout: Positive  # seconds per request


class AugmentParams(_Section):
    rotate: number(0, 180)  # up to +- this many degrees, drawn per image
    translate: number(0, 0.5)  # up to +- this fraction of the image size, per image

    @property
    def active(self) -> bool:
        return self.rotate > 0 or self.translate > 0


class ValidationParams(_Section):
    """Training images held out to choose on: the test set is for the final score only."""

    size: integer(0)  # images, stratified by digit; 0: none held out (train on all, no validation metrics)
    seed: integer(0)  # which images: apart from train.seed, so every run is scored on the same ones
    per_epoch: integer(1)  # scorings per epoch, evenly spaced, the last at the epoch's end


class TrainParams(_Section):
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


class EvaluateParams(_Section):
    batch_size: integer(1)


class TrackingParams(_Section):
    experiment: Text


class GateParams(_Section):
    """Merge thresholds read by `python -m stages.gate`; no pipeline stage depends on them."""

    min_accuracy: number(0, 1, hint="a fraction: 0.95 means 95%")  # test accuracy
    max_params: integer(1)
    max_accuracy_drop: number(0, 100, hint="percentage points")  # of the mean test accuracy below the baseline's
    confidence: number(0.5, 1, hint="0.95: a drop is called real at p < 0.05")  # the replicates' test


class PromoteParams(_Section):
    """Where `make promote` registers a model that passed the gate; no pipeline stage depends on it."""

    model_name: ModelName
    alias: Alias

    @property
    def model_uri(self) -> str:
        """The promoted model: what `make serve` serves and `stages.predict` uses by default."""
        return f"models:/{self.model_name}@{self.alias}"


class PrunerParams(_Section):
    """What stops a trial early, on its validation accuracy at each scoring (mnistcnn.search.search)."""

    kind: choice(PRUNERS)  # halving: asynchronous successive halving; median: below the median so far
    min_scorings: integer(1)  # scorings a trial runs before it can be stopped (halving: its first rung)
    reduction: integer(2)  # halving: one trial in `reduction` goes on at each rung
    startup_trials: integer(0)  # median: the first trials are never stopped (they set the median)


class HeartbeatParams(_Section):
    """A worker's trial is failed when `missed` heartbeats in a row do not come, and run again."""

    interval: integer(1)  # seconds between a worker's heartbeats
    missed: integer(2)  # heartbeats missed before another worker fails the trial
    retries: integer(0)  # times a failed (killed, interrupted) trial is run again

    @property
    def grace(self) -> int:
        """Seconds of silence before a trial is failed."""
        return self.interval * self.missed


class SearchParams(_Section):
    """`make search` (stages/search.py): an Optuna study over train keys; no stage depends on it."""

    study: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
                                description="a name: letters, digits, '_', '.', '-' (the winner's recipe file)")]
    trials: integer(1)  # a worker's trials, unless --trials says otherwise
    seed: integer(0)  # the sampler's (TPE): a study run by one worker proposes the same trials again
    base: Annotated[str | None, Field(description="null (params.yaml's train section) or a recipe name")]
    epochs: integer(1)  # the epoch budget: every trial trains this many
    max_params: integer(1)  # the parameter budget: a bigger trial is refused before training
    scorings_per_epoch: integer(1)  # validation scorings an epoch, each reported to the pruner
    pruner: PrunerParams
    heartbeat: HeartbeatParams
    # train keys, each a range {low, high} or {choices: [...]}: read by the search (mnistcnn/search/space.py)
    space: Annotated[dict[str, Any], Field(min_length=1, description="a mapping of train keys to ranges "
                                                                     "{low, high} or {choices: [...]}")]


class PathsParams(_Section):
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
    def _nothing_inside_raw(self) -> PathsParams:
        """The download stage replaces paths.raw whole: no other path may lie in it, or contain it."""
        raw = PurePosixPath(self.raw)
        for key, path in dict(self).items():
            path = PurePosixPath(path)
            if key != "raw" and (path == raw or raw in path.parents or path in raw.parents):
                raise ValueError(f"paths.{key} = '{path}' overlaps paths.raw = '{raw}', "
                                 "a folder the download stage replaces whole")
        return self


class Params(_Section):
    paths: PathsParams
    download: DownloadParams
    train: TrainParams
    evaluate: EvaluateParams
    tracking: TrackingParams
    gate: GateParams
    promote: PromoteParams
    search: SearchParams


"""The parameter schema: every section of params.yaml declared as a pydantic model.

Each field's description says what is allowed; mnistcnn.params.config turns a failed
validation into `key = value: must be <description>`. Unknown keys are refused,
so a typo never passes for a change. It imports no torch, so params are checked
(and a declared model counted, `make budget`) in well under a second; the engine's
optimisers and schedules are keyed by the names declared here.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from mnistcnn.model.arch import DECLARED, NAMED, Arch, resolve
from mnistcnn.search.space import Space
from mnistcnn.training import optim
from mnistcnn.training.kernels import MODES as KERNEL_MODES

MODELS = (*NAMED, DECLARED)
OPTIMIZERS = tuple(optim.OPTIMIZERS)  # sgd: momentum 0.9, Nesterov
SCHEDULES = tuple(optim.SCHEDULES)
DEVICES = ("auto", "cpu", "cuda", "mps")
PRUNERS = ("halving", "median", "none")


class _Section(BaseModel):
    """A mapping of params.yaml: exactly these keys, values of exactly these types, read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _choice(names: tuple[str, ...]) -> Any:
    return Annotated[Literal[names], Field(description="one of " + ", ".join(names))]


def _number(low: float, high: float, open_low: bool = False, hint: str = "") -> Any:
    """A finite number in [low, high), or (low, high) with `open_low`; `hint` says what it measures."""
    interval = f"{'(' if open_low else '['}{low}, {high})"
    bound = {"gt": low} if open_low else {"ge": low}
    return Annotated[float, Field(**bound, lt=high, allow_inf_nan=False,
                                  description=f"a number in {interval}" + (f" ({hint})" if hint else ""))]


def _integer(minimum: int) -> Any:
    return Annotated[int, Field(ge=minimum, description=f"an integer >= {minimum}")]


Positive = Annotated[float, Field(gt=0, allow_inf_nan=False, description="a positive number")]
Text = Annotated[str, Field(min_length=1, pattern=r"\S", description="a non-empty string")]


# What a stage must never write into or replace: the repository's own files and folders.
REPOSITORY_NEEDS = (".git", ".dvc", ".ci", ".github", ".venv", "stages", "mnistcnn", "tests", "recipes",
                    "benchmarks", "docs", "mlruns", "params.yaml", "dvc.yaml", "dvc.lock", "Makefile",
                    "README.md", "pyproject.toml", "requirements.txt", "requirements.lock", ".gitignore",
                    ".dvcignore")


def _non_empty_path(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string: a path inside the repository")
    return value


def _inside_repository(path: Path) -> Path:
    """Refuse a path a stage could not write, or replace, without harm to anything outside its outputs."""
    parts = PurePosixPath(path).parts
    if PurePosixPath(path).is_absolute():
        raise ValueError("must be a path inside the repository, relative to it, not an absolute path")
    if not parts:
        raise ValueError("must name a file or folder inside the repository, not the repository itself")
    if ".." in parts:
        raise ValueError("must stay inside the repository: `..` is not allowed")
    if parts[0] in REPOSITORY_NEEDS:
        raise ValueError(f"must not be inside `{parts[0]}`, which the repository needs")
    return path


FilePath = Annotated[Path, BeforeValidator(_non_empty_path), Field(strict=False), AfterValidator(_inside_repository)]


def _file_name(name: str) -> str:
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError("must be a file name, without folders")
    return name


FileName = Annotated[str, Field(min_length=1, description="a file name"), AfterValidator(_file_name)]


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
    rotate: _number(0, 180)  # up to +- this many degrees, drawn per image
    translate: _number(0, 0.5)  # up to +- this fraction of the image size, per image

    @property
    def active(self) -> bool:
        return self.rotate > 0 or self.translate > 0


class ValidationParams(_Section):
    """Training images held out to choose on: the test set is for the final score only."""

    size: _integer(0)  # images, stratified by digit; 0: none held out (train on all, no validation metrics)
    seed: _integer(0)  # which images: apart from train.seed, so every run is scored on the same ones
    per_epoch: _integer(1)  # scorings per epoch, evenly spaced, the last at the epoch's end


class TrainParams(_Section):
    model: _choice(MODELS)  # a named architecture, or `declared`: the one under `arch`
    arch: Arch  # the declared architecture (mnistcnn/model/arch.py), used when model is `declared`
    validation: ValidationParams
    optimizer: _choice(OPTIMIZERS)
    lr: Positive  # the peak rate under the onecycle schedule
    schedule: _choice(SCHEDULES)
    warmup: _number(0, 1, open_low=True)  # onecycle: the fraction of steps spent rising to `lr`
    weight_decay: _number(0, 1)
    label_smoothing: _number(0, 1)
    augment: AugmentParams
    batch_size: _integer(1)
    epochs: _integer(1)
    seed: _integer(0)
    dropout: Annotated[float | None, Field(ge=0, lt=1, description="null (the architecture's own rate) "
                                                                   "or a number in [0, 1)")]
    device: _choice(DEVICES)
    threads: _integer(0)  # CPU threads; 0: the number of cores. Results depend on it, so DVC tracks it.
    kernels: _choice(KERNEL_MODES)  # portable: the same bits on every x86-64 CPU; native: this CPU's fastest

    @property
    def architecture(self) -> Arch:
        """What trains: the named model's declaration, or train.arch."""
        return resolve(self.model, self.arch)


class EvaluateParams(_Section):
    batch_size: _integer(1)


class TrackingParams(_Section):
    experiment: Text


class GateParams(_Section):
    """Merge thresholds read by `python -m stages.gate`; no pipeline stage depends on them."""

    min_accuracy: _number(0, 1, hint="a fraction: 0.95 means 95%")  # test accuracy
    max_params: _integer(1)
    max_accuracy_drop: _number(0, 100, hint="percentage points")  # below the baseline's test accuracy


def _alias(alias: str) -> str:
    """MLflow reserves `latest` and `v<number>` (a version) as aliases."""
    if alias == "latest" or re.fullmatch(r"v\d+", alias):
        raise ValueError(f"'{alias}' is reserved by MLflow: choose another alias")
    return alias


class PromoteParams(_Section):
    """Where `make promote` registers a model that passed the gate; no pipeline stage depends on it."""

    model_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$",
                                     description="a registered model name: letters, digits, '_', '.', '-'")]
    alias: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$",
                                description="an alias: letters, digits, '_', '-', not 'latest' or v<number>"),
                     AfterValidator(_alias)]

    @property
    def model_uri(self) -> str:
        """The promoted model: what `make serve` serves and `stages.predict` uses by default."""
        return f"models:/{self.model_name}@{self.alias}"


class PrunerParams(_Section):
    """What stops a trial early, on its validation accuracy at each scoring (mnistcnn.search.search)."""

    kind: _choice(PRUNERS)  # halving: asynchronous successive halving; median: below the median so far
    min_scorings: _integer(1)  # scorings a trial runs before it can be stopped (halving: its first rung)
    reduction: _integer(2)  # halving: one trial in `reduction` goes on at each rung
    startup_trials: _integer(0)  # median: the first trials are never stopped (they set the median)


class HeartbeatParams(_Section):
    """A worker's trial is failed when `missed` heartbeats in a row do not come, and run again."""

    interval: _integer(1)  # seconds between a worker's heartbeats
    missed: _integer(2)  # heartbeats missed before another worker fails the trial
    retries: _integer(0)  # times a failed (killed, interrupted) trial is run again

    @property
    def grace(self) -> int:
        """Seconds of silence before a trial is failed."""
        return self.interval * self.missed


class SearchParams(_Section):
    """`make search` (stages/search.py): an Optuna study over train keys; no stage depends on it."""

    study: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
                                description="a name: letters, digits, '_', '.', '-' (the winner's recipe file)")]
    trials: _integer(1)  # a worker's trials, unless --trials says otherwise
    seed: _integer(0)  # the sampler's (TPE): a study run by one worker proposes the same trials again
    base: Annotated[str | None, Field(description="null (params.yaml's train section) or a recipe name")]
    epochs: _integer(1)  # the epoch budget: every trial trains this many
    max_params: _integer(1)  # the parameter budget: a bigger trial is refused before training
    scorings_per_epoch: _integer(1)  # validation scorings an epoch, each reported to the pruner
    pruner: PrunerParams
    heartbeat: HeartbeatParams
    space: Space  # mnistcnn/search/space.py: train keys, each a range {low, high} or {choices: [...]}


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


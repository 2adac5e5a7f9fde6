"""Load and validate params.yaml: the one source of every tunable value.

Every stage calls `load()` before doing any work, so a bad value fails at once
with a message naming the key, the value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

MODELS = ("cnn24k", "cnn9k", "quick25k", "tiny10k")  # kept in step with stages.models.REGISTRY by a test
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
DATA_FILES = ("train_images", "train_labels", "test_images", "test_labels")


class ParamsError(ValueError):
    """A value in params.yaml that the project cannot use."""


@dataclass(frozen=True)
class DataFile:
    name: str  # file name on a mirror, e.g. train-images-idx3-ubyte.gz
    sha256: str  # digest of the decompressed content


@dataclass(frozen=True)
class DownloadParams:
    mirrors: tuple[str, ...]
    files: dict[str, DataFile]
    timeout: float


@dataclass(frozen=True)
class AugmentParams:
    rotate: float  # up to +- this many degrees, drawn per image
    translate: float  # up to +- this fraction of the image size, per image

    @property
    def active(self) -> bool:
        return self.rotate > 0 or self.translate > 0


@dataclass(frozen=True)
class TrainParams:
    model: str
    optimizer: str
    lr: float  # the peak rate under the onecycle schedule
    schedule: str
    warmup: float  # onecycle: the fraction of steps spent rising to `lr`
    weight_decay: float
    label_smoothing: float
    augment: AugmentParams
    batch_size: int
    epochs: int
    seed: int
    dropout: float | None  # None: the model's reference value
    device: str
    threads: int  # CPU threads; 0: torch's default. Results depend on it, so DVC tracks it.


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int


@dataclass(frozen=True)
class TrackingParams:
    experiment: str


@dataclass(frozen=True)
class GateParams:
    """Merge thresholds read by `python -m stages.gate`; no pipeline stage depends on them."""

    min_accuracy: float  # test accuracy, a fraction
    max_params: int
    max_accuracy_drop: float  # percentage points below the baseline's test accuracy


@dataclass(frozen=True)
class PathsParams:
    """Every file a stage reads or writes; dvc.yaml names the same ones via ${paths.*}."""

    raw: Path
    dataset: Path
    provenance: Path
    model: Path
    model_card: Path
    train_metrics: Path
    train_history: Path
    test_metrics: Path
    predictions: Path
    gate_report: Path


@dataclass(frozen=True)
class Params:
    paths: PathsParams
    download: DownloadParams
    train: TrainParams
    evaluate: EvaluateParams
    tracking: TrackingParams
    gate: GateParams


class _Section:
    """Typed access to one mapping of params.yaml, with errors that name the key."""

    def __init__(self, raw: Any, path: str):
        if not isinstance(raw, dict):
            raise ParamsError(f"{path}: expected a mapping of keys, got {raw!r}")
        self.raw, self.path = raw, path

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str) -> Any:
        if key not in self.raw:
            raise ParamsError(f"{self._name(key)}: missing")
        return self.raw[key]

    def _fail(self, key: str, allowed: str) -> ParamsError:
        return ParamsError(f"{self._name(key)} = {self.raw[key]!r}: must be {allowed}")

    def section(self, key: str) -> _Section:
        return _Section(self._get(key), self._name(key))

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        if self._get(key) not in allowed:
            raise self._fail(key, "one of " + ", ".join(allowed))
        return self.raw[key]

    def integer(self, key: str, minimum: int) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(key, f"an integer >= {minimum}")
        return value

    def positive(self, key: str) -> float:
        value = self._get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value <= 0:
            raise self._fail(key, "a positive number")
        return float(value)

    def number(self, key: str, low: float, high: float, open_low: bool = False, hint: str = "") -> float:
        """A number in [low, high) (or (low, high) with `open_low`); `hint` says what it measures."""
        value = self._get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not (low < value if open_low else low <= value) or not value < high:
            interval = f"{'(' if open_low else '['}{low}, {high})"
            raise self._fail(key, f"a number in {interval}" + (f" ({hint})" if hint else ""))
        return float(value)

    def fraction_or_null(self, key: str) -> float | None:
        value = self._get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise self._fail(key, "null (the model's reference value) or a number in [0, 1)")
        return float(value)

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value.strip():
            raise self._fail(key, "a non-empty string")
        return value

    def text_list(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self._fail(key, "a non-empty list of URLs")
        return tuple(value)


def _data_file(section: _Section) -> DataFile:
    sha256 = section.text("sha256").lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise section._fail("sha256", "64 hexadecimal digits")
    return DataFile(name=section.text("name"), sha256=sha256)


def _train(train: _Section) -> TrainParams:
    augment = train.section("augment")
    return TrainParams(
        model=train.choice("model", MODELS),
        optimizer=train.choice("optimizer", OPTIMIZERS),
        lr=train.positive("lr"),
        schedule=train.choice("schedule", SCHEDULES),
        warmup=train.number("warmup", 0, 1, open_low=True),
        weight_decay=train.number("weight_decay", 0, 1),
        label_smoothing=train.number("label_smoothing", 0, 1),
        augment=AugmentParams(rotate=augment.number("rotate", 0, 180), translate=augment.number("translate", 0, 0.5)),
        batch_size=train.integer("batch_size", 1),
        epochs=train.integer("epochs", 1),
        seed=train.integer("seed", 0),
        dropout=train.fraction_or_null("dropout"),
        device=train.choice("device", DEVICES),
        threads=train.integer("threads", 0),
    )


def parse_train(raw: Any) -> TrainParams:
    """Validate a `train` section on its own (a recipe, a benchmark configuration)."""
    return _train(_Section(raw, "train"))


def _gate(section: _Section) -> GateParams:
    return GateParams(
        min_accuracy=section.number("min_accuracy", 0, 1, hint="a fraction: 0.95 means 95%"),
        max_params=section.integer("max_params", 1),
        max_accuracy_drop=section.number("max_accuracy_drop", 0, 100, hint="percentage points"),
    )


def parse(raw: Any) -> Params:
    """Validate the parsed YAML document and return typed params."""
    top = _Section(raw, "")
    download, train = top.section("download"), top.section("train")
    files = download.section("files")
    unknown = sorted(set(files.raw) - set(DATA_FILES))
    if unknown:
        raise ParamsError(f"download.files: unknown entries {unknown}; allowed: {', '.join(DATA_FILES)}")
    paths = top.section("paths")
    return Params(
        paths=PathsParams(**{key: Path(paths.text(key)) for key in (f.name for f in fields(PathsParams))}),
        download=DownloadParams(
            mirrors=download.text_list("mirrors"),
            files={key: _data_file(files.section(key)) for key in DATA_FILES},
            timeout=download.positive("timeout"),
        ),
        train=_train(train),
        evaluate=EvaluateParams(batch_size=top.section("evaluate").integer("batch_size", 1)),
        tracking=TrackingParams(experiment=top.section("tracking").text("experiment")),
        gate=_gate(top.section("gate")),
    )


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys as dotted names, the way `dvc exp run -S` and MLflow see them: train.augment.rotate."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def digest(section: Any) -> str:
    """sha256 of a params section (a dataclass or plain data) as canonical JSON: equal params, equal digest."""
    data = asdict(section) if hasattr(section, "__dataclass_fields__") else section
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def load(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; every problem is a ParamsError naming the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    try:
        return parse(raw)
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None

"""The kinds of value params.yaml holds, the names it may choose from, and what a section of it is.

Each field's description says what is allowed; mnistcnn.params.config turns a failed
validation into `key = value: must be <description>`. Paths are refused where a stage
could write outside its outputs. No torch, no project imports: every reader of
params.yaml (and the training code that builds what it names) can import it.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

# The names params.yaml may choose from. mnistcnn/training/optim.py builds each optimiser and schedule
# named here, and mnistcnn/training/kernels.py selects each kernel mode (tests/test_params.py checks both).
OPTIMIZERS = ("adam", "adamw", "sgd")  # sgd: momentum 0.9, Nesterov
SCHEDULES = ("constant", "onecycle")
KERNEL_MODES = ("portable", "native")  # portable: the same bits on every x86-64 CPU; native: this CPU's fastest
DEVICES = ("auto", "cpu", "cuda", "mps")
PRUNERS = ("halving", "median", "none")


class Section(BaseModel):
    """A mapping of params.yaml: exactly these keys, values of exactly these types, read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


MAX_REPLICATES = 32  # seeds a train section (or a raced trial) runs at: 32 of the default take about 8 minutes


def choice(names: tuple[str, ...]) -> Any:
    return Annotated[Literal[names], Field(description="one of " + ", ".join(names))]


def number(low: float, high: float, open_low: bool = False, hint: str = "") -> Any:
    """A finite number in [low, high), or (low, high) with `open_low`; `hint` says what it measures."""
    interval = f"{'(' if open_low else '['}{low}, {high})"
    bound = {"gt": low} if open_low else {"ge": low}
    return Annotated[float, Field(**bound, lt=high, allow_inf_nan=False,
                                  description=f"a number in {interval}" + (f" ({hint})" if hint else ""))]


def integer(minimum: int, maximum: int | None = None) -> Any:
    if maximum is None:
        return Annotated[int, Field(ge=minimum, description=f"an integer >= {minimum}")]
    return Annotated[int, Field(ge=minimum, le=maximum, description=f"an integer from {minimum} to {maximum}")]


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


def overlapping(paths: dict[str, Path], folders: dict[str, str]) -> str | None:
    """What is wrong where a path lies in, or contains, a folder that a stage replaces whole (`folders`:
    the key of each, and the stage), which would delete it; None where nothing does."""
    for folder_key, stage in folders.items():
        folder = PurePosixPath(paths[folder_key])
        for key, path in paths.items():
            path = PurePosixPath(path)
            if key != folder_key and (path == folder or folder in path.parents or path in folder.parents):
                return (f"paths.{key} = '{path}' overlaps paths.{folder_key} = '{folder}', "
                        f"a folder the {stage} stage replaces whole")
    return None


def _file_name(name: str) -> str:
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError("must be a file name, without folders")
    return name


FileName = Annotated[str, Field(min_length=1, description="a file name"), AfterValidator(_file_name)]


def _alias(alias: str) -> str:
    """MLflow reserves `latest` and `v<number>` (a version) as aliases."""
    if alias == "latest" or re.fullmatch(r"v\d+", alias):
        raise ValueError(f"'{alias}' is reserved by MLflow: choose another alias")
    return alias


ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$",
                                 description="a registered model name: letters, digits, '_', '.', '-'")]
Alias = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$",
                             description="an alias: letters, digits, '_', '-', not 'latest' or v<number>"),
                  AfterValidator(_alias)]

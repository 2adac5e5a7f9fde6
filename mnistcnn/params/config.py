"""Read params.yaml, the one source of every tunable value, through the schema.

Every stage calls `load()` before doing any work, so a bad value fails at once
with a message naming the key, the value and what is allowed, and the stage
writes nothing. Also the helpers that treat params as plain data: merge as
`dvc exp run -S` does, flatten to dotted keys, digest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML, YAMLError

from mnistcnn.model.arch import ShapeError
from mnistcnn.params.schema import GateParams, Params, TrainParams


class ParamsError(ValueError):
    """A value in params.yaml that the project cannot use."""


def _field(model: type[BaseModel], loc: tuple) -> tuple[type[BaseModel], Any]:
    """The model holding the last named key of `loc`, and that key's field (None past the schema)."""
    field = None
    for key in loc:
        inner = None if field is None else _is_model(field.annotation) or _item_model(field.annotation)
        if isinstance(key, int) or field is not None and not inner:
            continue  # an item of a list of values: its description is the list's
        if field is not None:
            model = inner
        field = model.model_fields.get(key)
        if field is None:
            break
    return model, field


def _is_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _item_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a list of models' items (train.arch.blocks), else None."""
    args = get_args(annotation)
    return _is_model(args[0]) if len(args) == 1 else None


def _message(error: dict, model: type[BaseModel], prefix: str) -> str:
    """One pydantic error in this project's words: `key = value: must be what is allowed`."""
    loc = tuple(error["loc"])
    key = prefix + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in loc).lstrip(".")
    key = key.replace("..", ".")
    parent, field = _field(model, loc)
    if error["type"] == "missing":
        return f"{key}: missing"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key; allowed: {', '.join(parent.model_fields)}"
    if error["type"] == "model_type":
        return f"{key}: expected a mapping of keys, got {error['input']!r}"
    if error["type"] == "value_error":  # a check of our own: its message says what is allowed
        reason = error["ctx"]["error"]
        if isinstance(reason, ShapeError):  # a check of a whole mapping names the key inside it
            return reason.under(key)
        return f"{key}: {reason}" if isinstance(error["input"], dict) else f"{key} = {error['input']!r}: {reason}"
    allowed = field.description if field is not None and field.description else error["msg"]
    return f"{key} = {error['input']!r}: must be {allowed}"


def _validate(model: type[BaseModel], raw: Any, prefix: str = "") -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ParamsError("; ".join(_message(e, model, prefix) for e in err.errors())) from None


def parse(raw: Any) -> Params:
    """Validate the parsed YAML document and return typed params."""
    return _validate(Params, raw)


def parse_train(raw: Any) -> TrainParams:
    """Validate a `train` section on its own (a recipe, a benchmark configuration)."""
    return _validate(TrainParams, raw, prefix="train.")


def parse_gate(raw: Any) -> GateParams:
    """Validate a `gate` section on its own (the baseline's, read from git)."""
    return _validate(GateParams, raw, prefix="gate.")


def parse_yaml(text: str, where: str) -> Any:
    """YAML as DVC reads params.yaml (ruamel.yaml's safe loader, YAML 1.2), so that any value DVC
    writes or accepts means the same to both: `dvc exp run -S train.lr=1e-5` writes 1e-05, which
    YAML 1.1 (PyYAML) would read as a string."""
    try:
        return YAML(typ="safe").load(text)
    except YAMLError as err:
        raise ParamsError(f"{where}: not valid YAML: {err}") from None


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; a ParamsError naming the file when it is missing or not YAML."""
    path = Path(path)
    try:
        return parse_yaml(path.read_text(), str(path))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None


def load(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; every problem is a ParamsError naming the file."""
    try:
        params = parse(read_yaml(path))
        _inside_through_links(params, Path(path).resolve().parent)
        return params
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}" if not str(err).startswith(str(path)) else str(err)) from None


def _inside_through_links(params: Params, root: Path) -> None:
    """The schema refuses `..` and absolute paths; a symlink can still lead out: follow them here."""
    for key, path in params.paths:
        target = (root / path).resolve()
        if target == root or not target.is_relative_to(root):
            raise ParamsError(f"paths.{key} = '{path}': leads to {target} through a symlink, "
                              "outside the repository or to the repository itself")


def with_overrides(path: Path, overrides: list[str]):
    """params.yaml's values with the overrides applied as `dvc exp run -S` applies them."""
    if not overrides:
        return load(path)
    from dvc.exceptions import InvalidArgumentError  # noqa: PLC0415 (only with overrides)
    from dvc.utils.hydra import apply_overrides  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "params.yaml"
        shutil.copyfile(path, copy)
        try:
            apply_overrides(copy, overrides)
        except InvalidArgumentError as err:
            reason = err.__cause__ or err
            raise ParamsError(f"-S {' -S '.join(overrides)}: {str(reason).splitlines()[0]}") from None
        return parse(read_yaml(copy))


def merge(base: dict, changes: dict) -> dict:
    """`changes` over `base` key by key at every depth, as `dvc exp run -S` sets them."""
    merged = dict(base)
    for key, value in changes.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = merge(base[key], value) if nested else value
    return merged


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys as dotted names, the way `dvc exp run -S` and MLflow see them: train.augment.rotate."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def as_dict(section: BaseModel) -> dict[str, Any]:
    """A section as plain data (nested sections as dicts), e.g. to log it."""
    return section.model_dump()


def digest(section: Any) -> str:
    """sha256 of a params section (or plain data) as canonical JSON: equal params, equal digest."""
    data = section.model_dump() if isinstance(section, BaseModel) else section
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()

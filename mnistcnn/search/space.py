"""A search space: which keys of the `train` section vary, and over what.

params.yaml's `search.space` mirrors the `train` section: a leaf is a range
(`{low, high}`, optionally `log` or `step`) or a list of `choices`, under the key it
varies (`lr`, `augment.rotate`, `arch.head.pool`). Under `arch.blocks` a leaf varies
that field of every block of the starting architecture, each block on its own
(`arch.blocks[2].channels`). Pure Python: a trial's values become a `train` section
here, and the parameter budget is checked over the space's corners before any trial.

The schema holds `search.space` as a plain mapping; `parse` reads it here, against the
schema's train section, so the pipeline's stages never import the search's code.
"""

from __future__ import annotations

import itertools
import random
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field

from mnistcnn.model import arch
from mnistcnn.params.schema import AugmentParams, TrainParams

Scalar = Union[bool, int, float, str, None]
# Keys a search must leave as they are, and why.
FIXED = {
    "model": "every trial trains a declared architecture (train.arch)",
    "validation": "every trial is scored on the same held-out images",
    "epochs": "the epoch budget is search.epochs",
    "seed": "a seed is not a hyperparameter: choosing one fits the validation set",
    "device": "it changes the speed, not the model",
    "threads": "it changes the bits, not the model",
    "kernels": "it changes the bits, not the model",
}
WHAT = {"low": "a number", "high": "a number", "log": "true or false", "step": "a positive number or null",
        "choices": "a non-empty list of values"}
MAX_CORNERS = 4096  # architectures checked against the budget, at most (sampled past that)


class SpaceError(arch.ShapeError):
    """A bad leaf of the space; `key` is where, below search.space (reported as a ShapeError is)."""


class _Leaf(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Range(_Leaf):
    """Numbers from low to high: integers when both ends are, else reals; `log`: evenly in log scale."""

    low: int | float
    high: int | float
    log: bool = False
    step: int | float | None = None

    def check(self, key: str) -> Range:
        """Refuse a range no value can come from; each message names both keys involved."""
        where = f"search.space.{key}"
        if self.low > self.high:
            raise SpaceError(f"{key}.low", f"{self.low} is above {where}.high = {self.high}")
        if self.step is not None and self.step <= 0:
            raise SpaceError(f"{key}.step", f"must be a positive number or null, got {self.step}")
        if self.log and self.low <= 0:
            raise SpaceError(f"{key}.log", f"true needs {where}.low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise SpaceError(f"{key}.log", f"true cannot go with {where}.step = {self.step}")
        return self

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step or 1))

    def corners(self) -> list:
        return [self.low, self.high]


class Choice(_Leaf):
    choices: Annotated[list[Scalar], Field(min_length=1)]

    def corners(self) -> list:
        return list(self.choices)


Leaf = Union[Range, Choice]


def _leaves(node: Any, key: str) -> dict[str, Leaf]:
    if not isinstance(node, dict) or not node:
        raise SpaceError(key, f"expected a range {{low, high}}, {{choices: [...]}} or a mapping of keys, got {node!r}")
    if "choices" in node or "low" in node or "high" in node:
        try:
            leaf = (Choice if "choices" in node else Range).model_validate(node)
        except ValueError as err:
            first = err.errors()[0]  # a union's one problem is reported once per type it tried
            field = str(first["loc"][0])
            if first["type"] == "extra_forbidden":
                allowed = "choices" if "choices" in node else "low, high, log, step"
                raise SpaceError(f"{key}.{field}", f"unknown key; allowed: {allowed}") from None
            raise SpaceError(f"{key}.{field}", f"must be {WHAT.get(field, 'set')}, got {first.get('input')!r}") from None
        return {key: leaf.check(key) if isinstance(leaf, Range) else leaf}
    flat = {}
    for name, child in node.items():
        flat.update(_leaves(child, f"{key}.{name}" if key else str(name)))
    return flat


def parse(raw: Any) -> dict[str, Leaf]:
    """search.space's leaves by dotted key; a SpaceError names the first bad one."""
    if raw is None or raw == {}:
        raise SpaceError("", "empty: name at least one train key to vary")
    leaves = _leaves(raw, "")
    for key in leaves:
        _check_key(key)
    return leaves


def _check_key(key: str) -> None:
    """Refuse a key the train section lacks, or one the search must not vary (FIXED)."""
    head, *rest = key.split(".")
    if head in FIXED:
        raise SpaceError(key, f"cannot vary: {FIXED[head]}")
    if head not in TrainParams.model_fields:
        allowed = ", ".join(k for k in TrainParams.model_fields if k not in FIXED)
        raise SpaceError(key, f"unknown key; allowed: {allowed}")
    if head == "augment":
        allowed, where = tuple(AugmentParams.model_fields), "train.augment"
    elif head == "arch" and rest[:1] == ["blocks"]:
        allowed, where, rest = tuple(arch.Block.model_fields), "each block of train.arch.blocks", rest[1:]
    elif head == "arch" and rest[:1] == ["head"]:
        allowed, where, rest = tuple(arch.Head.model_fields), "train.arch.head", rest[1:]
    elif head == "arch":
        allowed, where = ("dropout", "blocks.<field>", "head.<field>"), "train.arch"
    elif rest:
        raise SpaceError(key, f"train.{head} is a value, not a mapping")
    else:
        return
    if len(rest) != 1 or rest[0] not in allowed or "<" in rest[0]:
        raise SpaceError(key, f"unknown key; allowed under {where}: {', '.join(allowed)}")


def names(leaves: dict[str, Leaf], base_arch: arch.Arch) -> dict[str, Leaf]:
    """Each parameter a trial suggests, by name: arch.blocks.channels becomes arch.blocks[i].channels."""
    named = {}
    for key, leaf in leaves.items():
        if key.startswith("arch.blocks."):
            field = key.removeprefix("arch.blocks.")
            named.update({f"arch.blocks[{i}].{field}": leaf for i in range(len(base_arch.blocks))})
        else:
            named[key] = leaf
    return named


def apply(train: dict, values: dict[str, Scalar]) -> dict:
    """The `train` section (plain data, a declared architecture under `arch`) with a trial's values set."""
    train = {**train, "arch": {**train["arch"], "blocks": [dict(b) for b in train["arch"]["blocks"]]}}
    for name, value in values.items():
        path = name.split(".")
        if path[:1] == ["arch"] and path[1].startswith("blocks["):
            train["arch"]["blocks"][int(path[1][7:-1])][path[2]] = value
            continue
        node = train
        for part in path[:-1]:
            node[part] = node = dict(node[part])
        node[path[-1]] = value
    return train


def corners(named: dict[str, Leaf], seed: int = 0):
    """Every combination of the leaves' ends and choices (a seeded sample past MAX_CORNERS)."""
    options = [leaf.corners() for leaf in named.values()]
    total = 1
    for values in options:
        total *= len(values)
    if total <= MAX_CORNERS:
        combos = itertools.product(*options)
    else:
        rng = random.Random(seed)
        combos = itertools.chain([tuple(v[0] for v in options)],
                                 (tuple(rng.choice(v) for v in options) for _ in range(MAX_CORNERS - 1)))
    for combo in combos:
        yield dict(zip(named, combo))

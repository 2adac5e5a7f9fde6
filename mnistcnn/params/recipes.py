"""Recipes: a model's hyperparameters as a `train:` section, run as a DVC experiment.

A recipe (recipes/<name>.yaml) is a `train:` section in params.yaml's own form.
It lies over params.yaml key by key at every depth, as `dvc exp run -S` sets
values, so the keys it leaves out (nested ones too) keep params.yaml's value.
It is validated against the schema before anything runs.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from mnistcnn.params import config
from mnistcnn.params.config import ParamsError

RECIPES = Path("recipes")


def load(name: str, params_path: str | Path = "params.yaml") -> dict:
    """The `train` section of recipes/<name>.yaml (or of the file `name`), validated over params.yaml."""
    path = Path(name) if name.endswith(".yaml") else RECIPES / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
        raise ParamsError(f"{path}: no such recipe; known: {known}")
    recipe = config.read_yaml(path) or {}
    if not isinstance(recipe, dict) or set(recipe) != {"train"} or not isinstance(recipe["train"], dict):
        raise ParamsError(f"{path}: a recipe holds one mapping, `train:`")
    try:
        config.parse(config.merge(config.read_yaml(params_path), recipe))
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
    return recipe["train"]


def train_section(name: str, params_path: str | Path = "params.yaml") -> dict:
    """params.yaml's `train` section with the recipe over it: what the recipe trains."""
    return config.merge(config.read_yaml(params_path)["train"], load(name, params_path))


def hydra_value(value) -> str:
    """A value in the override grammar `dvc exp run -S` parses (Hydra's), without spaces:
    [{channels:12,pool:max},{channels:24}] for a list of blocks."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    return yaml.safe_dump(value, default_flow_style=True).splitlines()[0]


def flags(train: dict) -> list[str]:
    """`-S train.key=value` for every key, nested keys dotted; values in YAML, as DVC reads them,
    lists (train.arch.blocks) in the override grammar."""
    flat = config.flatten(train, prefix="train.")
    values = {key: hydra_value(value) for key, value in flat.items()}
    if any(" " in f"{key}={value}" for key, value in values.items()):
        raise ParamsError("recipe values must not contain spaces (they become shell words)")
    return [f"-S {key}={value}" for key, value in values.items()]

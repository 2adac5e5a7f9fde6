"""Print a recipe as `dvc exp run` flags: `dvc exp run $(python -m stages.recipe tiny10k)`.

A recipe (recipes/<name>.yaml) is a `train:` section in params.yaml's own form;
the keys it leaves out keep params.yaml's value. It is checked against the
params before anything runs, so a bad recipe names its key and what is allowed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from stages import cli, params as params_module
from stages.params import ParamsError

RECIPES = Path("recipes")


def load(name: str) -> dict:
    """The `train` section of recipes/<name>.yaml (or of the file `name`), validated."""
    path = Path(name) if name.endswith(".yaml") else RECIPES / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
        raise ParamsError(f"{path}: no such recipe; known: {known}")
    recipe = yaml.safe_load(path.read_text()) or {}
    if set(recipe) != {"train"} or not isinstance(recipe["train"], dict):
        raise ParamsError(f"{path}: a recipe holds one mapping, `train:`")
    merged = yaml.safe_load(Path("params.yaml").read_text())
    merged["train"] = {**merged["train"], **recipe["train"]}
    try:
        params_module.parse(merged)
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
    return recipe["train"]


def train_section(name: str) -> dict:
    """params.yaml's `train` section with the recipe's keys over it: what the recipe trains."""
    return {**yaml.safe_load(Path("params.yaml").read_text())["train"], **load(name)}


def flags(train: dict) -> list[str]:
    """`-S train.key=value` for every key, nested keys dotted; values in YAML, as DVC reads them."""
    flat = params_module.flatten(train, prefix="train.")
    values = {key: yaml.safe_dump(value, default_flow_style=True).splitlines()[0] for key, value in flat.items()}
    if any(" " in f"{key}={value}" for key, value in values.items()):
        raise ParamsError("recipe values must not contain spaces (they become shell words)")
    return [f"-S {key}={value}" for key, value in values.items()]


def main() -> None:
    if len(sys.argv) != 2:
        raise ParamsError("usage: python -m stages.recipe NAME (a file in recipes/, without .yaml)")
    print(" ".join(flags(load(sys.argv[1]))))


if __name__ == "__main__":
    cli.run(main)

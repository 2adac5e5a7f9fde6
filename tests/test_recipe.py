import subprocess
import sys

import pytest
import yaml

from stages import params, recipe
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml")))
def test_every_recipe_is_valid_and_becomes_the_flags_that_set_it(name):
    train = recipe.load(name)
    assert train["model"] in params.MODELS
    flags = recipe.flags(train)
    assert f"-S train.model={train['model']}" in flags
    assert all(flag.startswith("-S train.") for flag in flags)
    assert len(flags) == len(params.flatten(train))


def test_flags_name_nested_keys_with_dots_and_values_as_yaml():
    flags = recipe.flags({"lr": 0.02, "dropout": None, "augment": {"rotate": 0, "translate": 0.1}})
    assert flags == ["-S train.lr=0.02", "-S train.dropout=null", "-S train.augment.rotate=0",
                     "-S train.augment.translate=0.1"]


def test_a_bad_recipe_names_its_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"model": "quick25k", "lr": -1}}))
    with pytest.raises(params.ParamsError, match=r"bad\.yaml: train\.lr = -1: must be a positive number"):
        recipe.load(str(bad))


def test_an_unknown_recipe_lists_the_known_ones_and_exits_1():
    result = subprocess.run([sys.executable, "-m", "stages.recipe", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ""
    assert "recipes/nope.yaml: no such recipe; known:" in result.stderr and "tiny10k" in result.stderr


def test_the_default_training_is_the_quick25k_recipe():
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    assert {key: defaults[key] for key in recipe.load("quick25k")} == recipe.load("quick25k")

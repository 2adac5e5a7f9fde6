import subprocess
import sys

import pytest
import yaml

from mnistcnn.params import config, recipes as recipe, schema
from tests.conftest import ROOT, committed_params

pytestmark = pytest.mark.unit  # the fast tier: make test-fast


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml")))
def test_every_recipe_is_valid_and_becomes_the_flags_that_set_it(name):
    train = recipe.load(name, committed_params())
    assert train["model"] in schema.MODELS
    flags = recipe.flags(train)
    assert f"-S train.model={train['model']}" in flags
    assert all(flag.startswith("-S train.") for flag in flags)
    assert len(flags) == len(config.flatten(train))


def test_flags_name_nested_keys_with_dots_and_values_as_yaml():
    flags = recipe.flags({"lr": 0.02, "dropout": None, "augment": {"rotate": 0, "translate": 0.1}})
    assert flags == ["-S train.lr=0.02", "-S train.dropout=null", "-S train.augment.rotate=0",
                     "-S train.augment.translate=0.1"]


def test_a_bad_recipe_names_its_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"model": "quick25k", "lr": -1}}))
    with pytest.raises(config.ParamsError, match=r"bad\.yaml: train\.lr = -1: must be a positive number"):
        recipe.load(str(bad), committed_params())


def test_an_unknown_recipe_lists_the_known_ones_and_exits_1():
    result = subprocess.run([sys.executable, "-m", "stages.recipe", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ""
    assert "recipes/nope.yaml: no such recipe; known:" in result.stderr and "tiny10k" in result.stderr


def test_the_default_training_is_the_quick25k_recipe():
    defaults = yaml.safe_load(committed_params().read_text())["train"]
    assert {key: defaults[key] for key in recipe.load("quick25k", committed_params())} == recipe.load("quick25k", committed_params())


def test_a_recipe_that_sets_one_nested_key_keeps_the_others_from_params_yaml(tmp_path):
    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump({"train": {"model": "tiny10k", "augment": {"rotate": 5}}}))
    params_yaml = tmp_path / "params.yaml"
    params = yaml.safe_load(committed_params().read_text())
    params["train"]["augment"]["translate"] = 0.1
    params_yaml.write_text(yaml.safe_dump(params))
    train = recipe.train_section(str(partial), params_yaml)
    assert train["augment"] == {"rotate": 5, "translate": 0.1} and train["model"] == "tiny10k"
    flags = recipe.flags(recipe.load(str(partial), params_yaml))
    assert sorted(flags) == ["-S train.augment.rotate=5", "-S train.model=tiny10k"]


def test_a_recipe_with_an_unknown_key_is_refused(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"train": {"lrr": 0.1}}))
    with pytest.raises(config.ParamsError, match=r"typo\.yaml: train\.lrr: unknown key"):
        recipe.load(str(typo), committed_params())

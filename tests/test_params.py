import copy

import pytest
import yaml

from stages import params
from tests.conftest import ROOT

VALID = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_the_committed_params_file_is_valid():
    loaded = params.load(ROOT / "params.yaml")
    assert loaded.train.model in params.MODELS
    assert set(loaded.download.files) == set(params.DATA_FILES)
    assert loaded.gate == params.GateParams(min_accuracy=0.95, max_params=25_000, max_accuracy_drop=0.3)


def test_no_stage_depends_on_the_gate_thresholds():
    """Changing a threshold must not rerun training: dvc.yaml names no gate param."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        assert not any(str(p).split(".")[0] == "gate" for p in stage.get("params", [])), name
        assert "gate" not in stage["cmd"], name


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("train", "lr", -0.001, "train.lr = -0.001: must be a positive number"),
        ("train", "lr", 0, "train.lr = 0: must be a positive number"),
        ("train", "lr", "fast", "train.lr = 'fast': must be a positive number"),
        ("train", "lr", float("nan"), "train.lr = nan: must be a positive number"),
        ("train", "batch_size", 0, "train.batch_size = 0: must be an integer >= 1"),
        ("train", "batch_size", 32.5, "train.batch_size = 32.5: must be an integer >= 1"),
        ("train", "epochs", True, "train.epochs = True: must be an integer >= 1"),
        ("train", "epochs", -1, "train.epochs = -1: must be an integer >= 1"),
        ("train", "model", "resnet", "train.model = 'resnet': must be one of cnn24k, cnn9k"),
        ("train", "optimizer", "lbfgs", "train.optimizer = 'lbfgs': must be one of adam, adamw, sgd"),
        ("train", "dropout", 1.5, "train.dropout = 1.5: must be null"),
        ("train", "seed", -3, "train.seed = -3: must be an integer >= 0"),
        ("train", "schedule", "cosine", "train.schedule = 'cosine': must be one of constant, onecycle"),
        ("train", "warmup", 0, "train.warmup = 0: must be a number in (0, 1)"),
        ("train", "label_smoothing", 1, "train.label_smoothing = 1: must be a number in [0, 1)"),
        ("train", "weight_decay", -0.1, "train.weight_decay = -0.1: must be a number in [0, 1)"),
        ("train", "augment", 10, "train.augment: expected a mapping of keys, got 10"),
        ("train", "threads", -1, "train.threads = -1: must be an integer >= 0"),
        ("train", "threads", 1.5, "train.threads = 1.5: must be an integer >= 0"),
        ("evaluate", "batch_size", "all", "evaluate.batch_size = 'all': must be an integer >= 1"),
        ("download", "mirrors", [], "download.mirrors = []: must be a non-empty list"),
        ("download", "timeout", 0, "download.timeout = 0: must be a positive number"),
        ("gate", "min_accuracy", 95, "gate.min_accuracy = 95: must be a number in [0, 1) (a fraction: 0.95 means 95%)"),
        ("gate", "min_accuracy", float("nan"), "gate.min_accuracy = nan: must be a number in [0, 1)"),
        ("gate", "min_accuracy", True, "gate.min_accuracy = True: must be a number in [0, 1)"),
        ("gate", "max_params", 25000.5, "gate.max_params = 25000.5: must be an integer >= 1"),
        ("gate", "max_params", 0, "gate.max_params = 0: must be an integer >= 1"),
        ("gate", "max_accuracy_drop", -0.1, "gate.max_accuracy_drop = -0.1: must be a number in [0, 100) (percentage points)"),
        ("gate", "max_accuracy_drop", "0.3pp", "gate.max_accuracy_drop = '0.3pp': must be a number in [0, 100)"),
    ],
)
def test_a_bad_value_names_the_key_the_value_and_what_is_allowed(section, key, value, message):
    raw = copy.deepcopy(VALID)
    raw[section][key] = value
    with pytest.raises(params.ParamsError) as err:
        params.parse(raw)
    assert message in str(err.value)


def test_a_bad_augmentation_names_its_nested_key():
    raw = copy.deepcopy(VALID)
    raw["train"]["augment"]["rotate"] = 360
    with pytest.raises(params.ParamsError, match=r"train\.augment\.rotate = 360: must be a number in \[0, 180\)"):
        params.parse(raw)


def test_a_missing_key_is_named():
    raw = copy.deepcopy(VALID)
    del raw["train"]["seed"]
    with pytest.raises(params.ParamsError, match=r"^train\.seed: missing$"):
        params.parse(raw)


def test_a_malformed_checksum_is_named():
    raw = copy.deepcopy(VALID)
    raw["download"]["files"]["test_labels"]["sha256"] = "abc"
    with pytest.raises(params.ParamsError, match=r"download\.files\.test_labels\.sha256 = 'abc'"):
        params.parse(raw)


def test_a_section_that_is_not_a_mapping_is_named():
    raw = copy.deepcopy(VALID)
    raw["train"] = ["cnn24k"]
    with pytest.raises(params.ParamsError, match="^train: expected a mapping"):
        params.parse(raw)


def test_load_names_the_file_when_it_is_missing_or_not_yaml(tmp_path):
    with pytest.raises(params.ParamsError, match="nothing.yaml: not found"):
        params.load(tmp_path / "nothing.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(params.ParamsError, match="params.yaml: not valid YAML"):
        params.load(broken)


def test_load_prefixes_validation_errors_with_the_file(tmp_path):
    raw = copy.deepcopy(VALID)
    raw["train"]["lr"] = -1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(params.ParamsError, match=r"params\.yaml: train\.lr = -1"):
        params.load(path)

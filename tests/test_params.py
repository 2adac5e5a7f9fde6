import copy

import pytest
import yaml

from mnistcnn.params import config, schema
from tests.conftest import ROOT, committed_params

pytestmark = pytest.mark.unit  # the fast tier: make test-fast

VALID = yaml.safe_load(committed_params().read_text())


def test_the_committed_params_file_is_valid():
    loaded = config.load(committed_params())
    assert loaded.train.model in schema.MODELS
    assert {key for key, _ in loaded.download.files.items()} == {'train_images', 'train_labels', 'test_images', 'test_labels'}
    assert loaded.gate == schema.GateParams(min_accuracy=0.95, max_params=25_000, max_accuracy_drop=0.3,
                                                confidence=0.95)


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
        ("train", "kernels", "avx512", "train.kernels = 'avx512': must be one of portable, native"),
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
    with pytest.raises(config.ParamsError) as err:
        config.parse(raw)
    assert message in str(err.value)


def test_a_bad_augmentation_names_its_nested_key():
    raw = copy.deepcopy(VALID)
    raw["train"]["augment"]["rotate"] = 360
    with pytest.raises(config.ParamsError, match=r"train\.augment\.rotate = 360: must be a number in \[0, 180\)"):
        config.parse(raw)


def test_a_missing_key_is_named():
    raw = copy.deepcopy(VALID)
    del raw["train"]["seed"]
    with pytest.raises(config.ParamsError, match=r"^train\.seed: missing$"):
        config.parse(raw)


def test_a_malformed_checksum_is_named():
    raw = copy.deepcopy(VALID)
    raw["download"]["files"]["test_labels"]["sha256"] = "abc"
    with pytest.raises(config.ParamsError, match=r"download\.files\.test_labels\.sha256 = 'abc'"):
        config.parse(raw)


def test_a_section_that_is_not_a_mapping_is_named():
    raw = copy.deepcopy(VALID)
    raw["train"] = ["cnn24k"]
    with pytest.raises(config.ParamsError, match="^train: expected a mapping"):
        config.parse(raw)


def test_load_names_the_file_when_it_is_missing_or_not_yaml(tmp_path):
    with pytest.raises(config.ParamsError, match="nothing.yaml: not found"):
        config.load(tmp_path / "nothing.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(config.ParamsError, match="params.yaml: not valid YAML"):
        config.load(broken)


def test_load_prefixes_validation_errors_with_the_file(tmp_path):
    raw = copy.deepcopy(VALID)
    raw["train"]["lr"] = -1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(config.ParamsError, match=r"params\.yaml: train\.lr = -1"):
        config.load(path)


@pytest.mark.parametrize("path, message", [
    (("train", "lrr"), "train.lrr: unknown key; allowed: model, arch, validation, optimizer, lr"),
    (("trian",), "trian: unknown key; allowed: paths, download, train, evaluate, tracking, gate"),
    (("train", "augment", "rotation"), "train.augment.rotation: unknown key; allowed: rotate, translate"),
    (("download", "files", "extra_images"), "download.files.extra_images: unknown key"),
])
def test_an_unknown_key_is_refused_not_ignored(path, message):
    """A typo must not pass for a change the user believes took effect."""
    raw = copy.deepcopy(VALID)
    section = raw
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = 0.1
    with pytest.raises(config.ParamsError) as err:
        config.parse(raw)
    assert message in str(err.value)


def test_every_bad_value_is_named_at_once():
    raw = copy.deepcopy(VALID)
    raw["train"].update(lr=-1, epochs=0)
    with pytest.raises(config.ParamsError) as err:
        config.parse(raw)
    assert "train.lr = -1: must be a positive number" in str(err.value)
    assert "train.epochs = 0: must be an integer >= 1" in str(err.value)


def test_the_choices_offered_are_the_registries():
    """Every optimiser and schedule the schema allows is built, and no other;
    a model added to its registry is accepted with no other change."""
    from mnistcnn.model import models
    from mnistcnn.params import fields
    from mnistcnn.training import optim
    assert tuple(optim.OPTIMIZERS) == fields.OPTIMIZERS and tuple(optim.SCHEDULES) == fields.SCHEDULES
    for key, registry in (("model", (*models.NAMED, "declared")), ("optimizer", optim.OPTIMIZERS),
                          ("schedule", optim.SCHEDULES)):
        raw = copy.deepcopy(VALID)
        raw["train"][key] = "none-such"
        with pytest.raises(config.ParamsError) as err:
            config.parse(raw)
        assert f"must be one of {', '.join(registry)}" in str(err.value)
        for name in registry:
            raw["train"][key] = name
            assert getattr(config.parse(raw).train, key) == name


def test_merge_sets_nested_keys_one_by_one_as_dvc_exp_run_does():
    base = {"train": {"lr": 0.1, "augment": {"rotate": 0, "translate": 0.1}}, "gate": {"max_params": 1}}
    merged = config.merge(base, {"train": {"augment": {"rotate": 5}}})
    assert merged == {"train": {"lr": 0.1, "augment": {"rotate": 5, "translate": 0.1}}, "gate": {"max_params": 1}}
    assert base["train"]["augment"]["rotate"] == 0  # the base is left as it was


@pytest.mark.parametrize("key, value, message", [
    ("raw", ".", "paths.raw = '.': must name a file or folder inside the repository, not the repository itself"),
    ("raw", "./", "not the repository itself"),
    ("raw", "/home", "paths.raw = '/home': must be a path inside the repository, relative to it"),
    ("raw", "../elsewhere", "paths.raw = '../elsewhere': must stay inside the repository"),
    ("model", "models/../../x.pt", "paths.model = 'models/../../x.pt': must stay inside the repository"),
    ("raw", "stages", "paths.raw = 'stages': must not be inside `stages`, which the repository needs"),
    ("train_metrics", ".git/hooks/x", "must not be inside `.git`"),
    ("raw", "", "paths.raw = '': must be a non-empty string"),
    ("train_data", "data/raw/train.pt", "paths.train_data = 'data/raw/train.pt' overlaps paths.raw = 'data/raw'"),
    ("raw", "data", "paths.train_data = 'data/train.pt' overlaps paths.raw = 'data'"),
    ("model", "models/replicates/model.pt", "paths.model = 'models/replicates/model.pt' overlaps "
                                            "paths.replicate_models = 'models/replicates', a folder the train stage"),
    ("replicate_models", "models", "paths.model = 'models/model.pt' overlaps paths.replicate_models = 'models'"),
])
def test_a_path_that_escapes_or_would_replace_what_the_repository_needs_is_refused(key, value, message):
    raw = copy.deepcopy(VALID)
    raw["paths"][key] = value
    with pytest.raises(config.ParamsError) as err:
        config.parse(raw)
    assert message in str(err.value)


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "raw/x.gz", "/abs.gz"])
def test_a_download_file_name_must_be_a_plain_name(name):
    raw = copy.deepcopy(VALID)
    raw["download"]["files"]["train_images"]["name"] = name
    with pytest.raises(config.ParamsError, match=r"download\.files\.train_images\.name = .*: must be a file name"):
        config.parse(raw)


def test_a_path_that_leaves_the_repository_through_a_symlink_is_refused(tmp_path):
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    repo.mkdir()
    outside.mkdir()
    (repo / "params.yaml").write_text(yaml.safe_dump(VALID))
    (repo / "data").symlink_to(outside)
    with pytest.raises(config.ParamsError, match=r"paths\.raw = 'data/raw': leads to .*/outside/raw through a symlink"):
        config.load(repo / "params.yaml")


@pytest.mark.parametrize("text, value", [("1e-05", 1e-05), ("1e-3", 0.001), (".5", 0.5), ("1_000", 1000)])
def test_numbers_mean_what_they_mean_to_dvc(text, value):
    """DVC reads params.yaml as YAML 1.2, where 1e-05 is a number (PyYAML's YAML 1.1 reads a string)."""
    assert config.parse_yaml(f"lr: {text}\n", "params.yaml") == {"lr": value}
    raw = copy.deepcopy(VALID)
    raw["train"]["lr"] = config.parse_yaml(f"lr: {text}\n", "params.yaml")["lr"]
    assert config.parse(raw).train.lr == value


@pytest.mark.parametrize("override", ["train.seed=1", "train.model=tiny10k", "search.base=tiny10k"])
def test_dvc_exp_run_set_param_changes_only_the_line_of_its_value(tmp_path, override):
    """`dvc exp run -S` rewrites params.yaml through DVC's YAML writer: params.yaml is kept in the
    layout it writes (lists under their key, null as an empty value), so the diff is the value alone."""
    from dvc.utils.hydra import apply_overrides  # noqa: PLC0415 (what -S calls)

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    apply_overrides(path, [override])
    before, after = (ROOT / "params.yaml").read_text().splitlines(), path.read_text().splitlines()
    changed = [(old, new) for old, new in zip(before, after) if old != new]
    key, value = override.rsplit("=", 1)
    assert len(before) == len(after) and len(changed) == 1, changed
    assert changed[0][1].split("#")[0].strip() == f"{key.rsplit('.', 1)[1]}: {value}"

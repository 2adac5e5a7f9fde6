"""The architecture family against reference implementations: the four named models as they were
written by hand, module by module, and torch's own count of every generated declaration."""

import random

import pytest
import torch
from torch import nn

from mnistcnn.model import arch, models, weights
from mnistcnn.outputs import save_torch, sha256_file
from mnistcnn.params import config

pytestmark = pytest.mark.unit  # the fast tier: make test-fast


def _cbrb(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3), nn.BatchNorm2d(c_out), nn.ReLU(), nn.BatchNorm2d(c_out)]


def _cbrp(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]


def _cbr(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


# The named models as the reference scripts and this project first wrote them.
HAND_WRITTEN = {
    "cnn24k": lambda p: nn.Sequential(*_cbrb(1, 16), *_cbrb(16, 32), nn.MaxPool2d(2), nn.Dropout(p), *_cbrb(32, 64),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(p), nn.Linear(64, 10)),
    "cnn9k": lambda p: nn.Sequential(*_cbrp(1, 8), *_cbrp(8, 16), *_cbrp(16, 32), nn.Dropout2d(p), nn.Flatten(),
                                     nn.Linear(288, 10)),
    "quick25k": lambda p: nn.Sequential(*_cbr(1, 12), nn.MaxPool2d(2), *_cbr(12, 24), nn.MaxPool2d(2),
                                        *_cbr(24, 40), *_cbr(40, 24), nn.MaxPool2d(2), nn.Dropout(p), nn.Flatten(),
                                        nn.Linear(216, 10)),
    "tiny10k": lambda p: nn.Sequential(*_cbr(1, 8), nn.MaxPool2d(2), *_cbr(8, 16), *_cbr(16, 16), nn.MaxPool2d(2),
                                       *_cbr(16, 20), *_cbr(20, 16), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                       nn.Dropout(p), nn.Linear(16, 10)),
}
REFERENCE_DROPOUT = {"cnn24k": 0.1, "cnn9k": 0.2, "quick25k": 0.0, "tiny10k": 0.0}


def pooled_before_relu(model: nn.Sequential) -> nn.Sequential:
    """`model` with each max-pool moved before the ReLU it follows, as arch.plan orders them."""
    layers = list(model)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.MaxPool2d):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("name", sorted(arch.NAMED))
def test_a_named_declaration_builds_the_hand_written_module_and_its_seeded_weights(name):
    torch.manual_seed(0)
    expected = pooled_before_relu(HAND_WRITTEN[name](REFERENCE_DROPOUT[name]))
    torch.manual_seed(0)
    built = models.build_named(name)
    assert str(built) == str(expected)  # the same modules, in the same order, with the same settings
    want, got = expected.state_dict(), built.state_dict()
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("name", ["cnn9k", "quick25k", "tiny10k"])
def test_pooling_before_the_relu_trains_the_hand_written_order_bit_for_bit(name):
    # max-pool and ReLU commute, forward and backward: moving the pool first changes no bit (NCHW,
    # where the layers are torch's own: mnistcnn.model.layers steps in only on channels-last tensors)
    builders = (lambda: models.build_named(name, dropout=0.0), lambda: HAND_WRITTEN[name](0.0))
    trained, orders = [], []
    for build in builders:
        torch.manual_seed(0)
        model = build().train()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
        generator = torch.Generator().manual_seed(1)
        images, labels = torch.randn(32, 1, 28, 28, generator=generator), torch.randint(0, 10, (32,), generator=generator)
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
        trained.append(model.state_dict())
        orders.append([type(layer).__name__ for layer in model])
    assert orders[0] != orders[1]  # the two orders do differ
    assert all(torch.equal(trained[0][key], trained[1][key]) for key in trained[1])


@pytest.mark.parametrize("name, expected", [("cnn24k", 24_394), ("cnn9k", 8_890), ("quick25k", 22_350),
                                            ("tiny10k", 9_610)])
def test_the_named_models_keep_their_exact_parameter_counts(name, expected):
    assert models.count_parameters(models.build_named(name)) == expected
    assert arch.count_parameters(arch.NAMED[name]) == expected


def random_arch(rng: random.Random) -> arch.Arch:
    """A random buildable declaration: every option drawn, pools only while the map allows them."""
    blocks, size = [], arch.IMAGE_SIZE
    for _ in range(rng.randint(1, 5)):
        kernel = rng.choice([1, 3, 5])
        padding = "valid" if size > 2 * kernel and rng.random() < 0.3 else "same"
        convs = rng.randint(1, 2)
        size -= (kernel - 1) * convs if padding == "valid" else 0
        pool = rng.choice(["none", "max", "avg"]) if size >= 2 else "none"
        size //= 2 if pool != "none" else 1
        blocks.append({"channels": rng.randint(1, 24), "convs": convs, "kernel": kernel, "padding": padding,
                       "norm": rng.choice(["bn", "bn_both", "none"]), "bias": rng.choice([None, True, False]),
                       "pool": pool, "dropout": rng.choice(["none", "element", "channel"])})
    head = {"pool": rng.choice(["flatten", "avg"]), "dropout": rng.choice(["none", "element"])}
    return arch.Arch.model_validate({"blocks": blocks, "head": head, "dropout": rng.choice([0.0, 0.25])})


@pytest.mark.parametrize("seed", range(40))
def test_a_declarations_counts_are_the_built_modules(seed):
    """Parameters: torch's sum of numel; multiply-adds: every conv's and linear's, measured by hooks on a
    real forward pass; and the module maps a batch of digits to ten logits."""
    declared = random_arch(random.Random(seed))
    model = models.build(declared).eval()
    assert arch.count_parameters(declared) == sum(p.numel() for p in model.parameters())
    macs = []

    def count(module, inputs, output):  # a weight's every element multiplies once per output position
        positions = output[0, 0].numel() if isinstance(module, nn.Conv2d) else 1
        macs.append(module.weight.numel() * positions)

    for module in model:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(count)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, arch.NUM_CLASSES)
    assert arch.count_macs(declared) == sum(macs)


def test_dropout_null_means_the_architectures_rate_and_a_number_overrides_it():
    assert models.build_named("cnn9k")[12].p == 0.2  # the Dropout2d after the third block
    assert models.build_named("cnn9k", 0.05)[12].p == 0.05
    assert [m.p for m in models.build_named("cnn24k", 0.3) if isinstance(m, nn.Dropout)] == [0.3, 0.3]


def test_unknown_model_names_the_named_ones():
    with pytest.raises(KeyError, match="cnn24k, cnn9k"):
        models.build_named("resnet50")


def train_with(**arch_changes):
    """params.yaml's train section, declared, its arch changed; what config.parse_train makes of it."""
    raw = config.read_yaml(config.Path("params.yaml"))["train"]
    raw = {**raw, "model": "declared", "arch": {**raw["arch"], **arch_changes}}
    return config.parse_train(raw)


@pytest.mark.parametrize("arch_changes, message", [
    ({"blocks": [{"channels": 8, "pool": "max"}] * 5}, "train.arch.blocks[4].pool: the map is 1x1 here: a 2x2 pool"),
    ({"blocks": [{"channels": 0}]}, "train.arch.blocks[0].channels = 0: must be an integer in [1, 1024]"),
    ({"blocks": [{"channels": 8, "pool": "mean"}]},
     "train.arch.blocks[0].pool = 'mean': must be one of none, max, avg"),
    ({"blocks": [{"channels": 8, "kind": "residual"}]}, "train.arch.blocks[0].kind: unknown key; allowed: channels,"),
    ({"blocks": [{"channels": 8, "kernel": 7, "padding": "valid", "convs": 5}]},
     "train.arch.blocks[0].kernel: a 7x7 `valid` conv does not fit the 4x4 map here"),
    ({"blocks": [{"channels": 8, "kernel": 4}]}, "train.arch.blocks[0].kernel: 4 is even: padding `same` needs"),
    ({"blocks": []}, "train.arch.blocks = []: must be a list of 1 to 16 blocks"),
    ({"head": {"pool": "max"}}, "train.arch.head.pool = 'max': must be one of flatten, avg"),
])
def test_a_bad_declaration_is_one_line_naming_its_key(arch_changes, message):
    with pytest.raises(config.ParamsError) as err:
        train_with(**arch_changes)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_train_arch_is_what_trains_only_when_the_model_is_declared():
    declared = train_with(blocks=[{"channels": 4, "pool": "max"}])
    assert declared.architecture == declared.arch
    assert arch.count_parameters(declared.arch) == 4 * 9 + 8 + 4 * 196 * 10 + 10  # conv, its BN, the linear
    named = config.parse_train({**config.as_dict(declared), "model": "tiny10k"})
    assert named.architecture == arch.NAMED["tiny10k"]


def test_a_weights_file_holds_the_same_bytes_whatever_layout_the_model_is_in(tmp_path):
    model = models.build_named("quick25k")
    save_torch(weights.state(model), tmp_path / "nchw.pt")
    save_torch(weights.state(model.to(memory_format=torch.channels_last)), tmp_path / "channels_last.pt")
    assert model[0].weight.stride() != (9, 9, 3, 1)  # the first conv's weights are in another layout now
    assert sha256_file(tmp_path / "nchw.pt") == sha256_file(tmp_path / "channels_last.pt")

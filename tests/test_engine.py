import json

import pytest
import torch
from torch import nn

from mnistcnn.data import mnist
from mnistcnn.model import models
from mnistcnn.params.config import ParamsError
from mnistcnn.training import engine, optim
from tests.conftest import synthetic_split

pytestmark = pytest.mark.unit  # the fast tier: make test-fast


def tiny_data(n=200, seed=1):
    images, labels = synthetic_split(n, seed)
    return mnist.normalize(images), labels.long()


def test_batches_cover_every_index_once_in_a_seeded_order():
    first = torch.cat(list(engine.batches(10, 3, torch.Generator().manual_seed(5))))
    again = torch.cat(list(engine.batches(10, 3, torch.Generator().manual_seed(5))))
    assert sorted(first.tolist()) == list(range(10)) and torch.equal(first, again)
    assert [len(b) for b in engine.batches(10, 3, None)] == [3, 3, 3, 1]


def test_training_learns_the_synthetic_digits():
    torch.manual_seed(0)
    images, labels = tiny_data(600)
    model = models.build_named("cnn9k")
    optimizer = optim.make_optimizer("adam", model.parameters(), lr=0.01)
    before = engine.evaluate(model, images, labels, 100).loss
    for _ in range(2):
        stats = engine.train_epoch(model, optimizer, images, labels, 32, torch.Generator().manual_seed(0))
    after = engine.evaluate(model, images, labels, 100)
    assert after.loss < before / 2 and after.accuracy > 0.9 and 0 <= stats.accuracy <= 1


def test_same_seed_gives_identical_weights_and_another_seed_does_not():
    def train(seed):
        torch.manual_seed(seed)
        images, labels = tiny_data(64)
        model = models.build_named("cnn9k")
        optimizer = optim.make_optimizer("adam", model.parameters(), lr=0.01)
        engine.train_epoch(model, optimizer, images, labels, 16, torch.Generator().manual_seed(seed))
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(train(3), train(3))
    assert not torch.equal(train(3), train(4))


def test_augment_moves_each_image_differently_and_repeats_under_its_seed():
    images, _ = tiny_data(8)
    shifted = engine.augment(images, torch.Generator().manual_seed(0), rotate=15, translate=0.1)
    again = engine.augment(images, torch.Generator().manual_seed(0), rotate=15, translate=0.1)
    assert shifted.shape == images.shape and torch.equal(shifted, again)
    changed = (shifted - images).abs().flatten(1).amax(1)
    assert (changed > 0.5).all()  # every image moved, not only some
    still = engine.augment(images, torch.Generator().manual_seed(0), rotate=0, translate=0)
    assert torch.allclose(still, images, atol=1e-5)  # the identity transform resamples exactly


def test_onecycle_warms_up_to_the_peak_rate_then_anneals_to_almost_zero():
    optimizer = optim.make_optimizer("adam", [nn.Parameter(torch.zeros(1))], lr=0.02)
    scheduler = optim.make_scheduler("onecycle", optimizer, total_steps=100, warmup=0.25)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] < 0.002 and max(rates) == pytest.approx(0.02) and rates.index(max(rates)) in (24, 25)
    assert rates[-1] < 1e-5
    assert optim.make_scheduler("constant", optimizer, 100, 0.25) is None


class Constant(nn.Module):
    """Always predicts class `c` with certainty: a reference whose metrics are known exactly."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        logits = torch.full((len(x), models.NUM_CLASSES), -1e4)
        logits[:, self.c] = 0.0
        return logits


def test_evaluate_matches_hand_computed_metrics():
    labels = torch.tensor([3, 3, 1, 0, 3])
    result = engine.evaluate(Constant(3), torch.zeros(5, 1, 28, 28), labels, batch_size=2)
    assert result.accuracy == pytest.approx(3 / 5)
    assert result.loss == pytest.approx(2 / 5 * 1e4, rel=1e-6)
    assert result.confusion.sum() == 5 and result.confusion[3, 3] == 3 and result.confusion[1, 3] == 1
    assert torch.equal(result.predictions, torch.full((5,), 3))
    per_class = engine.per_class_accuracy(result.confusion)
    assert per_class[3] == 1.0 and per_class[0] == 0.0 and per_class[2] is None


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_optimizer_params_allow_can_be_built(name):
    assert isinstance(optim.make_optimizer(name, [nn.Parameter(torch.zeros(1))], 0.1), torch.optim.Optimizer)


@pytest.mark.parametrize("cuda, mps, chosen", [
    (True, True, "cuda"), (False, True, "mps"), (True, False, "cuda"), (False, False, "cpu"),
])
def test_auto_prefers_cuda_then_mps_then_the_cpu_and_an_explicit_device_is_honoured(monkeypatch, cuda, mps, chosen):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert engine.pick_device("auto") == torch.device(chosen)
    assert engine.pick_device("cpu") == torch.device("cpu")
    for device, present in (("cuda", cuda), ("mps", mps)):
        if present:
            assert engine.pick_device(device) == torch.device(device)
        else:  # one line naming the key, not torch's traceback once the data has loaded
            with pytest.raises(ParamsError, match=f"train.device = '{device}': torch finds no {device.upper()} device"):
                engine.pick_device(device)


# What torch hands to MKL's vector maths (ATen's vml.h), whose code and last bits depend on the CPU
# whatever MKL is told (mnistcnn.training.kernels): training and evaluation must call none of them.
MKL_VECTOR_MATHS = {"acos", "asin", "atan", "cos", "erf", "erfc", "erfinv", "exp", "log", "log10", "log2", "sin",
                    "sqrt", "tan", "tanh", "trunc"}


def test_training_and_evaluation_keep_away_from_mkls_vector_maths(tmp_path):
    from tests.cpus.workload import CASES, run_case  # noqa: PLC0415 (every kernel the recipes use)

    with open(tmp_path / "trace.jsonl", "w") as trace:
        for name in CASES:
            run_case(name, threads=1, trace=trace)
    lines = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    ops = {line[0].split(".")[1] for line in lines if line[0] != "case"}
    assert "convolution" in ops and "_fused_adam_" in ops and "grid_sampler_2d" in ops  # the trace saw them
    assert not ops & MKL_VECTOR_MATHS

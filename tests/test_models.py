import pytest
import torch

from mnistcnn import models


@pytest.mark.parametrize("name, expected", [("cnn24k", 24_394), ("cnn9k", 8_890)])
def test_reference_networks_have_their_exact_parameter_counts(name, expected):
    assert models.count_parameters(models.build(name)) == expected


@pytest.mark.parametrize("name, budget", [("quick25k", 25_000), ("tiny10k", 10_000)])
def test_the_projects_own_models_stay_under_their_budgets(name, budget):
    assert models.count_parameters(models.build(name)) < budget


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_every_model_maps_a_batch_of_digits_to_ten_logits(name):
    model = models.build(name).eval()
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, models.NUM_CLASSES)


def test_dropout_null_means_the_reference_value_and_a_number_overrides_it():
    assert models.build("cnn9k")[12].p == 0.2  # the Dropout2d after the third block
    assert models.build("cnn9k", 0.05)[12].p == 0.05
    assert [m.p for m in models.build("cnn24k", 0.3) if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3]


def test_unknown_model_names_the_registered_ones():
    with pytest.raises(KeyError, match="cnn24k, cnn9k"):
        models.build("resnet50")

import pytest
import torch

from mnistcnn import models, weights
from stages import evaluate
from mnistcnn.outputs import DataError, save_torch


def test_weights_round_trip_and_a_bad_weights_file_is_named(tmp_path):
    model = models.build("cnn9k")
    save_torch(model.state_dict(), tmp_path / "model.pt")
    card = {"model": "cnn9k", "dropout": 0.2}
    loaded = weights.load_model(card, tmp_path / "model.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))

    save_torch(models.build("cnn24k").state_dict(), tmp_path / "other.pt")
    with pytest.raises(DataError, match="other.pt: does not hold cnn9k weights"):
        weights.load_model(card, tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="garbage.pt: does not hold cnn9k weights"):
        weights.load_model(card, tmp_path / "garbage.pt")
    with pytest.raises(DataError, match="missing.pt: missing; the train stage writes it"):
        weights.load_model(card, tmp_path / "missing.pt")


def test_predictions_file_lists_actual_and_predicted(tmp_path):
    evaluate.write_predictions(tmp_path / "p.csv", torch.tensor([1, 2]), torch.tensor([1, 3]))
    assert (tmp_path / "p.csv").read_text().splitlines() == ["actual,predicted", "1,1", "2,3"]

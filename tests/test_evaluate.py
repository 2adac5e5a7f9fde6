import pytest
import torch

from mnistcnn.model import arch, models, weights
from mnistcnn.outputs import DataError, save_torch, sha256_file
from stages import evaluate

pytestmark = pytest.mark.unit  # the fast tier: make test-fast


def saved(model, path) -> dict:
    """Save `model`'s weights to `path`; returns the card that records them."""
    save_torch(model.state_dict(), path)
    return {"model": "cnn9k", "arch": arch.NAMED["cnn9k"].model_dump(), "dropout": 0.2,
            "weights_sha256": sha256_file(path)}


def test_weights_round_trip_through_the_file_their_card_records(tmp_path):
    model = models.build_named("cnn9k")
    card = saved(model, tmp_path / "model.pt")
    loaded = weights.load_model(card, tmp_path / "model.pt", "card.json")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_a_flipped_byte_or_another_model_s_weights_are_refused_naming_the_file(tmp_path):
    torch.manual_seed(0)
    card = saved(models.build_named("cnn9k"), tmp_path / "model.pt")
    data = bytearray((tmp_path / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight: torch would load it without a word
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    saved(models.build_named("cnn9k"), tmp_path / "other.pt")  # the same architecture, other weights
    for name in ("flipped.pt", "other.pt"):
        with pytest.raises(DataError, match=rf"{name}: SHA-256 \w+\.\.\. is not the \w+\.\.\. that card.json records"):
            weights.load_model(card, tmp_path / name, "card.json")


def test_a_file_that_is_not_the_card_s_architecture_or_not_weights_at_all_is_named(tmp_path):
    card = saved(models.build_named("cnn24k"), tmp_path / "other.pt")  # the card says cnn9k
    with pytest.raises(DataError, match="other.pt: does not hold cnn9k weights"):
        weights.load_model(card, tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="garbage.pt: does not hold cnn9k weights"):
        weights.load_model({**card, "weights_sha256": sha256_file(tmp_path / "garbage.pt")}, tmp_path / "garbage.pt")
    with pytest.raises(DataError, match="missing.pt: missing; the train stage writes it"):
        weights.load_model(card, tmp_path / "missing.pt")
    with pytest.raises(DataError, match="card.json: records no SHA-256"):
        weights.load_model({**card, "weights_sha256": None}, tmp_path / "other.pt", "card.json")
    with pytest.raises(DataError, match=r"card.json: does not declare a buildable architecture .*channels"):
        weights.load_model({**card, "arch": {"blocks": [{"channels": 0}]}}, tmp_path / "other.pt", "card.json")


def test_predictions_file_lists_actual_and_predicted(tmp_path):
    evaluate.write_predictions(tmp_path / "p.csv", torch.tensor([1, 2]), torch.tensor([1, 3]))
    assert (tmp_path / "p.csv").read_text().splitlines() == ["actual,predicted", "1,1", "2,3"]

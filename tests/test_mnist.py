import gzip

import pytest
import torch

from mnistcnn.data import mnist
from mnistcnn.outputs import DataError, save_torch, sha256_file
from tests.conftest import FILE_NAMES, idx_bytes, synthetic_split

pytestmark = pytest.mark.unit  # the fast tier: make test-fast


def test_idx_images_and_labels_decode_to_the_tensors_that_were_encoded():
    images, labels = synthetic_split(20, seed=0)
    decoded_images = mnist.decode_idx(idx_bytes(images), "images", "imgs")
    decoded_labels = mnist.decode_idx(idx_bytes(labels), "labels", "lbls")
    assert torch.equal(decoded_images, images)
    assert decoded_labels.dtype == torch.int64 and torch.equal(decoded_labels, labels.long())


def test_truncated_or_wrong_kind_of_idx_is_a_data_error_naming_the_file():
    images, labels = synthetic_split(4, seed=0)
    with pytest.raises(DataError, match="imgs: not a valid IDX images file"):
        mnist.decode_idx(idx_bytes(labels), "images", "imgs")  # a 1-d file where 3-d is due
    with pytest.raises(DataError, match="bad.gz: not a valid IDX labels file"):
        mnist.decode_idx(b"\x00\x00\x08", "labels", "bad.gz")


def test_decompress_names_a_file_that_is_not_gzip():
    assert mnist.decompress(gzip.compress(b"abc"), "x.gz") == b"abc"
    with pytest.raises(DataError, match="x.gz: not a valid gzip file"):
        mnist.decompress(b"<html>404</html>", "x.gz")
    with pytest.raises(DataError, match="x.gz: not a valid gzip file"):
        mnist.decompress(gzip.compress(b"abc" * 100)[:-10], "x.gz")  # cut short


def test_assemble_refuses_images_and_labels_that_disagree():
    images, labels = synthetic_split(10, seed=0)
    parts = {"train_images": images, "train_labels": labels[:9].long(),
             "test_images": images, "test_labels": labels.long()}
    with pytest.raises(DataError, match="train: 10 images but 9 labels"):
        mnist.assemble(parts)


def test_each_split_round_trips_through_its_own_file(tmp_path):
    images, labels = synthetic_split(10, seed=0)
    dataset = {f"{s}_{k}": t for s in mnist.SPLITS for k, t in (("images", images), ("labels", labels.long()))}
    files = mnist.split_files(dataset)
    assert {split: set(tensors) for split, tensors in files.items()} == {
        "train": {"train_images", "train_labels"}, "test": {"test_images", "test_labels"}}
    save_torch(files["test"], tmp_path / "d.pt")
    loaded = mnist.load_split(tmp_path / "d.pt", "test", {"test_sha256": sha256_file(tmp_path / "d.pt")}, "p.json")
    assert loaded.keys() == files["test"].keys() and all(torch.equal(loaded[k], dataset[k]) for k in loaded)
    with pytest.raises(DataError, match=r"p.json: records no SHA-256"):  # the train file's digest is another key
        mnist.load_split(tmp_path / "d.pt", "train", {"test_sha256": sha256_file(tmp_path / "d.pt")}, "p.json")
    save_torch(files["test"], tmp_path / "again.pt")  # equal tensors, equal bytes: DVC hashes agree
    assert (tmp_path / "again.pt").read_bytes() == (tmp_path / "d.pt").read_bytes()


def test_load_split_names_a_missing_corrupt_or_unrecorded_file(tmp_path):
    path = tmp_path / "d.pt"
    with pytest.raises(DataError, match="d.pt: missing; the download stage writes it \\(run `dvc repro`\\)"):
        mnist.load_split(path, "train", {}, "p.json")
    path.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="d.pt: cannot be read"):
        mnist.load_split(path, "train", {"train_sha256": sha256_file(path)}, "p.json")
    with pytest.raises(DataError, match=r"p.json: records no SHA-256 for .*d.pt; rerun the download stage"):
        mnist.load_split(path, "train", {}, "p.json")


def test_a_decoded_dataset_with_a_flipped_byte_is_refused_before_it_is_read(tmp_path):
    images, labels = synthetic_split(10, seed=0)
    dataset = {f"{s}_{k}": t for s in mnist.SPLITS for k, t in (("images", images), ("labels", labels.long()))}
    path = tmp_path / "d.pt"
    save_torch(mnist.split_files(dataset)["train"], path)
    provenance = {"train_sha256": sha256_file(path)}
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the image bytes: torch would load it
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"d.pt: SHA-256 \w+\.\.\. is not the \w+\.\.\. that p.json records"):
        mnist.load_split(path, "train", provenance, "p.json")


def test_normalize_standardises_and_adds_the_channel_axis():
    x = mnist.normalize(torch.tensor([[[0, 255]]], dtype=torch.uint8))
    assert x.shape == (1, 1, 1, 2)
    expected = torch.tensor([-mnist.MEAN / mnist.STD, (1 - mnist.MEAN) / mnist.STD])
    assert torch.allclose(x.flatten(), expected)


def test_file_names_are_the_ones_params_yaml_lists():
    from mnistcnn.params import config
    from tests.conftest import committed_params
    listed = config.load(committed_params()).download.files
    assert {k: f.name for k, f in listed.items()} == FILE_NAMES


def test_a_file_that_inflates_past_the_limit_is_refused_before_it_fills_memory():
    bomb = gzip.compress(bytes(10_000))  # 10 kB of zeros in a few dozen bytes
    assert len(mnist.decompress(bomb, "ok.gz", limit=10_000)) == 10_000
    with pytest.raises(DataError, match=r"bomb.gz: inflates to more than 9,999 bytes: refused"):
        mnist.decompress(bomb, "bomb.gz", limit=9_999)

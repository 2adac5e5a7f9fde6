"""The served model (mnistcnn.serving.classifier) and the predict command that uses it, checked against the
torch model they wrap: a cnn9k trained for seconds on the synthetic digits, logged to a throwaway
SQLite store."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.exceptions import MlflowException
from PIL import Image

from mnistcnn.data import mnist
from mnistcnn.model import models
from mnistcnn.model.arch import NAMED
from mnistcnn.outputs import DataError, save_torch, sha256_file, write_json
from mnistcnn.serving import classifier
from mnistcnn.tracking import runs
from stages import predict
from tests.conftest import ROOT, idx_bytes, synthetic_split
from tests.helpers import using

PROMOTE = yaml.safe_load((ROOT / "params.yaml").read_text())["promote"]


def train_briefly(images: torch.Tensor, labels: torch.Tensor, steps: int = 80) -> torch.nn.Module:
    """A cnn9k that tells the synthetic digits apart (they are easy): a few Adam steps."""
    torch.manual_seed(0)
    model = models.build_named("cnn9k", 0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    inputs, targets = mnist.normalize(images), labels.long()
    for step in range(steps):
        batch = slice(64 * step % len(targets), 64 * step % len(targets) + 64)
        loss = torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def write_model(folder: Path, model: torch.nn.Module) -> tuple[Path, Path]:
    """The weights and model card, as the train stage writes them."""
    weights, card = folder / "model.pt", folder / "model.json"
    save_torch(model.state_dict(), weights)
    write_json(card, {"model": "cnn9k", "arch": NAMED["cnn9k"].model_dump(), "dropout": 0.0,
                      "params": models.count_parameters(model),
                      "dataset_digest": "synthetic", "weights_sha256": sha256_file(weights)})
    return weights, card


class Served(NamedTuple):
    model: torch.nn.Module  # the torch model it wraps
    uri: str  # its URI in `store`, registered there too, as params.yaml's promote section names it
    store: str  # a throwaway SQLite tracking store
    local: Path  # a downloaded copy


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    """A briefly trained cnn9k, logged as the served model into a throwaway store."""
    folder = tmp_path_factory.mktemp("served")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    model = train_briefly(*synthetic_split(640, seed=1))
    weights, card = write_model(folder, model)
    with using(store):
        mlflow.create_experiment("serving-test", artifact_location=(folder / "artifacts").as_uri())  # not ./mlruns
        with runs.run("serving-test", stage="serving"):
            uri = classifier.log_served_model(weights, card)
        version = mlflow.register_model(uri, PROMOTE["model_name"]).version
        mlflow.MlflowClient().set_registered_model_alias(PROMOTE["model_name"], PROMOTE["alias"], version)
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(folder / "local")))
    return Served(model, uri, store, local)


def torch_probabilities(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(mnist.normalize(torch.from_numpy(images))), dim=1).numpy()


def run_in(store: str, *args: str) -> subprocess.CompletedProcess:
    """Run a Python command from the repository root against `store`."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)


LOAD_ALONE = """
import json, sys
sys.modules["torchvision"] = None  # the served model must load without it
import mlflow, numpy as np
model = mlflow.pyfunc.load_model(sys.argv[1])
import mnistcnn
out = model.predict(np.load(sys.argv[2]))
print(json.dumps({"package": mnistcnn.__file__, "digit": out["digit"].tolist(),
                  "probabilities": out["probabilities"].tolist()}))
"""


def test_the_served_model_loads_alone_and_agrees_with_the_torch_model(served, tmp_path):
    model, uri, store = served.model, served.uri, served.store
    images, labels = synthetic_split(50, seed=3)
    np.save(tmp_path / "images.npy", images.numpy().astype(np.float32))
    (tmp_path / "load.py").write_text(LOAD_ALONE)
    result = subprocess.run([sys.executable, str(tmp_path / "load.py"), uri, str(tmp_path / "images.npy")],
                            cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": store},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.splitlines()[-1])
    package = Path(answer["package"])  # the copy shipped with the model, not this checkout
    assert package.parts[-3] == "code" and not package.is_relative_to(ROOT)
    expected = torch_probabilities(model, images.numpy())
    assert answer["digit"] == expected.argmax(axis=1).tolist()
    assert np.allclose(answer["probabilities"], expected, atol=1e-5)
    assert np.allclose(np.sum(answer["probabilities"], axis=1), 1)
    assert (np.array(answer["digit"]) == labels.numpy()).mean() > 0.9  # the model learned the digits


def test_the_model_is_logged_from_code_with_its_weights_card_and_a_raw_pixel_example(served):
    local = served.local
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"served_model.py", "artifacts/model.pt", "artifacts/model.json",
            "code/mnistcnn/serving/classifier.py", "code/mnistcnn/model/weights.py"} <= files
    assert not any(name.endswith((".pkl", ".pickle")) for name in files)  # nothing to unpickle
    example = json.loads((local / "serving_input_example.json").read_text())["inputs"]
    assert np.array(example).shape == (1, 28, 28) and np.max(example) == 255
    requirements = (local / "requirements.txt").read_text().split()
    assert f"mlflow=={mlflow.__version__}" in requirements and any(r.startswith("torch==") for r in requirements)


def test_loading_a_logged_model_skips_the_requirements_check_only_while_logging(served, monkeypatch):
    """Logging validates its input example by loading the model back, and loading checks the pinned
    requirements against every installed package (a second of each training): skipped while logging."""
    from mlflow.utils import requirements_utils  # noqa: PLC0415

    checked = []
    monkeypatch.setattr(requirements_utils, "_check_requirement_satisfied", lambda r: checked.append(r))
    mlflow.pyfunc.load_model(str(served.local))
    assert any(r.startswith("torch==") for r in checked)  # the probe sees the check when it runs
    checked.clear()
    with runs.requirements_unchecked():
        mlflow.pyfunc.load_model(str(served.local))
    assert checked == []


@pytest.fixture(scope="module")
def loaded(served):
    return mlflow.pyfunc.load_model(str(served.local))


def raw(*shape: int, value: float = 0.0, dtype=np.float32) -> np.ndarray:
    return np.full(shape, value, dtype=dtype)


BAD_INPUTS = {
    "one image without its batch": (raw(28, 28), "Shape of input (28, 28)"),
    "wrong image size": (raw(2, 28, 27), "Shape of input (2, 28, 27)"),
    "flattened images": (raw(2, 784), "Shape of input (2, 784)"),
    "strings": (np.full((1, 28, 28), "7"), "dtype of input <U1"),
    "integers": (raw(1, 28, 28, dtype=np.uint8), "dtype of input uint8"),
    "no images": (raw(0, 28, 28), "the batch holds no images"),
    "too many images": (raw(classifier.MAX_BATCH + 1, 28, 28), f"more than {classifier.MAX_BATCH} per request"),
    "NaN": (raw(2, 28, 28, value=np.nan), "image 0 holds NaN or infinite values"),
    "infinity": (np.concatenate([raw(1, 28, 28), raw(1, 28, 28, value=np.inf)]), "image 1 holds NaN or infinite"),
    "negative pixels": (raw(1, 28, 28, value=-0.5), "raw pixels in [0, 255]; image 0 holds values from -0.5"),
    "pixels over 255": (raw(1, 28, 28, value=256), "raw pixels in [0, 255]"),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_refused_as_a_client_error_saying_what_is_wrong(loaded, kind):
    images, message = BAD_INPUTS[kind]
    with pytest.raises(MlflowException) as refused:
        loaded.predict(images)
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
    assert refused.value.get_http_status_code() == 400
    assert message in refused.value.message


def test_a_full_batch_of_raw_pixels_is_scored(loaded, served):
    images = np.random.default_rng(0).integers(0, 256, (classifier.MAX_BATCH, 28, 28)).astype(np.float32)
    out = loaded.predict(images)
    assert list(out.columns) == ["digit", "probabilities"] and len(out) == classifier.MAX_BATCH
    assert out["digit"].tolist() == torch_probabilities(served.model, images.astype(np.uint8)).argmax(axis=1).tolist()


def png_bytes() -> bytes:
    """A 64x64 PNG of noise (hard to compress, so cutting its end loses pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def write_png(path: Path, image: np.ndarray, size: int = 28) -> Path:
    Image.fromarray(image).resize((size, size), Image.Resampling.NEAREST).save(path)
    return path


def test_predict_names_each_image_its_digit_and_confidence(served, tmp_path):
    model, uri, store = served.model, served.uri, served.store
    images, labels = synthetic_split(20, seed=4)
    pixels = images.numpy()
    png = write_png(tmp_path / "digit.png", pixels[0])
    inverted = write_png(tmp_path / "paper.png", 255 - pixels[1])  # dark digit on light paper
    large = write_png(tmp_path / "large.png", pixels[2], size=100)
    (tmp_path / "t10k.gz").write_bytes(gzip.compress(idx_bytes(images[3:8])))
    (tmp_path / "t10k.idx").write_bytes(idx_bytes(images[8:10]))
    files = [png, inverted, large, tmp_path / "t10k.gz", tmp_path / "t10k.idx"]
    result = run_in(store, "-m", "stages.predict", *map(str, files), "--model", uri)
    assert result.returncode == 0, result.stderr
    names = [str(png), str(inverted), str(large)] + [f"{tmp_path}/t10k.gz[{i}]" for i in range(5)] + \
            [f"{tmp_path}/t10k.idx[{i}]" for i in range(2)]
    expected = torch_probabilities(model, pixels[:10])
    lines = result.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == names
    digits = [int(line.split(": ")[1].split()[0]) for line in lines]
    confidences = [float(line.split("(")[-1].rstrip(")")) for line in lines]
    assert digits == expected.argmax(axis=1).tolist() == labels[:10].tolist()
    exact = [0, 1] + list(range(3, 10))  # all but the rescaled picture see the very same pixels
    assert np.allclose([confidences[i] for i in exact], expected.max(axis=1)[exact], atol=1e-3)


def test_predict_uses_the_promoted_model_by_default(served, tmp_path):
    images, labels = synthetic_split(10, seed=5)
    path = write_png(tmp_path / "digit.png", images[0].numpy())
    result = run_in(served.store, "-m", "stages.predict", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: {labels[0].item()} (")


UNREADABLE = {
    "not an image": (b"not an image at all", "not a PNG, JPEG or IDX images file"),
    "cut short PNG": (png_bytes()[:-60], "cannot be read as an image"),
    "IDX labels": (gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 8), "not a valid IDX images file"),
    "no IDX images": (idx_bytes(torch.zeros(0, 28, 28, dtype=torch.uint8)), "not a valid IDX images file"),
    "cut short gzip": (b"\x1f\x8b\x08\x00 cut short", "not a valid gzip file"),
}


@pytest.mark.parametrize("kind", UNREADABLE)
def test_a_file_that_holds_no_readable_images_is_named_with_the_problem(tmp_path, kind):
    content, problem = UNREADABLE[kind]
    (tmp_path / "bad.png").write_bytes(content)
    with pytest.raises(DataError, match=f"^{tmp_path / 'bad.png'}: .*{problem}"):
        predict.read_file(tmp_path / "bad.png")


def test_a_transparent_picture_is_laid_over_white_then_inverted(tmp_path):
    pixels = synthetic_split(1, seed=7)[0][0].numpy()
    ink = np.stack([np.zeros_like(pixels)] * 3 + [pixels], axis=-1)  # black, as opaque as MNIST is bright
    Image.fromarray(ink, "RGBA").save(tmp_path / "ink.png")
    names, images = predict.read_file(tmp_path / "ink.png")
    assert names == [str(tmp_path / "ink.png")] and images.shape == (1, 28, 28)
    assert np.abs(images[0].astype(int) - pixels).max() <= 1


def test_predict_fails_in_one_line_naming_the_file_or_the_model(served, tmp_path):
    good = write_png(tmp_path / "digit.png", synthetic_split(1, seed=6)[0][0].numpy())
    missing = run_in(served.store, "-m", "stages.predict", str(good), str(tmp_path / "gone.png"), "--model", served.uri)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == f"error: {tmp_path / 'gone.png'}: cannot be read (No such file or directory)\n"
    unknown = run_in(served.store, "-m", "stages.predict", str(good), "--model", "models:/no-such-model@champion")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.startswith("error: model models:/no-such-model@champion: cannot be loaded (")
    assert len(unknown.stderr.splitlines()) == 1 and "Traceback" not in unknown.stderr

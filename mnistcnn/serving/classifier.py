"""The served model: raw pixels in, each image's digit and class probabilities out.

An MLflow pyfunc model logged *from code* (mnistcnn/serving/served_model.py builds it), with
this package shipped beside it: loading it unpickles nothing, and a process with only
torch and mlflow installed can load it. Its artifacts are the weights and the model
card the train stage writes; the weights are checked against the card's SHA-256.

Input: a batch of 28x28 images of raw pixel values in [0, 255], shape (N, 28, 28),
1 <= N <= MAX_BATCH: nested lists of numbers in JSON, a float32 array from Python (the
signature says so; MLflow refuses other dtypes). A single image is a batch of one:
(28, 28) is refused, not guessed at. The model normalises the pixels itself, so a
client needs no statistics. Output: a DataFrame, one row
per image, `digit` (0-9) and `probabilities` (the 10 softmax values). Through
`mlflow models serve`:

    POST /invocations  {"inputs": [[[0, 0, ...28 values], ...28 rows]]}
    -> {"predictions": [{"digit": 7, "probabilities": [0.0001, ..., 0.998, ...]}]}

Input the model cannot score (wrong shape or type, NaN or infinite values, values
outside [0, 255], no images, more than MAX_BATCH) raises an MlflowException that the
scoring server answers with HTTP 400 and a message saying what was wrong.

It imports mlflow itself, beside mnistcnn.tracking.runs (the stages' door to it): the
served model is an MLflow class, and loads where mnistcnn.tracking.runs (the store, the
run bookkeeping) is not needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, Schema, TensorSpec
from mlflow.types.schema import Array

from mnistcnn.data import mnist
from mnistcnn.model import weights
from mnistcnn.outputs import DataError

NAME = "served"  # the model's name in its run
MAX_BATCH = 1024  # images per request: bounds one request's memory and time
PIXEL_MAX = 255
CODE_FILE = Path(__file__).with_name("served_model.py")
SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, mnist.IMAGE_SIZE, mnist.IMAGE_SIZE))]),
    outputs=Schema([ColSpec("long", "digit"), ColSpec(Array("double"), "probabilities")]),
)


def invalid(message: str) -> MlflowException:
    """Bad input: the scoring server answers it with HTTP 400 and `message`."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def check_images(images) -> np.ndarray:
    """`images` as float32 (N, 28, 28) raw pixels, or an MlflowException saying what is wrong."""
    if not isinstance(images, np.ndarray):
        raise invalid(f"expected an array of images, got {type(images).__name__}")
    if images.dtype.kind not in "uif":  # unsigned, signed, float: no bool, complex, str or object
        raise invalid(f"pixel values must be numbers, got dtype {images.dtype}")
    if images.ndim != 3 or images.shape[1:] != (mnist.IMAGE_SIZE, mnist.IMAGE_SIZE):
        raise invalid(f"expected a batch of 28x28 images, shape (N, 28, 28), got shape {images.shape} "
                      "(send one image as a batch of one)")
    if len(images) == 0:
        raise invalid("the batch holds no images: send at least one")
    if len(images) > MAX_BATCH:
        raise invalid(f"the batch holds {len(images)} images, more than {MAX_BATCH} per request: split it")
    finite = np.isfinite(images).all(axis=(1, 2))
    if not finite.all():
        raise invalid(f"image {np.flatnonzero(~finite)[0]} holds NaN or infinite values")
    inside = ((images >= 0) & (images <= PIXEL_MAX)).all(axis=(1, 2))
    if not inside.all():
        i = np.flatnonzero(~inside)[0]
        raise invalid(f"pixel values must be raw pixels in [0, 255]; image {i} holds values "
                      f"from {images[i].min()} to {images[i].max()}")
    return images.astype(np.float32, copy=False)


class DigitClassifier(PythonModel):
    """The trained CNN behind MLflow's pyfunc interface, normalising raw pixels itself."""

    def load_context(self, context) -> None:
        card_path = context.artifacts["card"]
        card = json.loads(Path(card_path).read_text())
        self.model = weights.load_model(card, context.artifacts["weights"], card_path).eval()
        self.mean, self.std = context.model_config["mean"], context.model_config["std"]

    def predict(self, model_input: np.ndarray, params=None) -> pd.DataFrame:
        images = torch.from_numpy(check_images(model_input))  # (N, 28, 28)
        with torch.no_grad():
            logits = self.model(((images / PIXEL_MAX - self.mean) / self.std).unsqueeze(1))  # (N, 10)
            probabilities = torch.softmax(logits.double(), dim=1)
        return pd.DataFrame({"digit": probabilities.argmax(dim=1).numpy(),
                             "probabilities": probabilities.tolist()})


def example_images() -> np.ndarray:
    """One raw-pixel image, a vertical stroke (a "1"): the logged model's input example."""
    image = np.zeros((1, mnist.IMAGE_SIZE, mnist.IMAGE_SIZE), dtype=np.float32)
    image[0, 4:24, 13:15] = PIXEL_MAX
    return image


def _model_arguments(weights_path: str | Path, card_path: str | Path) -> dict:
    """What both logging and saving the served model pass MLflow: the code file, the data, the signature."""
    return {"python_model": str(CODE_FILE), "artifacts": {"weights": str(weights_path), "card": str(card_path)},
            "model_config": {"mean": mnist.MEAN, "std": mnist.STD},  # the training images' statistics
            "signature": SIGNATURE, "input_example": example_images()}


def log_served_model(weights_path: str | Path, card_path: str | Path) -> str:
    """Log the served model, built from these weights and card, into the active run; returns its URI."""
    from mnistcnn.tracking import runs  # noqa: PLC0415 (only logging needs it; loading the model does not)

    with runs.requirements_unchecked():
        info = mlflow.pyfunc.log_model(
            name=NAME,
            code_paths=[str(Path(__file__).parents[1])],  # the whole package, so the model loads anywhere
            pip_requirements=runs.pinned_requirements(),
            **_model_arguments(weights_path, card_path),
        )
    return info.model_uri


def save_served_model(weights_path: str | Path, card_path: str | Path, folder: Path) -> Path:
    """The served model in `folder`, built from this checkout's code and these files (`make serve`)."""
    mlflow.pyfunc.save_model(str(folder), pip_requirements=[], **_model_arguments(weights_path, card_path))
    return folder


def load(uri: str):
    """The served model at `uri` (models:/name@alias, runs:/id/served, a path), or a DataError in one line."""
    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as err:
        reason = str(getattr(err, "message", err)).strip().splitlines()[0]
        raise DataError(f"model {uri}: cannot be loaded ({reason})") from None


def predict(model, images: np.ndarray) -> pd.DataFrame:
    """Score any number of raw-pixel images, MAX_BATCH at a time."""
    parts = [model.predict(images[i : i + MAX_BATCH].astype(np.float32)) for i in range(0, len(images), MAX_BATCH)]
    return pd.concat(parts, ignore_index=True)

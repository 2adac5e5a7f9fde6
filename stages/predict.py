"""predict: the digit in each image file, by the promoted model (or any logged one).

    python -m stages.predict FILE... [--model URI]

Prints one line per image, the predicted digit and its probability:
`digit.png: 7 (0.998)`, and for the images of an IDX file `t10k.gz[12]: 3 (0.870)`.

FILE is a PNG or JPEG of any size, or an MNIST IDX images file (idx3, gzipped or
not). A picture becomes a 28x28 grey image as MNIST's are: transparency is laid over
white, and when its border is light on average (a dark digit on paper) it is
inverted, since MNIST digits are light on dark; it is then scaled to fit 28x28,
keeping its aspect ratio, and padded with black. Nothing is cropped or centred: frame
the digit as MNIST does, centred, filling about 20 of the 28 pixels.

The default model is `models:/<promote.model_name>@<promote.alias>` (params.yaml)
in the tracking store mnistcnn.tracking.runs uses. Every file is read before the model
is loaded (MLflow is imported only then), so an unreadable file fails in a moment.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mnistcnn import cli
from mnistcnn.data import mnist
from mnistcnn.outputs import DataError
from mnistcnn.params import config

GZIP_MAGIC, IDX_IMAGES_MAGIC = b"\x1f\x8b", b"\x00\x00\x08\x03"  # IDX: unsigned bytes, 3 dimensions
PICTURE_FORMATS = ("PNG", "JPEG")


def read_idx(path: Path) -> np.ndarray:
    """The images of an IDX images file, gzipped or not: uint8 (N, 28, 28)."""
    if path.stat().st_size > mnist.MAX_FILE_BYTES:
        raise DataError(f"{path}: larger than {mnist.MAX_FILE_BYTES:,} bytes: refused")
    content = path.read_bytes()
    if content.startswith(GZIP_MAGIC):
        content = mnist.decompress(content, str(path))
    return mnist.decode_idx(content, "images", str(path)).numpy()


def read_picture(path: Path) -> np.ndarray:
    """A PNG or JPEG as one MNIST-like image: uint8 (1, 28, 28), light digit on black."""
    try:
        with Image.open(path, formats=PICTURE_FORMATS) as picture:
            picture = ImageOps.exif_transpose(picture)
            if picture.has_transparency_data:
                picture = Image.alpha_composite(Image.new("RGBA", picture.size, "white"), picture.convert("RGBA"))
            grey = picture.convert("L")
    except Image.UnidentifiedImageError:
        raise DataError(f"{path}: not a PNG, JPEG or IDX images file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:  # truncated, damaged, huge
        raise DataError(f"{path}: cannot be read as an image ({err})") from None
    pixels = np.asarray(grey)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127:  # dark on light
        grey = ImageOps.invert(grey)
    fitted = ImageOps.pad(grey, (mnist.IMAGE_SIZE, mnist.IMAGE_SIZE), Image.Resampling.BILINEAR, color=0)
    return np.asarray(fitted)[None]


def read_file(path: Path) -> tuple[list[str], np.ndarray]:
    """Every image in `path`, uint8 (N, 28, 28), and how each is named in the output (the file, or
    for an IDX file the file and the image's index); a DataError naming `path` when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(IDX_IMAGES_MAGIC))
        if head.startswith(GZIP_MAGIC) or head == IDX_IMAGES_MAGIC:
            images = read_idx(path)  # torchvision refuses one of no images
            return [f"{path}[{i}]" for i in range(len(images))], images
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None
    return [str(path)], read_picture(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.predict", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="PNG, JPEG or IDX images file")
    parser.add_argument("--model", help="model URI (default: models:/<promote.model_name>@<promote.alias>)")
    args = parser.parse_args(argv)
    names, batches = [], []
    for path in args.files:
        file_names, images = read_file(path)
        names += file_names
        batches.append(images)
    uri = args.model or config.load().promote.model_uri

    from mnistcnn.serving import classifier  # MLflow loads here, once every file has been read
    from mnistcnn.tracking import runs

    runs.connect()
    results = classifier.predict(classifier.load(uri), np.concatenate(batches))
    for name, digit, probabilities in zip(names, results["digit"], results["probabilities"]):
        print(f"{name}: {digit} ({probabilities[digit]:.3f})")


if __name__ == "__main__":
    cli.run(main)

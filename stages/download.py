"""download stage: fetch the four MNIST files, verify them, decode them once into tensors:
one file for the training images, one for the test images.

The sources and the checks are mnistcnn.data.mirrors'; this stage writes the raw
files, the decoded tensors and their provenance, all or none, and logs the
provenance to MLflow.
"""

from __future__ import annotations

import os

from mnistcnn import cli
from mnistcnn.data import mirrors, mnist
from mnistcnn.outputs import atomic_dir, atomic_outputs, save_torch, sha256_file, write_json
from mnistcnn.params import config
from mnistcnn.tracking import runs


def main() -> None:
    params = config.load()
    paths = params.paths
    runs.connect()  # a tracking server that is down fails the stage now, not after the download
    with atomic_dir(paths.raw) as staging:
        dataset, provenance, origins = mirrors.download(params, dict(os.environ), staging)
        with runs.run(params.tracking.experiment + "-data", run_name="download", stage="download"):
            runs.log_provenance(provenance, origins)
        with atomic_outputs() as stage:  # all three, or none
            digests = {}
            for split, tensors in mnist.split_files(dataset).items():  # a file each: train never reads the test's
                path = stage(paths.train_data if split == "train" else paths.test_data)
                save_torch(tensors, path)
                digests[f"{split}_sha256"] = sha256_file(path)
            write_json(stage(paths.provenance), {**provenance, **digests})


if __name__ == "__main__":
    cli.run(main)

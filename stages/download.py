"""download stage: fetch the four MNIST files, verify them, decode them once into tensors.

The sources and the checks are mnistcnn.mirrors'; this stage writes the raw
files, the decoded tensors and their provenance, all or none, and logs the
provenance to MLflow.
"""

from __future__ import annotations

import os

from mnistcnn import cli, config, mirrors, tracking
from mnistcnn.outputs import atomic_dir, save_torch, sha256_file, write_json


def main() -> None:
    params = config.load()
    paths = params.paths
    tracking.connect()  # a tracking server that is down fails the stage now, not after the download
    with atomic_dir(paths.raw) as staging:
        dataset, provenance, origins = mirrors.download(params, dict(os.environ), staging)
        with tracking.run(params.tracking.experiment + "-data", run_name="download", stage="download"):
            tracking.log_provenance(provenance, origins)
        save_torch(dataset, paths.dataset)
        write_json(paths.provenance, {**provenance, "dataset_sha256": sha256_file(paths.dataset)})


if __name__ == "__main__":
    cli.run(main)

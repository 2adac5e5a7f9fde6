"""mnistcnn: the library behind the pipeline: parameter schema, models, training engine, MNIST files,
tracking, atomic outputs, reproducibility and the merge gate's verdict. stages/ holds the entry points."""

import os

# OpenMP threads that wait by spinning hold their core: stages running side by side (dvc queue
# start -j 2) then starve each other, 5x slower than one after the other on 2 cores. Sleeping
# waits cost nothing measurable alone and change no result. Set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

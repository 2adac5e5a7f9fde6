"""The entry points: what dvc.yaml and the Makefile run, each `python -m stages.<name>`.

Importing any of them first sets what the process (and every process it starts, which
inherits it) needs before torch or MLflow loads; each changes speed or chatter, never a
result, and a value the user set wins.
"""

import os

# How long an idle OpenMP thread spins for the next parallel region before it sleeps (about
# 0.1 ms here; libgomp's default is 3 ms): a training step runs some 150 short regions. Sleeping
# at once (OMP_WAIT_POLICY=PASSIVE) made quick25k's step 1.6x slower alone; spinning 3 ms made two
# stages side by side on 2 cores (dvc queue start -j 2) 5x slower. docs/experiments.md#side-by-side
# measures both; OMP_WAIT_POLICY or GOMP_SPINCOUNT set by the user win. Never changes a result.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
# MLflow, read as it is imported: no calls home; a stage's log is for its own progress, not bars,
# nor MLflow's INFO lines ("Validating input example ...") or its two links at every run's end
# (twice for a resumed run): a stage says where its run is, once (mnistcnn/tracking/runs.run).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

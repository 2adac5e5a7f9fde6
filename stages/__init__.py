"""The entry points: what dvc.yaml and the Makefile run, each `python -m stages.<name>`.

Importing any of them first sets what the process (and every process it starts, which
inherits it) needs before torch or MLflow loads; each changes speed or chatter, never a
result, and a value the user set wins.
"""

import os

# OpenMP threads that wait by spinning hold their core: stages running side by side (dvc queue
# start -j 2) then starve each other, 5x slower than one after the other on 2 cores. Sleeping
# waits cost nothing measurable alone and change no result.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# MLflow, read as it is imported: no calls home; a stage's log is for its own progress, not bars,
# nor MLflow's INFO lines ("Validating input example ...") or its two links at every run's end
# (twice for a resumed run): a stage says where its run is, once (mnistcnn/tracking/runs.run).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

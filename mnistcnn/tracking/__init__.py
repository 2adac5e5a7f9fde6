"""The door to MLflow for runs: where they are stored (store), how a run starts, logs and ends
(runs), which process owns one (owner), whether a tracking server answers (health)."""

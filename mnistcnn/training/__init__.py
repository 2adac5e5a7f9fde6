"""Training and scoring a model: the engine, the optimisers, seeds and deterministic kernels,
the CPU code paths, and the confusion figure. No MLflow: the stages log what it returns."""

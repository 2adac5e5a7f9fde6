"""The search for the best model under a budget: the space (space), the Optuna study and its
objective (search), where studies live (studies), and its runs in MLflow (study_runs)."""

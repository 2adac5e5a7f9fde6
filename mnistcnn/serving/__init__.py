"""Serving the champion: the served model (classifier, logged from code by served_model), the
Model Registry (registry), what may be served (trusted), and the scoring server (scoring_server).
The door to MLflow for models: the registry and the served model go through here."""

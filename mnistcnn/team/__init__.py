"""The team's tracking server: PostgreSQL (postgres) and MLflow's server (tracking_server),
who may do what on it (access), and the UI's addresses and headless rendering (ui)."""

"""mnistcnn: the library behind the pipeline, grouped by concern (docs/layout.md maps it).

model, params, data, training: what a result is made of; tracking: the door to MLflow for runs;
gate, search, serving, team: what is built on them. stages/ holds the entry points, and sets
their processes' settings (stages/__init__.py): importing this package changes nothing.
"""

"""promote: register the model of the current commit, once the gate passes, and move the alias to it.

`python -m stages.promote`, or `make promote`, after `make repro` (and on main, after
`make gate`). Into the MLflow Model Registry of the tracking store (mlruns/ or
$MLFLOW_TRACKING_URI) under params.yaml's `promote.model_name`, it registers the
served form of the model (raw pixels in, digit and probabilities out:
mnistcnn/serving/classifier.py), logged into the run that trained it, and moves
`promote.alias` (default `champion`) to that version, which `make serve` serves.

It refuses, exit 1, registry unchanged, when the gate does not pass, when the
metrics are stale or not those committed, or when the store holds no run that
trained the weights. The same weights promoted again make no second version.
"""

from __future__ import annotations

import subprocess
import sys

from mnistcnn import cli
from mnistcnn.gate import baseline, verdict
from mnistcnn.gate.verdict import CannotJudge
from mnistcnn.model import weights
from mnistcnn.outputs import read_json
from mnistcnn.params import config
from mnistcnn.serving import registry
from mnistcnn.tracking import runs
from mnistcnn.training import record


class Refused(Exception):
    """Promotion refused, nothing registered: the message says why and what to do."""

    def __init__(self, why: str):
        super().__init__(f"refused, registry unchanged: {why}")


def gate_report(params) -> tuple[str, str]:
    """The gate's Markdown report and its baseline, when it passes; otherwise Refused."""
    try:
        sha, label = baseline.resolve(None)
        result = baseline.assess(sha, params)
    except CannotJudge as err:
        raise Refused(f"the gate cannot judge: {err}") from None
    report = verdict.markdown(result, label)
    if result.code != 0:
        print(report, end="", file=sys.stderr)
        raise Refused(f"the gate did not pass ({report.splitlines()[0].removeprefix('## ')}): see its report above")
    return report, label


def committed(*paths: str) -> str:
    """HEAD's commit, when `paths` are as HEAD has them: a version names the commit that made it."""
    changed = subprocess.run(["git", "status", "--porcelain", "--", *paths], capture_output=True, text=True)
    if changed.returncode != 0:
        raise Refused(f"git cannot tell whether {', '.join(paths)} are committed: {changed.stderr.strip()}")
    if changed.stdout.strip():
        raise Refused(f"{', '.join(paths)} differ from HEAD: commit them first, so that the version names "
                      "the commit that made its model")
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def promote(params) -> str:
    """Register (or find) the version for the current model and move the alias to it; returns a summary."""
    paths, name, alias = params.paths, params.promote.model_name, params.promote.alias
    uri = runs.connect()
    refused = registry.registration_refused(uri, name)
    if refused is not None:
        raise Refused(refused)
    report, label = gate_report(params)
    commit = committed("dvc.lock", str(paths.test_metrics), "params.yaml")
    card = read_json(paths.model_card, produced_by="train")
    weights.load_model(card, paths.model, paths.model_card)  # the weights are the card's, or DataError
    run_id = runs.training_run(params.tracking.experiment, card["weights_sha256"])
    if run_id is None:
        raise Refused(f"{uri} holds no run that trained {paths.model} (weights.sha256 {card['weights_sha256'][:12]}…): "
                      "run `make repro` against this store first (evaluate records a pulled model's run)")

    found = registry.version_of(name, card["weights_sha256"])
    if found is not None:
        before = registry.alias_version(name, alias)
        registry.move_alias(name, alias, found.version)
        moved = "already pointed at it" if before == str(found.version) else f"moved from version {before} to it"
        return f"{name} version {found.version} already holds these weights: no new version; @{alias} {moved}"

    from mnistcnn.serving import classifier  # noqa: PLC0415 (only when there is a model to log)

    metrics = read_json(paths.test_metrics, produced_by="evaluate")
    validation = read_json(paths.train_metrics, produced_by="train").get("val_accuracy")
    with runs.run(params.tracking.experiment, stage="promote", run_id=run_id):
        model_uri = classifier.log_served_model(paths.model, paths.model_card)
    made = record.record(params.train, card["dataset_digest"])
    tags = {"git.commit": commit, **made.tags(), runs.WEIGHTS_TAG: card["weights_sha256"],
            "test.accuracy": metrics["accuracy"], "param_count": made.params, "macs": made.macs,
            "gate": f"PASS against {label}", **({"val.accuracy": validation} if validation is not None else {})}
    version = registry.register(name, model_uri, run_id, tags, description=report)
    registry.move_alias(name, alias, version.version)
    return (f"{name} version {version.version}: {card['model']}, test accuracy {metrics['accuracy']:.2%}, "
            f"commit {commit[:7]}; @{alias} now points at it ({uri})")


def main() -> None:
    print(f"promote: {promote(config.load())}")


if __name__ == "__main__":
    cli.run(main, user_errors=(Refused,))

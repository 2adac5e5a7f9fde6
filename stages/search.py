"""search: the best compact CNN under a budget, by an Optuna study over params.yaml's search space.

    python -m stages.search [--trials N] [--study NAME] [--storage URL] [-S key=value ...]

`make search SEARCH_ARGS="..."`. Each trial is fitted to the parameter budget (or, still
over it, never trained), trains as the train stage does, on the training images less the
held-out ones, reports its validation accuracy at every scoring (the pruner stops the
hopeless), goes on to more seeds while it ranks among the best (search.race), and is
logged as a child run of the study's run in the `<experiment>-search` MLflow experiment.
Without --storage ($SEARCH_STORAGE) the study lives in studies/optuna.db; with the URL
`make server` prints, every worker on every machine joins the same study. Run it again
to continue a study. At the end the winner (the best mean over the most seeds) is written
to recipes/<study>.yaml: `make exp RECIPE=<study>` runs it through the pipeline, where
evaluate scores the test set once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml
from optuna.trial import TrialState

# torch and MLflow (mnist, reproducible, study_runs, tracking) are imported once the params and the
# storage are checked: seconds on a busy machine, and a storage that does not answer fails first.
from mnistcnn import cli
from mnistcnn.outputs import atomic_path, read_json
from mnistcnn.params import config
from mnistcnn.params.config import ParamsError
from mnistcnn.search import objective, search, studies


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.search", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, help="trials this worker runs (default: search.trials)")
    parser.add_argument("--study", help="the study's name (default: search.study)")
    parser.add_argument("--storage", default=os.environ.get("SEARCH_STORAGE"),
                        help="an Optuna storage URL, e.g. the PostgreSQL `make server` prints "
                             "(default: $SEARCH_STORAGE, else sqlite:///studies/optuna.db)")
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml value, as `dvc exp run -S` takes it (repeatable)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    if args.trials is not None and args.trials < 0:
        raise ParamsError(f"--trials = {args.trials}: must be an integer >= 0")
    return args


def load_data(params, device) -> objective.Data:
    """The training images, split as the train stage splits them; the test file is never opened."""
    from mnistcnn.data import mnist  # noqa: PLC0415
    provenance = read_json(params.paths.provenance, produced_by="download")
    data = mnist.load_split(params.paths.train_data, "train", provenance, params.paths.provenance)
    (images, labels), held_out = mnist.train_and_validation(data, params.train.validation, device)
    if held_out is None:
        raise ParamsError("train.validation.size = 0: the search chooses on held-out images; hold some out")
    return objective.Data(images, labels, held_out, provenance["digest"])


def chosen_on(trial) -> str:
    """`validation accuracy 0.9901 ± 0.0004 (n 3, seeds 0-2)`: what a complete trial was chosen on."""
    if search.seeds(trial) == 1:
        return f"validation accuracy {trial.value:.4f} (one seed)"
    from mnistcnn.training import replicates  # noqa: PLC0415
    seeds = trial.user_attrs["seed_accuracies"]
    summary, first = replicates.summarize([accuracy for _, accuracy in seeds]), seeds[0][0]
    return (f"validation accuracy {summary.mean:.4f} ± {summary.sd:.4f} "
            f"(n {summary.n}, seeds {first}-{first + summary.n - 1})")


def write_recipe(path: Path, study: str, best, storage: str) -> None:
    """The best trial's train section as a recipe, at as many replicates as it was chosen on (or its
    section's, if more), with a header saying where it came from and what it was chosen on."""
    where = studies.redact(storage).replace(f"sqlite:///{Path.cwd().resolve()}/", "sqlite:///")  # no home paths
    train = best.user_attrs["train"]
    train = {**train, "replicates": max(train["replicates"], search.seeds(best))}
    header = (f"# The best trial of study {study!r} (trial {best.number}), chosen on its {chosen_on(best)}\n"
              f"# after {train['epochs']} epoch(s), {best.user_attrs['param_count']:,} parameters. "
              f"Written by `python -m stages.search` from {where}.\n"
              f"# Run it as a DVC experiment (evaluate scores the test set at its {train['replicates']} seeds): "
              f"make exp RECIPE={study}\n")
    with atomic_path(path) as staged:
        staged.write_text(header + yaml.safe_dump({"train": train}, sort_keys=False))


def report(trial, started: float) -> str:
    from mnistcnn.search import study_runs  # noqa: PLC0415
    outcome = study_runs.outcome(trial)
    value = chosen_on(trial) if trial.state == TrialState.COMPLETE else ""  # a pruned trial's value: its last report
    curve = trial.user_attrs.get("val_curve") or [{}]
    if not value and "accuracy" in curve[-1]:
        value = f"validation accuracy {curve[-1]['accuracy']:.4f} at epoch {curve[-1]['epoch']:.2f}"
    count = trial.user_attrs.get("param_count")
    size = f"{count:,} parameters" if count is not None else "not built"
    if trial.user_attrs.get("fitted"):
        size += f" (channels {trial.user_attrs['fitted']} to fit)"
    return f"search: trial {trial.number} {outcome}: {', '.join(filter(None, [value, size]))} " \
           f"({time.monotonic() - started:.0f} s into this worker)"


def main() -> int:
    with search.quiet():
        return search_study(arguments())


class Records:
    """Where this worker logs trials: under the study's parent run, each with the tags every trial's run
    gets (the machine, the dataset). Also logs the trials other workers left when they died."""

    def __init__(self, experiment: str, study: str, parent: str, tags: dict, started: float):
        self.experiment, self.study, self.parent, self.tags, self.started = experiment, study, parent, tags, started

    def trial(self, study, trial, ended_by: str = "") -> None:
        from mnistcnn.search import study_runs  # noqa: PLC0415
        study_runs.log_trial(self.experiment, self.parent, self.study, trial,
                             {**self.tags, **({"trial.ended_by": ended_by} if ended_by else {})})
        if not ended_by:
            print(report(trial, self.started), file=sys.stderr)

    def stale(self, study, trial) -> None:
        self.trial(study, trial, "its worker stopped beating")
        print(f"search: trial {trial.number} failed: its worker stopped beating; queued again", file=sys.stderr)


def search_study(args: argparse.Namespace) -> int:
    """Open (or join) the study, run this worker's trials, then record the study and its winner."""
    started = time.monotonic()
    params = config.with_overrides(args.params, args.overrides)
    settings, name = params.search, args.study or params.search.study
    space = search.check(params, args.params)  # every bad value, and an unmeetable budget, before any trial
    url = studies.storage_url(args.storage, Path.cwd())

    def stale(study, trial) -> None:  # Optuna calls it as a trial starts, when `records` is there
        records.stale(study, trial)

    study = search.open_study(name, studies.open_storage(url, settings.heartbeat, stale), settings, space)
    from mnistcnn.search import study_runs  # noqa: PLC0415 (now: see the imports)
    from mnistcnn.tracking import runs  # noqa: PLC0415
    from mnistcnn.training import engine, reproducible  # noqa: PLC0415

    runs.connect()
    reproducible.configure(params.train.threads, params.train.kernels)  # before any tensor work, as train
    device = engine.pick_device(params.train.device)
    data = load_data(params, device)
    records = Records(params.tracking.experiment, name, study_runs.parent_run(params.tracking.experiment, name,
                                                                               studies.redact(url)),
                      {**reproducible.environment(device, params.train.threads),
                       "dataset.digest": data.dataset_digest}, started)
    trials = settings.trials if args.trials is None else args.trials
    print(f"search: study {name!r} in {studies.redact(url)}: {len(study.trials)} trial(s) so far; this worker runs "
          f"{trials} on {device}, {data.sizes[0]:,} images, {data.sizes[1]:,} held out; "
          f"budget {settings.max_params:,} parameters, {settings.epochs} epoch(s)", file=sys.stderr)
    return run_trials(study, objective.objective(space, settings, data, device), trials, records,
                      settings.heartbeat, url)


def run_trials(study, run_trial, trials: int, records: Records, heartbeat, url: str) -> int:
    """This worker's trials; on Ctrl-C the one running is failed and queued again, the study drawn."""
    from mnistcnn.search import study_runs  # noqa: PLC0415
    running = []

    def this_worker(trial) -> float:
        running[:] = [trial.number]
        return run_trial(trial)

    try:
        study.optimize(this_worker, n_trials=trials, callbacks=[records.trial], catch=(ParamsError,),
                       gc_after_trial=False)
    except KeyboardInterrupt:
        interrupted = [t for t in study.get_trials(deepcopy=False) if t.number in running and t.state.is_finished()]
        for trial in interrupted:
            records.trial(study, trial, "interrupted")
            studies.retry(study, trial, heartbeat)
        study_runs.log_study(records.parent, study, search.best(study))
        numbers = ", ".join(str(t.number) for t in interrupted)
        print(f"search: interrupted{f'; trial {numbers} failed and is queued again' if numbers else ''}. "
              "Continue the study with the same command", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    return finish(study, records.study, records.parent, url)


def finish(study, name: str, parent: str, url: str) -> int:
    """Draw the study on its parent run; write the winner's recipe and say how to run it."""
    from mnistcnn.search import study_runs  # noqa: PLC0415
    best = search.best(study)
    drawn = study_runs.log_study(parent, study, best)
    if best is None:
        print(f"search: no trial of study {name!r} completed yet: no recipe written", file=sys.stderr)
        return 0
    recipe = Path("recipes") / f"{name}.yaml"
    write_recipe(recipe, name, best, url)
    print(f"search: best trial {best.number}, {chosen_on(best)}, "
          f"{best.user_attrs['param_count']:,} parameters: written to {recipe}\n"
          f"  figures on the study's run ({', '.join(drawn) or 'none yet'}): {parent}\n"
          f"  run it through the pipeline (test accuracy, gate): make exp RECIPE={name}")
    return 0


if __name__ == "__main__":
    cli.run(main, user_errors=(studies.SearchError,))

"""make bench-tls: what the team server's TLS costs a search trial and a logged run.

    python -m benchmarks.tls [--rounds 30] [--stage-rounds 3]      (as root: network namespaces)

Two team servers on one test host (a network namespace: tests/hosts.py): one bound to the host's
network address, so TLS on both its ports (MLflow over HTTPS, PostgreSQL behind its TLS front),
and one on the host's loopback, in clear. The clients run on that host too, so the two paths
differ only in TLS: the same kernel, no wire. Alternating, so a slow spell hits both alike:

- a trial's storage traffic: what a worker's trial asks of the study storage (a new trial, four
  scorings, two user attributes, its end), through PostgreSQL's TLS front and to PostgreSQL directly;
- a logged run: a run created, 20 params, 4 curves of 25 points, a 100 KB artifact, the run ended,
  over HTTPS and over HTTP;
- the train stage end to end (`python -m stages.train`, real MNIST, one seed), logging to each.

Needs `make repro` (the data) first. Writes benchmarks/tls.json, with the machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
import yaml

from mnistcnn.search import studies
from mnistcnn.team import access
from mnistcnn.training import engine
from tests.hosts import Host, network

ROOT = Path(__file__).resolve().parents[1]
PORTS = {"tls": (5001, 5003), "plain": (5011, 5013)}


def start(host: Host, folder: Path, kind: str) -> dict:
    """A team server on `host`: on its address (TLS) or its loopback (plain); what a client needs."""
    address = host.address if kind == "tls" else "127.0.0.1"
    port, study_port = PORTS[kind]
    host.run([sys.executable, "-m", "stages.tracking_server", "start", "--folder", str(folder), "--host", address,
              "--port", str(port), "--study-port", str(study_port),
              *(["--allowed-hosts", f"{address}:{port}"] if kind == "tls" else [])], cwd=ROOT)
    study = (folder / "search_storage.url").read_text().strip()
    ca = folder / "tls/ca.crt"
    return {"url": f"{'https' if kind == 'tls' else 'http'}://{address}:{port}", "folder": folder,
            "storage": study + (f"&sslrootcert={ca}" if kind == "tls" else ""),
            "env": {**access.credentials(folder, access.ADMIN),
                    **({"MLFLOW_TRACKING_SERVER_CERT_PATH": str(ca)} if kind == "tls" else {})}}


def trial_traffic(storage: optuna.storages.RDBStorage, study: str) -> float:
    """Seconds for one trial's storage traffic, as a worker's trial makes it."""
    began = time.perf_counter()
    loaded = optuna.load_study(study_name=study, storage=storage)
    trial = loaded.ask()
    trial.suggest_float("lr", 1e-4, 0.05, log=True)
    for step in range(4):
        trial.report(0.9 + step / 100, step)
    trial.set_user_attr("worker", "bench")
    trial.set_user_attr("val_curve", [0.9, 0.91, 0.92, 0.93])
    loaded.tell(trial, 0.93)
    return time.perf_counter() - began


def logged_run(client: mlflow.MlflowClient, experiment: str, artifact: Path) -> float:
    """Seconds for a run the size of a train stage's logging, made through MLflow's client."""
    began = time.perf_counter()
    run = client.create_run(client.get_experiment_by_name(experiment).experiment_id).info.run_id
    client.log_batch(run, params=[mlflow.entities.Param(f"p{i}", str(i)) for i in range(20)])
    for curve in ("train/loss", "train/accuracy", "val/loss", "val/accuracy"):
        client.log_batch(run, metrics=[mlflow.entities.Metric(curve, 1 / (step + 1), 0, step) for step in range(25)])
    client.log_artifact(run, str(artifact))
    client.set_terminated(run)
    return time.perf_counter() - began


def alternate(rounds: int, measure: dict) -> dict[str, list[float]]:
    times = {kind: [] for kind in measure}
    for _ in range(rounds):
        for kind, function in measure.items():
            times[kind].append(function())
    return times


def summary(times: dict[str, list[float]]) -> dict:
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    return {"median_s": medians, "tls_minus_plain_s": medians["tls"] - medians["plain"],
            "ratio": medians["tls"] / medians["plain"], "n": len(times["tls"])}


def scratch_clone(work: Path) -> Path:
    """The code, params (one seed) and data the train stage reads, in a folder of its own."""
    clone = work / "clone"
    for part in ("stages", "mnistcnn"):
        shutil.copytree(ROOT / part, clone / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data", clone / "data", ignore=shutil.ignore_patterns("raw"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["replicates"] = 1
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return clone


def stage_seconds(host: Host, clone: Path, server: dict) -> float:
    env = {**os.environ, **server["env"], "MLFLOW_TRACKING_URI": server["url"]}
    began = time.perf_counter()
    host.run([sys.executable, "-m", "stages.train"], cwd=clone, env=env)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tls", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--stage-rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mnistcnn-bench-tls-"))
    (work / "artifact.bin").write_bytes(os.urandom(100_000))
    with network("server") as hosts:
        host = hosts["server"]
        servers = {kind: start(host, work / kind, kind) for kind in PORTS}
        try:
            def storage(kind: str) -> optuna.storages.RDBStorage:
                opened = optuna.storages.RDBStorage(studies.storage_url(servers[kind]["storage"], None))
                optuna.create_study(study_name="bench", storage=opened, load_if_exists=True)
                return opened

            storages = host.call(lambda: {kind: storage(kind) for kind in PORTS})
            trials = host.call(alternate, args.rounds, {kind: (lambda k=kind: trial_traffic(storages[k], "bench"))
                                                        for kind in PORTS})

            def client(kind: str) -> mlflow.MlflowClient:
                os.environ.update(servers[kind]["env"])  # the login MLflow's client sends
                return mlflow.MlflowClient(servers[kind]["url"])

            host.call(lambda: [client(kind).create_experiment("bench") for kind in PORTS])

            def runs(kind: str) -> float:
                return logged_run(client(kind), "bench", work / "artifact.bin")

            logged = host.call(alternate, args.rounds, {kind: (lambda k=kind: runs(k)) for kind in PORTS})
            clone = scratch_clone(work)
            stage = alternate(args.stage_rounds, {kind: (lambda k=kind: stage_seconds(host, clone, servers[k]))
                                                  for kind in PORTS})
        finally:
            for kind in PORTS:
                host.run([sys.executable, "-m", "stages.tracking_server", "stop", "--folder", str(work / kind)],
                         cwd=ROOT, check=False)
    report = {"machine": {"cpu": engine.cpu_name(), "cores": os.cpu_count()},
              "trial_storage_traffic": summary(trials), "logged_run": summary(logged), "train_stage": summary(stage)}
    (ROOT / "benchmarks/tls.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['machine']['cpu']}: medians, TLS against plain, on one host")
    for name in ("trial_storage_traffic", "logged_run", "train_stage"):
        part = report[name]
        tls_ms, plain_ms = (part["median_s"][kind] * 1000 for kind in ("tls", "plain"))
        print(f"  {name:22} {tls_ms:9.1f} ms against {plain_ms:9.1f} ms "
              f"({part['tls_minus_plain_s'] * 1000:+.1f} ms, x{part['ratio']:.2f}, n {part['n']})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

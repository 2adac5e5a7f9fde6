#!/usr/bin/env bash
# The team section's measurements, repeatable: the train stage logging to the tracking server
# against the SQLite default (alternating, N times each), and a teammate's clone restoring a
# pushed model against training it from scratch. Real MNIST from $MNIST_MIRROR; scratch in $1.
#   MNIST_MIRROR=../shared/datasets/mnist benchmarks/team.sh /tmp/team-bench
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:?usage: benchmarks/team.sh SCRATCH_FOLDER}
N=${N:-3}
export PATH="$ROOT/.venv/bin:$PATH" MNIST_MIRROR=$(realpath "${MNIST_MIRROR:?set MNIST_MIRROR}")
rm -rf "$WORK" && mkdir -p "$WORK"
seconds() { local t0=$(date +%s.%N); "$@" >>"$WORK/log" 2>&1; echo "$(date +%s.%N) - $t0" | bc; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

git clone -q "$ROOT" "$WORK/a" && cd "$WORK/a"
dvc remote add --default team "$WORK/remote" >>"$WORK/log"
dvc repro >>"$WORK/log" 2>&1
dvc push --run-cache >>"$WORK/log" 2>&1
python -m stages.tracking_server start --folder "$WORK/server" --port "${PORT:-5099}" >>"$WORK/log" 2>&1
url=http://127.0.0.1:${PORT:-5099}
sqlite=() server=()
for i in $(seq "$N"); do  # alternating, so drifting load falls on both alike
  sqlite+=("$(seconds python -m stages.train)")
  server+=("$(MLFLOW_TRACKING_URI=$url seconds python -m stages.train)")
done
MLFLOW_TRACKING_URI=$url dvc repro -f evaluate >>"$WORK/log" 2>&1  # one complete run on the server
echo "train stage, SQLite store:    ${sqlite[*]} s, median $(median "${sqlite[@]}")"
echo "train stage, tracking server: ${server[*]} s, median $(median "${server[@]}")"

pulled=() scratch=()
for i in $(seq "$N"); do
  rm -rf "$WORK/b" "$WORK/c"
  git clone -q "$WORK/a" "$WORK/b" && git clone -q "$WORK/a" "$WORK/c"
  (cd "$WORK/b" && dvc remote add --local --default team "$WORK/remote" >/dev/null)
  pulled+=("$(cd "$WORK/b" && seconds sh -c 'dvc pull --run-cache && dvc repro')")
  scratch+=("$(cd "$WORK/c" && seconds dvc repro)")
  test ! -e "$WORK/b/mlruns/mlflow.db" || { echo "clone B ran a stage (it logged a run)"; exit 1; }
done
echo "clone B, make pull + make repro: ${pulled[*]} s, median $(median "${pulled[@]}")"
echo "clone C, make repro from scratch: ${scratch[*]} s, median $(median "${scratch[@]}")"
echo "server left running for a screenshot at $url: python -m stages.tracking_server stop --folder $WORK/server"

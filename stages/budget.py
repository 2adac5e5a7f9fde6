"""budget: what the model params.yaml selects costs, and whether it fits, before any training.

`python -m stages.budget [-S key=value ...]` (`make budget BUDGET_ARGS="-S ..."`) reads
params.yaml with `dvc exp run -S`'s overrides over it (on a copy: params.yaml is left
as it is), counts the parameters and multiply-adds per image of the selected model,
named or declared, and compares the count with gate.max_params: exit 0 when it fits,
1 when it does not or a value is bad. No torch is imported: it answers in a fraction
of the second a training run takes to start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnistcnn import cli
from mnistcnn.model import arch
from mnistcnn.params import config


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.budget", description=__doc__.splitlines()[0])
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml value, as `dvc exp run -S` takes it (repeatable)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = config.with_overrides(args.params, args.overrides)
    declared, budget = params.train.architecture, params.gate.max_params
    count, macs = arch.count_parameters(declared), arch.count_macs(declared)
    print(f"budget: {params.train.model}: {count:,} parameters, {macs / 1e6:.2f}M multiply-adds per image\n"
          f"  {arch.describe(declared)}")
    if count > budget:
        print(f"budget: {count:,} parameters is over gate.max_params = {budget:,} by {count - budget:,}: "
              "this model would not pass the gate", file=sys.stderr)
        return cli.EXIT_ERROR
    print(f"budget: fits gate.max_params = {budget:,} ({budget - count:,} to spare)")
    return 0


if __name__ == "__main__":
    cli.run(main)

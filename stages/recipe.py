"""Print a recipe as `dvc exp run` flags: `dvc exp run $(python -m stages.recipe tiny10k)`.

`make exp RECIPE=name` runs it. The recipe (recipes/<name>.yaml, see
mnistcnn.params.recipes) is validated over params.yaml first, so a bad recipe names
its key and what is allowed, and no experiment starts.
"""

from __future__ import annotations

import sys

from mnistcnn import cli
from mnistcnn.params import recipes
from mnistcnn.params.config import ParamsError


def main() -> None:
    if len(sys.argv) != 2:
        raise ParamsError("usage: python -m stages.recipe NAME (a file in recipes/, without .yaml)")
    print(" ".join(recipes.flags(recipes.load(sys.argv[1]))))


if __name__ == "__main__":
    cli.run(main)

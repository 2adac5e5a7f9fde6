"""The benchmarks: make bench, bench-e2e, bench-kernels, bench-search, bench-serve."""

import stages  # noqa: F401 (the entry points' process settings: a benchmark times what the stages run)

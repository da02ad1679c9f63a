"""Benchmarks of spikeacc: ``python -m benchmarks [name ...] [options]``.

Each module in MODULES has ``main(argv) -> int`` and writes
benchmarks/results/<name>.json and .md. Adding a benchmark is one line here.
Like ``spikeacc train``, the benchmarks keep freed memory in the process
(``spikeacc.allocator``); every machine line says whether that took effect.
"""
import os

from spikeacc.allocator import keep_freed_memory

KEEPS_FREED_MEMORY = keep_freed_memory()
PROG_ENV = "SPIKEACC_BENCH_PROG"  # ``spikeacc bench`` sets it: the help then names that command
PROG = os.environ.get(PROG_ENV, "python -m benchmarks")

MODULES = [
    "saf_family",
    "single_spike",
    "asf",
    "accuracy",
    "regression",
    "scaling",
    "compiled",
    "peers",
    "floor",
    "nir_consumers",
    "race",
    "reviewers",
    "gpu",
]

"""Benchmarks of spikeacc: ``python -m benchmarks [name ...] [options]``.

Each module in MODULES has ``main(argv) -> int`` and writes
benchmarks/results/<name>.json and .md. Adding a benchmark is one line here.
"""

MODULES = [
    "saf_family",
    "single_spike",
    "asf",
    "accuracy",
]

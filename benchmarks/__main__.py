"""Run the named benchmarks (all of MODULES without names); options go to each one."""
from __future__ import annotations

import argparse
import importlib
import sys

from . import MODULES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__,
        epilog="Other options (--quick, --device, --out, ...) are passed to every benchmark.")
    parser.add_argument("names", nargs="*", metavar="name", help=f"any of: {', '.join(MODULES)}")
    args, rest = parser.parse_known_args(argv)
    unknown = [name for name in args.names if name not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    status = 0
    for name in args.names or MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        status = max(status, module.main(rest))
    return status


if __name__ == "__main__":
    sys.exit(main())

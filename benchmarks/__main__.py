"""Run the named benchmarks (all of MODULES without names); options go to each one.

Results go to a new runs/bench-<UTC time>/ unless --out names a directory; --update-results
writes the committed benchmarks/results/ that the README quotes.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import MODULES, PROG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Other options (--quick, --device, --out, ...) are passed to every benchmark; "
               "each one's options follow with --help.")
    parser.add_argument("names", nargs="*", metavar="name", help=f"any of: {', '.join(MODULES)}")
    parser.add_argument("-h", "--help", action="store_true", help="this help and every named benchmark's options")
    args, rest = parser.parse_known_args(argv)
    unknown = [name for name in args.names if name not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    chosen = [importlib.import_module(f"{__package__}.{name}") for name in args.names or MODULES]
    if args.help:
        print(parser.format_help())
        for module in chosen:
            print(module.build_parser().format_help())
        return 0
    return max(module.main(rest) for module in chosen)


if __name__ == "__main__":
    sys.exit(main())

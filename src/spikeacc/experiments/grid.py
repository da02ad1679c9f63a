"""A sweep's grid: ``spikeacc train`` options whose values are lists.

``--method bptt,saf-f --T 2,4 --tau 1.5,2`` gives the 8 points of the product of the lists,
each a ``spikeacc train`` command; ``--seeds 3`` adds the seeds 0, 1, 2 (``--seed 0,5``
names them). An option whose value is itself a list (``--hidden 16,32``) takes its
alternatives separated by ``/`` (``--hidden 800/400,400``); ``--method-option KEY=V1,V2``
(and the encoder and dataset options) makes KEY an axis. Everything else is passed to
every run as it is.

Every point is read by the train command's own parser and checked as a run would be
(``TrainConfig.validate``, the method built with its options) before anything trains, so
an unknown option, an empty list or a value a method refuses is one line naming the point.
"""
from __future__ import annotations

import argparse
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from .. import methods

LIST_OPTIONS = ("--hidden", "--lr-milestones")  # values that are lists themselves: alternatives split on "/"
KEYED_OPTIONS = ("--method-option", "--encoder-option", "--dataset-option")  # KEY=V1,V2: an axis per KEY
RUN_OPTIONS = ("--out", "--resume")  # the sweep's own business


class RaisingParser(argparse.ArgumentParser):
    """The train parser, its errors raised (the sweep names the point)."""

    def error(self, message: str):
        raise ValueError(message)


def train_parser() -> argparse.ArgumentParser:
    from ..cli import add_train_arguments

    parser = RaisingParser(prog="spikeacc train", add_help=False)
    add_train_arguments(parser)
    return parser


@dataclass
class Grid:
    """The axes (option -> its alternatives, in the order given) and the options every
    point shares (train argv words)."""

    axes: dict[str, list[str]]
    fixed: list[str]

    def points(self) -> list[dict[str, str]]:
        """Every combination of the axes' values, the last axis varying fastest."""
        names = list(self.axes)
        return [dict(zip(names, values)) for values in itertools.product(*self.axes.values())]

    @staticmethod
    def argv(point: dict[str, str]) -> list[str]:
        """The train options of a point."""
        words = []
        for axis, value in point.items():
            option, _, key = axis.partition(":")
            words += [option, f"{key}={value}" if key else value]
        return words


def parse_grid(train_argv: list[str], seeds: int | None) -> Grid:
    """The grid of ``train_argv`` (module docstring); ``seeds`` adds seeds 0..seeds-1."""
    parser = train_parser()
    takes_value = {option: action.nargs != 0 for action in parser._actions for option in action.option_strings}
    axes: dict[str, list[str]] = {}
    fixed: list[str] = []
    words = list(train_argv)
    while words:
        option = words.pop(0)
        option, _, attached = option.partition("=") if option.startswith("--") else (option, "", "")
        if option in RUN_OPTIONS:
            raise ValueError(f"{option} is the sweep's: each point trains in <sweep --out>/trials/<point>, "
                             "and running the same sweep again resumes it")
        if option not in takes_value:
            raise ValueError(f"unknown train option {option!r}")
        if not takes_value[option]:
            fixed.append(option)
            continue
        if not attached and not words:
            raise ValueError(f"{option} needs a value")
        value = attached or words.pop(0)
        _add(option, value, axes, fixed)
    if seeds is not None:
        if "--seed" in axes or "--seed" in fixed:
            raise ValueError("give --seeds N or --seed with its values, not both")
        axes["--seed"] = [str(seed) for seed in range(seeds)]
    return Grid(axes, fixed)


def _add(option: str, value: str, axes: dict[str, list[str]], fixed: list[str]) -> None:
    key, alternatives = "", value
    if option in KEYED_OPTIONS:
        key, sep, alternatives = value.partition("=")
        if not sep:
            raise ValueError(f"{option} expects KEY=VALUE, got {value!r}")
    separator = "/" if option in LIST_OPTIONS else ","
    values = alternatives.split(separator)
    if any(not v.strip() for v in values):
        raise ValueError(f"{option} {value!r}: an empty alternative (values are separated by {separator!r})")
    if len(values) == 1:
        fixed += [option, value]
        return
    axis = f"{option}:{key}" if key else option
    if axis in axes:
        raise ValueError(f"{axis} is given twice")
    axes[axis] = values


def point_name(point: dict[str, str]) -> str:
    """A directory name for a point: 'method=saf-f,T=4,seed=0' made safe."""
    text = ",".join(f"{axis.lstrip('-').replace(':', '.')}={value}" for axis, value in point.items())
    return re.sub(r"[^A-Za-z0-9.,=+-]", "_", text) or "single"


def check_points(grid: Grid, out: Path) -> None:
    """Read and check every point as ``spikeacc train`` would, before anything trains;
    ValueError naming the first point refused."""
    from ..trainer import TrainConfig

    parser = train_parser()
    for point in grid.points():
        argv = [*grid.fixed, *grid.argv(point), "--out", str(out / "trials" / point_name(point))]
        try:
            args = vars(parser.parse_args(argv))
            config = TrainConfig(**args)
            config.validate()
            methods.get(config.method, T=config.T, **dict(config.method_options))
        except ValueError as err:
            where = ", ".join(f"{axis.lstrip('-')}={value}" for axis, value in point.items()) or "the point"
            raise ValueError(f"sweep point {where}: {err}") from None

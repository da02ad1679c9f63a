"""Keyword options given by name (``--method-option KEY=VALUE`` and the like), read as
the type the function taking them declares: ``trainable_decay=off`` is False, ``v_th=abc``
is refused with one line naming the option, the value and what it accepts.

Readable types: bool (true/false, yes/no, on/off, 1/0, any case), int, float (not NaN),
str, None ("null" or "none") and unions of them, e.g. ``float | None``. A value that is
already of its type (options given in Python) passes as it is; an int is a float.
"""
from __future__ import annotations

import inspect
import math
import types
import typing
from typing import Callable, Collection, Iterable

BOOLEAN_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False,
                 "1": True, "0": False}
NONE_WORDS = ("null", "none")


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BOOLEAN_WORDS:
        return BOOLEAN_WORDS[value.strip().lower()]
    raise ValueError


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError
    return int(value)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError
    number = float(value)
    if math.isnan(number):
        raise ValueError
    return number


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError
    return value


def _none(value: object) -> None:
    if value is not None and not (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        raise ValueError


# each readable type: (its reader, what it accepts in words)
READERS: dict[object, tuple[Callable[[object], object], str]] = {
    bool: (_boolean, "one of " + ", ".join(BOOLEAN_WORDS)),
    int: (_integer, "an integer"),
    float: (_number, "a number"),
    str: (_text, "text"),
    type(None): (_none, "null"),
}


def alternatives(kind: object) -> tuple[object, ...]:
    """The types of a union (``float | None`` -> (float, None)), or (kind,)."""
    return typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)


def declared_types(function: Callable, skip: Collection[str] = ()) -> dict[str, object]:
    """The keyword parameters of ``function`` (of a class: its constructor's), but those in
    ``skip``, with their annotated types, in the signature's order."""
    hints = typing.get_type_hints(function.__init__ if isinstance(function, type) else function)
    return {name: hints[name] for name, parameter in inspect.signature(function).parameters.items()
            if name not in skip and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)}


def read_value(kind: object, value: object, label: str) -> object:
    """``value`` as type ``kind``; ValueError "<label>=<value>: expected ..." if it is none of it."""
    choices = alternatives(kind)
    for choice in sorted(choices, key=lambda choice: choice is not type(None)):  # "none" is None first
        try:
            return READERS[choice][0](value)
        except ValueError:
            continue
    raise ValueError(f"{label}={value!r}: expected {' or '.join(READERS[choice][1] for choice in choices)}")


def read_options(declared: dict[str, object], options: Iterable[tuple[str, object]], what: str
                 ) -> dict[str, object]:
    """``options`` (name, value) read as ``declared`` types them; ValueError (one line
    starting with ``what``) for a name not declared or a value not of its type."""
    read = {}
    for name, value in options:
        if name not in declared:
            raise ValueError(f"{what} has no option {name}; its options: {', '.join(declared) or 'none'}")
        read[name] = read_value(declared[name], value, f"{what} option {name}")
    return read

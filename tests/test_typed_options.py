"""Options given by name are read as the type their function declares (spikeacc.typed_options)."""
from __future__ import annotations

import re

import pytest

from spikeacc import data, encoders, methods
from spikeacc.typed_options import READERS, alternatives, declared_types, read_options, read_value


def every_declared_type():
    for name in methods.names():
        method_class, fixed = methods._entry(name)
        yield from declared_types(method_class, skip=("T", *fixed)).items()
    for encoder in encoders.ENCODERS.values():
        yield from declared_types(encoder, skip=("T",)).items()
    for loader in data.DATASETS.values():
        yield from declared_types(loader, skip=("data_dir",)).items()


def test_every_option_of_every_method_encoder_and_dataset_has_a_readable_type():
    for name, kind in every_declared_type():
        assert all(choice in READERS for choice in alternatives(kind)), (name, kind)


@pytest.mark.parametrize("kind, text, value", [
    (bool, "off", False), (bool, " YES ", True), (bool, True, True),
    (int, "3", 3), (int, 4, 4),
    (float, "1e-3", 1e-3), (float, 2, 2.0), (float, "inf", float("inf")),
    (str, "ce", "ce"), (str, "none", "none"),
    (float | None, "null", None), (float | None, "None", None), (float | None, None, None), (float | None, "0.5", 0.5),
])
def test_values_read_as_their_type(kind, text, value):
    read = read_value(kind, text, "x")
    assert read == value and type(read) is type(value)


@pytest.mark.parametrize("kind, value, expected", [
    (bool, "maybe", "one of true, false, yes, no, on, off, 1, 0"), (bool, 1, "one of true"),
    (int, "1.5", "an integer"), (int, True, "an integer"),
    (float, "abc", "a number"), (float, "nan", "a number"), (float, [1], "a number"),
    (str, 5, "text"), (int | None, "x", "an integer or null"),
])
def test_values_not_of_their_type_are_refused_naming_what_is_accepted(kind, value, expected):
    with pytest.raises(ValueError, match=f"^{re.escape(f'opt={value!r}')}: expected {expected}"):
        read_value(kind, value, "opt")


def test_unknown_option_lists_the_declared_ones():
    with pytest.raises(ValueError, match=r"^thing has no option c; its options: a, b$"):
        read_options({"a": int, "b": bool}, [("a", "1"), ("c", "2")], "thing")
    assert read_options({"a": int, "b": bool}, [("a", "1"), ("b", "no")], "thing") == {"a": 1, "b": False}


def test_methods_encoders_and_datasets_read_their_options():
    assert methods.get("single-spike", T=2, trainable_decay="off").trainable_decay is False
    assert methods.get("saf-f", T=2, static_once="false").static_once is False
    assert encoders.get("latency", 4, x_silent="null").x_silent is None
    assert data.read_options("shd", [("binary", "on"), ("max_time", "1")]) == {"binary": True, "max_time": 1.0}
    with pytest.raises(ValueError, match="method 'ottt-o' has no option variant"):
        methods.get("ottt-o", T=2, variant="a")  # the name fixes it

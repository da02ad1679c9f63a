"""Which neuron settings each training method runs: the neuron counterpart of the op table
(``spikeacc.graph.ops``). A method runs exactly what its derivation is exact for and
refuses the rest before computing anything, with one line naming the module, the
setting, the method and why. BPTT and ``spiking_inference`` run every setting; ASF-BP,
single-spike and Blocks run their own neurons at the neurons' places, whatever their
settings.

``FEATURES`` are the settings that differ from spikeacc's default LIF (``neurons/lif.py``);
``REFUSED[rule][feature]`` says why the methods of ``rule`` (``Method.neuron_rule``)
cannot run it. ``markdown_table()`` is the README's table.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..graph import Program
from ..neurons.lif import LIF


def _tensor_valued(neuron: LIF) -> bool:
    return not neuron.learnable and not neuron.dynamics().fixed


FEATURES: dict[str, tuple[str, Callable[[LIF], bool]]] = {
    "hard reset": ('`reset="hard"` (SpikingJelly\'s default, snnTorch "zero")', lambda n: n.reset == "hard"),
    "late subtraction": ('`reset="subtract_late"` (snnTorch\'s default)', lambda n: n.reset == "subtract_late"),
    "snnTorch's immediate reset": ('`reset="subtract_snntorch"` (snnTorch `reset_delay=False`)',
                                   lambda n: n.reset == "subtract_snntorch"),
    "no reset": ('`reset="none"`', lambda n: n.reset == "none"),
    "input decay": ("`decay_input=True` (SpikingJelly's default)", lambda n: n.decay_input),
    "no leak": ("`IF` / `tau=math.inf`", lambda n: not isinstance(n.lam, torch.Tensor) and n.lam == 1.0),
    "firing on >": ("`strict=True` (snnTorch, NIR)", lambda n: n.strict),
    "learnable tau": ("`learn_tau` (PLIF), `learn_beta`", lambda n: n.leak_kind == "plif" or "beta" in n.learnable),
    "learnable threshold": ("`learn_v_th`", lambda n: "threshold" in n.learnable),
    "per-neuron values": ("tensor `beta` or `v_th`", _tensor_valued),
}


_NO_TEMPORAL = "it trains weights only and drops temporal gradients, so {what} would never get a gradient"
_ONE_LEAK = "it keeps one leaky sum per leak value, so a layer needs one tau and one threshold"
_SUBTRACTION = ("its derivation needs the membrane to be the leaky sum of the inputs minus V_th per spike "
                "(a subtraction reset)")
_RECHECK = "the threshold there depends on the membrane left after the last reset, which no leaky sum holds"
_OWN = "it runs its own neurons in place of the network's, so {what} would never train"

REFUSED: dict[str, dict[str, str]] = {
    "bptt": {},
    "ottt": {"hard reset": _SUBTRACTION, "snnTorch's immediate reset": _RECHECK,
             "learnable tau": _NO_TEMPORAL.format(what="a learnable tau"),
             "learnable threshold": _NO_TEMPORAL.format(what="a learnable threshold"),
             "per-neuron values": _ONE_LEAK},
    "saf": {"hard reset": _SUBTRACTION, "snnTorch's immediate reset": _RECHECK,
            "learnable tau": _NO_TEMPORAL.format(what="a learnable tau"),
            "learnable threshold": _NO_TEMPORAL.format(what="a learnable threshold"),
            "per-neuron values": _ONE_LEAK},
    "sr": {**{feature: "its rate mapping clamp(I / V_th, 0, 1) is derived for the subtraction before the leak"
              for feature in ("hard reset", "late subtraction", "snnTorch's immediate reset", "no reset")},
           "learnable tau": _NO_TEMPORAL.format(what="a learnable tau"),
           "learnable threshold": _NO_TEMPORAL.format(what="a learnable threshold"),
           "per-neuron values": _ONE_LEAK},
    "own": {"learnable tau": _OWN.format(what="a learnable tau"),
            "learnable threshold": _OWN.format(what="a learnable threshold")},
}
RULE_METHODS = {"bptt": "BPTT", "ottt": "OTTT-O/A", "saf": "SAF-E/F", "sr": "SR",
                "own": "ASF-BP, single-spike, Blocks"}


def features(neuron: LIF) -> list[str]:
    """The non-default settings of a neuron (keys of ``FEATURES``)."""
    return [name for name, (_, present) in FEATURES.items() if present(neuron)]


def check(program: Program, method: str, rule: str) -> None:
    """ValueError (one line) for the first neuron whose settings the methods of ``rule`` do not run."""
    refused = REFUSED[rule]
    for site in program.sites:
        for feature in features(site.module):
            if feature in refused:
                raise ValueError(f"method {method!r} cannot run neuron '{site.name}' "
                                 f"({type(site.module).__name__}, {feature}: {FEATURES[feature][0]}): "
                                 f"{refused[feature]}; bptt runs every neuron setting")


def markdown_table() -> str:
    """Methods x neuron settings: yes, no, or "own" (the method's own neurons take the place)."""
    header = "| neuron setting | " + " | ".join(RULE_METHODS.values()) + " |"
    lines = [header, "|---|" + "---|" * len(RULE_METHODS)]
    for name, (label, _) in FEATURES.items():
        cells = ["no" if name in REFUSED[rule] else ("own neurons" if rule == "own" else "yes")
                 for rule in RULE_METHODS]
        lines.append(f"| {name}: {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

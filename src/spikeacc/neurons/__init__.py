"""Neuron models: each model in one module (the LIF family in ``lif.py``, its leak-free
member in ``if_neuron.py``, the single-spike and Blocks neurons in theirs)."""
from .if_neuron import IF
from .lif import LIF, accumulation_weight
from .surrogate import SURROGATES, spike

__all__ = ["IF", "LIF", "SURROGATES", "accumulation_weight", "spike"]

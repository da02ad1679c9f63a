"""Neuron models: each model in one module."""
from .lif import LIF, accumulation_weight
from .surrogate import SURROGATES, spike

__all__ = ["LIF", "SURROGATES", "accumulation_weight", "spike"]

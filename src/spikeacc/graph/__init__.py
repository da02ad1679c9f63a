"""A user's network read as a spiking graph: tracing (``trace.py``), the op table
(``ops.py``) and the program the methods run (``program.py``)."""
from .ops import IDENTITY, Bias, observe
from .program import DATA, INPUT, OP, SITE, CallContext, Pass, Program, Site, of
from .trace import NEURON_TYPES, GraphError

__all__ = ["DATA", "IDENTITY", "INPUT", "NEURON_TYPES", "OP", "SITE", "Bias", "CallContext",
           "GraphError", "Pass", "Program", "Site", "observe", "of"]

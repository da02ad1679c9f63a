"""NIR (Neuromorphic Intermediate Representation): spikeacc networks to NIR graphs and
back; needs the ``nir`` package (``pip install 'spikeacc[nir]'``).

``export.py`` writes a network (one NIR node per op, ``neurons.py`` for the neurons),
``load.py`` reads a graph into a network every method trains. Consumers (``CONSUMERS``):
snnTorch's importer reads a graph with dt = 1e-4, Norse's with the dt it is given; both
apply NIR's per-sample Flatten dims to the tensor they are given, so run them on one
unbatched sample at a time.
"""
try:
    import nir  # noqa: F401
except ImportError as err:  # the optional extra
    raise ImportError("NIR export and import need the 'nir' package: pip install 'spikeacc[nir]'") from err

from .export import CONSUMERS, export, save
from .load import NIRNetwork, load

__all__ = ["CONSUMERS", "NIRNetwork", "export", "load", "save"]

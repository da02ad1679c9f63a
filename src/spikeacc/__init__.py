"""spikeacc: train spiking neural networks at close to the cost of an ordinary network."""
from . import methods
from .models import MLP, ConvNet, SpikingNet
from .neurons import LIF

__version__ = "0.1.0"
__all__ = ["LIF", "MLP", "ConvNet", "SpikingNet", "methods", "__version__"]

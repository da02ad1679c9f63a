"""spikeacc: train spiking neural networks at close to the cost of an ordinary network."""
from . import methods
from .models import MLP, ConvNet
from .neurons import IF, LIF

__version__ = "0.1.0"
__all__ = ["IF", "LIF", "MLP", "ConvNet", "methods", "__version__"]

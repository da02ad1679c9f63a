"""spikeacc: train spiking neural networks at close to the cost of an ordinary network."""
__version__ = "0.1.0"

from . import methods  # noqa: E402
from .interop.convert import convert  # noqa: E402
from .models import MLP, ConvNet  # noqa: E402
from .neurons import IF, LIF  # noqa: E402

__all__ = ["IF", "LIF", "MLP", "ConvNet", "convert", "load_run", "methods", "__version__"]


def __getattr__(name: str):
    """``spikeacc.load_run`` imports the trainer's side (datasets, encoders) only when used."""
    if name == "load_run":
        from .run_dir import load_run
        return load_run
    raise AttributeError(f"module 'spikeacc' has no attribute {name!r}")

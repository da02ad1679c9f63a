"""Other libraries' formats, one file per library, each mapping to and from spikeacc's
core (the neuron settings of ``spikeacc.neurons``, the op table of ``spikeacc.graph``):
``nir.py`` (NIR graphs: export, import), ``spikingjelly.py`` and ``snntorch.py``
(their networks, read by ``convert``)."""

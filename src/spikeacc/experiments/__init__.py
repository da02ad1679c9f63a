"""Experiments: drivers of runs (they call the trainer, never the other way round).
``sweep.py`` trains a grid of ``spikeacc train`` options on Optuna (``grid.py`` reads the
grid), ``summary.py`` reports it from the run directories."""

"""A ``spikeacc train`` run read back from its directory: ``run = spikeacc.load_run(out)``.

``run.config`` is the run's settings (as metrics.json records them), ``run.net`` the trained
network (the last finished epoch), ``run.method`` the configured method with its fitted
state (e.g. ASF-BP's k), ``run.history`` one record per finished epoch, and
``run.test_set()`` the test inputs as the method receives them (encoded) with their
labels, so that

    methods.spiking_inference(run.net, x, run.config["T"])

is the deployed network's prediction. The network and method are rebuilt from the
checkpoint alone; the dataset is read only when ``test_set`` is called.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CHECKPOINT, read_checkpoint
from .data import DataSplit
from .encoders import Encoder
from .methods import Method
from .trainer import TrainConfig, batches, build_model, load_data, subset_indices


@dataclass
class Run:
    """A finished or stopped run (module docstring)."""

    directory: Path
    config: dict
    net: nn.Module
    method: Method
    history: list[dict]
    _data: tuple[DataSplit, Encoder] | None = field(default=None, repr=False)

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_record(self.config)

    def test_set(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): the run's test subset, x encoded as the method receives it (a random
        encoder, e.g. Poisson, draws with ``seed``), on the network's device."""
        if self._data is None:
            self._data = load_data(self.train_config)
        split, encoder = self._data
        config = self.train_config
        indices = subset_indices(len(split.test), config.limit_test, config.seed + 1)  # as the trainer tested
        x, y = next(batches(split.test, indices, len(indices)))
        device = next(self.net.parameters()).device
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return encoder(x.to(device)), y.to(device)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", data_dir: str | None = None) -> Run:
    """The run in ``run_dir`` (its directory, or its checkpoint.pt); ``data_dir`` replaces
    the data directory the run was trained with. ValueError (one line) for a directory
    without a readable checkpoint or weights that do not fit the network its settings build."""
    path = Path(run_dir)
    path = path / CHECKPOINT if path.is_dir() else path
    state = read_checkpoint(path, device, what="reading the run")
    record = dict(state["config"])
    if data_dir is not None:
        record["data_dir"] = str(data_dir)
    config = TrainConfig.from_record(record)
    method, net = build_model(config, tuple(state["sample_shape"]), state["n_classes"], torch.device(device))
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(f"reading the run: the weights in {path} do not fit model {config.model!r} "
                         f"({str(err).strip().splitlines()[0]})") from None
    if state.get("method") is not None:  # e.g. ASF-BP's fitted k
        method.load_state_dict(state["method"])
    net.eval()
    return Run(path.parent, config.record(), net, method, list(state["history"]))

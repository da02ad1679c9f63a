"""Figures of a run: training curves and a spike raster (matplotlib, Agg backend)."""
from __future__ import annotations

import math
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from torch import nn  # noqa: E402

from . import graph  # noqa: E402
from .graph import CallContext  # noqa: E402
from .methods import LIF_METHODS, Method  # noqa: E402
from .methods.base import Inputs, lif_forward  # noqa: E402

RASTER_ROWS = 400  # most image rows in a raster


def plot_curves(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> None:
    """Loss (left) and train/test accuracy (right) per epoch, from Trainer.history."""
    epochs = [record["epoch"] for record in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.6))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["test_acc"] for r in history], "s-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_comparison(test_acc: dict[str, Sequence[float]], path: str | os.PathLike, title: str = "") -> None:
    """Test accuracy per epoch of several runs, one line per run (labels are the keys)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, accuracies in test_acc.items():
        ax.plot(range(1, len(accuracies) + 1), [100 * a for a in accuracies], "o-", label=label)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_raster(spikes: torch.Tensor, path: str | os.PathLike, title: str = "",
                layer_sizes: Sequence[int] = ()) -> None:
    """Spike raster of one sample: spikes [T, N] (0/1) drawn as a time x neuron image,
    black where a neuron fired. Above ``RASTER_ROWS`` neurons, each image row shows a
    group of neighbouring neurons, grey by the fraction that fired.
    ``layer_sizes`` (summing to N) draws a line between the layers."""
    if spikes.dim() != 2:
        raise ValueError(f"plot_raster needs spikes [T, N], got shape {tuple(spikes.shape)}")
    T, N = spikes.shape
    group = math.ceil(N / RASTER_ROWS)
    image = spikes.detach().cpu().float().T  # [N, T]
    image = F.pad(image, (0, 0, 0, -N % group)).reshape(-1, group, T).mean(1)  # [N / group, T]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.imshow(image.numpy(), aspect="auto", cmap="Greys", vmin=0, vmax=1, origin="lower",
              interpolation="nearest", extent=(0.5, T + 0.5, -0.5, group * image.shape[0] - 0.5))
    edge = 0
    for layer, size in enumerate(layer_sizes, 1):
        if edge:
            ax.axhline(edge - 0.5, color="tab:red", lw=0.8)
        ax.annotate(f"layer {layer}", (1.01, (edge + size / 2) / max(N, 1)), xycoords="axes fraction",
                    rotation=90, va="center", color="tab:red")
        edge += size
    ax.set(xlim=(0.5, T + 0.5), ylim=(-0.5, N - 0.5), xlabel="time step t", ylabel="neuron",
           title=title or f"{int(spikes.sum())} spikes, {N} neurons, T = {T}")
    if group > 1:
        ax.set_ylabel(f"neuron ({group} per row, grey = fraction firing)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def sample_spikes(net: nn.Module, method: Method, x: torch.Tensor) -> list[torch.Tensor] | None:
    """Spikes of every neuron site of the LIF network for one encoded sample x ([1, ...]
    or [T, 1, ...]): per site [T, N_l]. None when ``method`` does not train that network."""
    if not isinstance(method, LIF_METHODS):
        return None
    program = graph.of(net)
    inputs = Inputs(x, method.T, net, program)
    spikes, _ = lif_forward(program, inputs, CallContext(inputs.batch))
    return [s.reshape(s.shape[0], -1) for s in spikes]  # [T, 1, ...] -> [T, N_l]


def save_raster(net: nn.Module, method: Method, x: torch.Tensor, path: str | os.PathLike,
                title: str = "") -> bool:
    """Raster of all neuron sites for one encoded sample; False (nothing written) for
    methods that are not LIF-based."""
    layers = sample_spikes(net, method, x)
    if not layers:
        return False
    plot_raster(torch.cat(layers, dim=1), path, title, [s.shape[1] for s in layers])
    return True

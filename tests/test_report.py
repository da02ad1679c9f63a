"""Figures: curves and raster PNGs, and the raster's spikes agree with spiking inference."""
from __future__ import annotations

import pytest
import torch

from spikeacc import methods
from spikeacc.methods import Method, spiking_inference
from spikeacc.models import MLP
from spikeacc.report import plot_comparison, plot_curves, plot_raster, sample_spikes, save_raster

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_curves_and_raster_pngs(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "train_acc": 0.5 + e / 10, "test_acc": 0.4 + e / 10}
               for e in (1, 2, 3)]
    plot_curves(history, tmp_path / "curves.png", "title")
    plot_raster((torch.rand(6, 1000) < 0.3).float(), tmp_path / "raster.png", layer_sizes=[600, 400])
    for name in ("curves.png", "raster.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        plot_raster(torch.zeros(6), tmp_path / "bad.png")


def test_raster_spikes_are_the_spiking_network_s():
    torch.manual_seed(0)
    net = MLP(16, [12, 8], 3)
    x = torch.rand(1, 16) * 3
    layers = sample_spikes(net, methods.get("saf-f", T=5), x)
    assert [tuple(s.shape) for s in layers] == [(5, 12), (5, 8)]
    counts = spiking_inference(net, x, T=5).spike_counts
    assert [float(s.sum()) for s in layers] == [float(c[0]) for c in counts]


def test_no_raster_for_methods_not_on_the_lif_network(tmp_path):
    class Other(Method):
        name = "other"

    assert sample_spikes(MLP(4, [3], 2), Other(T=2), torch.rand(1, 4)) is None
    assert not save_raster(MLP(4, [3], 2), Other(T=2), torch.rand(1, 4), tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()


def test_plot_comparison_writes_a_png(tmp_path):
    path = tmp_path / "compare.png"
    plot_comparison({"saf-f": [0.5, 0.7], "bptt": [0.4, 0.8]}, path, "title")
    assert path.read_bytes()[:8] == PNG_MAGIC

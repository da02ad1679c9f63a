"""Latency encoders: known pixel values map to known spike times, one spike at most."""
import pytest
import torch

from spikeacc.encoders import Latency, LatencyLog
from spikeacc.latency import encode_linear, encode_log


def spike_times(spikes):
    """[T, B, ...] -> first spike step per element, -1 where none: [B, ...]."""
    fired = spikes.sum(0) > 0
    return torch.where(fired, spikes.argmax(0), torch.full_like(fired, -1, dtype=torch.long))


def test_linear_known_times():
    x = torch.tensor([[1.0, 0.5, 0.25, 0.0, 0.75, 0.3]], dtype=torch.float64)
    spikes = encode_linear(x, 11)
    assert spikes.shape == (11, 1, 6)
    # (1 - x) * 10 = 0, 5, 7.5 -> 8 (half to even), silent, 2.5 -> 2, 7
    assert spike_times(spikes).tolist() == [[0, 5, 8, -1, 2, 7]]
    assert spikes.sum(0).max() == 1


def test_linear_silent_threshold_and_images():
    x = torch.tensor([0.0, 0.05, 0.2, 1.0]).view(1, 1, 2, 2)  # [B, C, H, W]
    spikes = Latency(5, x_silent=0.1)(x)
    assert spikes.shape == (5, 1, 1, 2, 2)
    assert spike_times(spikes).flatten().tolist() == [-1, -1, 3, 0]  # 0.8 * 4 = 3.2 -> 3


def test_the_authors_linear_code_truncates_and_lets_black_spike_last():
    x = torch.tensor([[1.0, 0.5, 0.25, 0.0, 0.75, 0.125]], dtype=torch.float64)
    spikes = Latency(11, x_silent=None, rounding="floor")(x)
    # floor((1 - x) * 10) = 0, 5, 7 (not 8), 10 = T - 1 for black, 2, 8 (not 9)
    assert spike_times(spikes).tolist() == [[0, 5, 7, 10, 2, 8]]
    levels = (torch.arange(1, 256, dtype=torch.float32) / 255).view(1, -1)  # non-black 8-bit grey levels
    later = spike_times(encode_linear(levels, 16, None, "floor")) != spike_times(encode_linear(levels, 16))
    assert int(later.sum()) == 129  # the count the docstring states


def test_log_known_times():
    x = torch.tensor([1.0, 0.1, 10 ** -0.2, 10 ** -1.6, 0.01, 0.0], dtype=torch.float64).view(1, -1)
    spikes = LatencyLog(11)(x)  # t = 10 ln x / ln 0.01 = -5 log10(x)
    assert spike_times(spikes).tolist() == [[0, 5, 1, 8, -1, -1]]
    assert spikes.dtype == torch.float64


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode_linear(torch.tensor([[1.5]]), 4)
    with pytest.raises(ValueError, match="positive integer"):
        Latency(0)
    with pytest.raises(ValueError, match="x_silent"):
        encode_log(torch.tensor([[0.5]]), 4, x_silent=0.0)

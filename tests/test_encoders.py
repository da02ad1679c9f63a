"""Encoders: shapes, values and errors."""
from __future__ import annotations

import pytest
import torch

from spikeacc import encoders


def test_direct_is_identity():
    x = torch.rand(4, 1, 8, 8)
    assert encoders.get("direct", 6)(x) is x


def test_poisson_spikes_have_rate_x():
    torch.manual_seed(0)
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0]])  # [B=1, 4]
    spikes = encoders.get("poisson", 4000)(x)  # [T, B, 4]
    assert spikes.shape == (4000, 1, 4)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    assert spikes[:, 0, 0].sum() == 0 and spikes[:, 0, 3].sum() == 4000
    rates = spikes.mean(0)[0]
    assert abs(rates[1] - 0.25) < 0.03 and abs(rates[2] - 0.5) < 0.03


def test_poisson_is_seeded_by_global_rng():
    x = torch.rand(3, 5)
    torch.manual_seed(1)
    first = encoders.get("poisson", 3)(x)
    torch.manual_seed(1)
    assert torch.equal(first, encoders.get("poisson", 3)(x))


def test_poisson_rejects_rates_above_one():
    with pytest.raises(ValueError, match=r"scale \* \|x\| <= 1"):
        encoders.get("poisson", 2)(torch.tensor([[1.5]]))
    encoders.get("poisson", 2, scale=0.5)(torch.tensor([[1.5]]))  # rate 0.75


def test_poisson_with_the_asf_authors_scale_fires_at_half_the_rate_with_the_sign():
    torch.manual_seed(2)
    x = torch.tensor([[1.0, 0.5, -1.0, 0.0]])
    spikes = encoders.get("poisson", 8000, scale=0.5)(x)  # [T, B, 4]
    rate = spikes.mean(0)
    torch.testing.assert_close(rate, torch.tensor([[0.5, 0.25, -0.5, 0.0]]), rtol=0, atol=0.03)
    assert set(spikes.unique().tolist()) == {-1.0, 0.0, 1.0}


def test_unknown_encoder_option_is_a_value_error():
    with pytest.raises(ValueError, match="encoder 'poisson'.*rounding"):
        encoders.get("poisson", 4, rounding="floor")
    with pytest.raises(ValueError, match="rounding must be one of"):
        encoders.get("latency", 4, rounding="ceil")


def test_frames_moves_time_first():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # [B, T, N]
    out = encoders.get("frames", 3)(x)
    assert out.shape == (3, 2, 4)
    assert torch.equal(out[1, 0], x[0, 1])
    with pytest.raises(ValueError, match="T=5"):
        encoders.get("frames", 5)(x)


@pytest.mark.parametrize("T", [0, -1, 2.5])
def test_bad_T_and_unknown_name(T):
    with pytest.raises(ValueError, match="positive integer"):
        encoders.get("direct", T)
    with pytest.raises(ValueError, match="unknown encoder 'morse'.*direct"):
        encoders.get("morse", 4)


@pytest.mark.parametrize("name, x_silent", [("latency", 2.0), ("latency", 1.0), ("latency", -0.5),
                                            ("latency-log", 0.0), ("latency-log", 1.5)])
def test_latency_x_silent_out_of_range_is_refused_when_built(name, x_silent):
    with pytest.raises(ValueError, match=f"0 <=? x_silent < 1.*got {x_silent}"):
        encoders.get(name, 4, x_silent=x_silent)

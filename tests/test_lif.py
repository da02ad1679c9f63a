"""``lif_window`` (the LIF loop with a hand-written backward, what BPTT and spiking
inference run on a CPU) against ``lif_steps``, the step-by-step autograd reference:
spikes bit for bit, gradients within 1e-12 relative (float64)."""
import pytest
import torch

from spikeacc.neurons.lif import lif_steps, lif_window
from spikeacc.neurons.surrogate import SURROGATES

LAM, V_TH, ALPHA = 0.6, 0.8, 3.0
TOLERANCE = 1e-12  # relative, float64


def currents(steps: int, shape=(5, 6)) -> torch.Tensor:
    """[steps, *shape] currents around the threshold: some neurons fire, some twice in a row."""
    generator = torch.Generator().manual_seed(steps)
    return (torch.randn(steps, *shape, generator=generator, dtype=torch.float64) * 1.5 + 0.6).requires_grad_()


def reference(current: torch.Tensor, steps: int, surrogate: str, detach_reset: bool) -> torch.Tensor:
    return lif_steps(current.expand(steps, *current.shape[1:]), LAM, V_TH, surrogate, ALPHA, detach_reset)


def relative_error(value: torch.Tensor, expected: torch.Tensor) -> float:
    return ((value - expected).abs().max() / expected.abs().max()).item()


# (current steps, T): per-step currents; one current for every step, below T = 8 (every
# membrane saved), from T = 8 on (segments recomputed), T not a multiple of the segment
@pytest.mark.parametrize("current_steps, T", [(7, 7), (1, 1), (1, 7), (1, 8), (1, 17), (1, 32)])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_window_equals_the_step_by_step_reference(current_steps, T, detach_reset, surrogate):
    current = currents(current_steps)
    upstream = torch.randn(T, 5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = reference(current, T, surrogate, detach_reset)
    (expected_grad,) = torch.autograd.grad((expected * upstream).sum(), current)
    spikes = lif_window(current, T, LAM, V_TH, surrogate, ALPHA, detach_reset)
    (grad,) = torch.autograd.grad((spikes * upstream).sum(), current)
    assert 0 < expected.mean() < 1  # the check sees both outcomes
    assert torch.equal(spikes, expected)
    assert relative_error(grad, expected_grad) <= TOLERANCE


def test_a_shared_current_saves_nothing_over_time():
    """From T = 8 on, a one-step current saves u every ~sqrt(T) steps and nothing [T, B, ...]:
    the spikes the next layer holds are freed once it has read them."""
    T, current = 32, currents(1)
    spikes = lif_window(current, T, LAM, V_TH, "sigmoid", ALPHA, False)
    saved = [tuple(t.shape) for t in spikes.grad_fn.saved_tensors if t is not None]
    assert saved == [(5, 5, 6), (1, 5, 6)]  # u at t = 5, 11, ..., 29 (segments of 6), the current


def test_a_second_backward_with_retain_graph_gives_the_same_gradient():
    current = currents(1)
    spikes = lif_window(current, 16, LAM, V_TH, "atan", ALPHA, False)
    loss = (spikes * torch.arange(16.0, dtype=torch.float64).view(16, 1, 1)).sum()
    (first,) = torch.autograd.grad(loss, current, retain_graph=True)
    (second,) = torch.autograd.grad(loss, current)
    assert torch.equal(first, second)


def test_without_a_gradient_nothing_is_saved():
    current = currents(9)
    with torch.no_grad():
        spikes = lif_window(current, 9, LAM, V_TH, "sigmoid", ALPHA, False)
    assert spikes.grad_fn is None
    assert torch.equal(spikes, reference(current, 9, "sigmoid", False).detach())

"""Each surrogate's backward equals the derivative of its smooth primitive."""
import pytest
import torch

from spikeacc.neurons import LIF, SURROGATES, spike
from spikeacc.neurons.surrogate import derivative, primitive


class _SmoothSpike(torch.autograd.Function):
    """Forward: the primitive; backward: the closed-form derivative used by ``spike``.
    gradcheck compares that backward with finite differences of the forward."""

    @staticmethod
    def forward(ctx, x, name, alpha):
        ctx.save_for_backward(x)
        ctx.name, ctx.alpha = name, alpha
        return primitive(name, x, alpha)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * derivative(ctx.name, x, ctx.alpha), None, None


@pytest.mark.parametrize("name", SURROGATES)
@pytest.mark.parametrize("alpha", [0.5, 4.0])
def test_closed_form_derivative_passes_gradcheck(name, alpha):
    # keep away from the kinks of rect (|x| = 0.5/alpha) and fast_sigmoid (x = 0)
    x = torch.linspace(-2.0, 2.0, 41, dtype=torch.float64)
    x = x[((x.abs() - 0.5 / alpha).abs() > 1e-3) & (x.abs() > 1e-3)].requires_grad_()
    assert torch.autograd.gradcheck(lambda v: _SmoothSpike.apply(v, name, alpha), (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", SURROGATES)
def test_spike_forward_is_heaviside_and_backward_is_surrogate(name):
    x = torch.tensor([-1.0, -0.1, 0.0, 0.1, 1.0], dtype=torch.float64, requires_grad=True)
    out = spike(x, name, 4.0)
    assert out.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]  # H(0) = 1: fires at the threshold
    out.sum().backward()
    torch.testing.assert_close(x.grad, derivative(name, x.detach(), 4.0), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_spike_without_a_graph_is_the_same_heaviside(dtype):
    x = torch.tensor([-1.0, -1e-30, 0.0, 1e-30, 2.0], dtype=dtype)
    with_graph = spike(x.clone().requires_grad_())
    assert with_graph.grad_fn is not None
    for plain in (spike(x), spike(x.clone().requires_grad_()).detach()):
        assert plain.dtype == dtype and torch.equal(plain, with_graph.detach())
    with torch.no_grad():
        plain = spike(x.clone().requires_grad_())
    assert plain.grad_fn is None and torch.equal(plain, torch.tensor([0, 0, 1, 1, 1], dtype=dtype))


def test_sigmoid_surrogate_matches_methods_note_formula():
    x = torch.randn(100, dtype=torch.float64)
    sig = torch.sigmoid(4.0 * x)
    torch.testing.assert_close(derivative("sigmoid", x, 4.0), 4.0 * sig * (1 - sig), rtol=0, atol=1e-15)


@pytest.mark.parametrize("kwargs", [dict(tau=1.0), dict(v_th=0.0), dict(surrogate="nope"), dict(alpha=-1.0)])
def test_bad_neuron_hyperparameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        LIF(**kwargs)

"""Products that keep their spike input as bits (graph/spike_products.py) against the
modules themselves: forward values bit for bit, gradients within 1e-12 (float64; the
weight gradient is summed a chunk of samples at a time, another order than one product),
with the C packing (``kernels.cpu``) and with tensor operations (``kernels.mode = "off"``);
BPTT with and without ``spike_bits`` gives the same loss and gradients, and the products
save 1/32 of their input."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spikeacc import LIF, MLP, kernels, methods
from spikeacc.graph import spike_products
from spikeacc.graph.spike_products import pack, spike_product, unpack

TOLERANCE = 1e-12


@pytest.fixture(params=["auto", "off"])
def packing(request, monkeypatch):
    """Each test packs in C and with tensor operations; chunks of 64 elements, so that the
    weight gradients are summed over several chunks, the last one short."""
    monkeypatch.setattr(kernels, "mode", request.param)
    monkeypatch.setattr(spike_products, "CHUNK_BYTES", 64 * 8)
    return request.param


def spikes(*shape: int, dtype=torch.float64) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=dtype) < 0.3).to(dtype)


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 1000, 1003])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bits_hold_the_spikes(numel, dtype, packing):
    x = spikes(numel, dtype=dtype)
    bits = pack(x)
    assert bits.dtype == torch.uint8 and bits.numel() == (numel + 7) // 8
    assert torch.equal(unpack(bits, torch.empty_like(x), 0), x)
    if numel > 16:
        assert torch.equal(unpack(bits, torch.empty(numel - 16, dtype=dtype), 8), x[8:numel - 8])


def assert_same_product(module: nn.Module, x: torch.Tensor) -> None:
    """spike_product against the module: output exactly, every gradient to TOLERANCE, and
    only bits (and the weight) saved."""
    weights = torch.randn(module(x).shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    leaf, reference_leaf = x.clone().requires_grad_(), x.clone().requires_grad_()
    twin = copy.deepcopy(module)
    out, expected = spike_product(module, leaf), twin(reference_leaf)
    assert torch.equal(out, expected)
    saved = [t for t in out.grad_fn.saved_tensors if t.dtype == torch.uint8]
    assert len(saved) == 1 and saved[0].numel() == (x.numel() + 7) // 8
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(leaf.grad, reference_leaf.grad, rtol=TOLERANCE, atol=TOLERANCE)
    for p, p_ref in zip(module.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.parametrize("shape", [(37, 20), (5, 7, 20)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_on_bits_equals_the_linear(shape, bias, packing):
    torch.manual_seed(0)
    assert_same_product(nn.Linear(20, 6, bias=bias).double(), spikes(*shape))


@pytest.mark.parametrize("conv, shape", [
    (lambda: nn.Conv1d(3, 4, 3, padding=1), (9, 3, 11)),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), (9, 3, 8, 7)),
    (lambda: nn.Conv2d(4, 6, 3, dilation=2, groups=2), (5, 4, 9, 9)),
    (lambda: nn.Conv3d(2, 3, 2), (3, 2, 4, 4, 4))])
def test_conv_on_bits_equals_the_conv(conv, shape, packing):
    torch.manual_seed(0)
    assert_same_product(conv().double(), spikes(*shape))


def test_other_products_run_as_they_are():
    x = spikes(4, 3, 6, 6).requires_grad_()
    for module in (nn.Conv2d(3, 2, 3, padding="same"), nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect")):
        assert type(spike_product(module.double(), x).grad_fn).__name__ == "ConvolutionBackward0"


class SpikingVGG(nn.Sequential):
    """conv -> LIF -> conv -> LIF -> flatten -> linear: both convs after the first read spikes."""

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(1, 3, 3, padding=1), LIF(), nn.Conv2d(3, 4, 3, padding=1), LIF(tau=3.0),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
        self.sample_shape = (1, 6, 6)


@pytest.mark.parametrize("model", ["mlp", "vgg"])
def test_bptt_with_spikes_as_bits_equals_bptt_with_floats(model):
    torch.manual_seed(0)
    net = (MLP(12, [9, 7], 5) if model == "mlp" else SpikingVGG()).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.5)
    x = torch.rand(6, *net.sample_shape, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    results = []
    for bits in (True, False):
        copy_ = copy.deepcopy(net)
        loss, logits = methods.get("bptt", T=5, spike_bits=bits).loss_and_grad(copy_, x, y)
        results.append((loss, logits, [p.grad for p in copy_.parameters()]))
    (loss, logits, grads), (loss_ref, logits_ref, grads_ref) = results
    assert torch.equal(loss, loss_ref) and torch.equal(logits, logits_ref)
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        assert grad_ref.abs().sum() > 0
        torch.testing.assert_close(grad, grad_ref, rtol=TOLERANCE, atol=TOLERANCE)

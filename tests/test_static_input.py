"""A static input's input-only ops once per call (CallContext) give what the per-step
path gives (``static_once=False``): loss, logits, every gradient, spikes, and the weights
after optimiser steps, for every method, on a chain and on a residual network whose input
also feeds a later addition. float64; atol 1e-10 (the scaled value c[t] W x and the sum
W (c[t] x) differ by rounding only)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spikeacc import LIF, MLP, methods

ATOL = 1e-10
pytestmark = pytest.mark.usefixtures("float64")


class InputSkip(nn.Module):
    """lif2(conv2(lif1(conv1(x))) + shortcut(x)) -> pool -> readout: the input feeds two
    paths, one of them an addition with spikes (not input-only)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.lif1 = nn.Conv2d(1, 3, 3, padding=1), LIF(tau=3.0)
        self.conv2, self.lif2 = nn.Conv2d(3, 3, 3, padding=1), LIF(v_th=0.8)
        self.shortcut = nn.Conv2d(1, 3, 1)
        self.readout = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 4))
        self.sample_shape = (1, 6, 6)

    def forward(self, x):
        return self.readout(self.lif2(self.conv2(self.lif1(self.conv1(x))) + self.shortcut(x)))


def make(kind: str) -> nn.Module:
    torch.manual_seed(0)
    net = MLP(6, [5, 4], 3).double() if kind == "mlp" else InputSkip().double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.5)
    return net


def run(net, name, static_once, x, y, steps=0):
    net = copy.deepcopy(net)
    method = methods.get(name, T=5, static_once=static_once)
    if steps:
        optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
        for _ in range(steps):
            method.step(net, optimizer, x, y)
        return {n: p.detach() for n, p in net.named_parameters()}, method
    loss, logits = method.loss_and_grad(net, x, y)
    inference = method.infer(net, x)
    return (loss, logits, {n: p.grad for n, p in net.named_parameters()}, inference), method


@pytest.mark.parametrize("kind", ["mlp", "skip"])
@pytest.mark.parametrize("name", methods.names())
def test_once_per_call_equals_every_step(name, kind):
    net = make(kind)
    torch.manual_seed(1)
    x = torch.rand(4, *net.sample_shape, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    (loss, logits, grads, inference), method = run(net, name, True, x, y)
    (loss_ref, logits_ref, grads_ref, inference_ref), _ = run(net, name, False, x, y)
    torch.testing.assert_close(loss, loss_ref, rtol=0, atol=ATOL)
    torch.testing.assert_close(logits, logits_ref, rtol=0, atol=ATOL)
    for param in grads_ref:
        torch.testing.assert_close(grads[param], grads_ref[param], rtol=0, atol=ATOL, msg=param)
    torch.testing.assert_close(inference.logits, inference_ref.logits, rtol=0, atol=ATOL)
    for counts, counts_ref in zip(inference.spike_counts, inference_ref.spike_counts, strict=True):
        assert torch.equal(counts, counts_ref)
    assert sum(c.sum() for c in inference_ref.spike_counts) > 0


@pytest.mark.parametrize("name", ["ottt-o", "ottt-a", "saf-e", "asf"])
def test_weights_after_steps_equal_every_step(name):
    net = make("skip")
    torch.manual_seed(2)
    x, y = torch.rand(4, 1, 6, 6, dtype=torch.float64), torch.tensor([3, 1, 0, 2])
    weights, method = run(net, name, True, x, y, steps=3)
    weights_ref, method_ref = run(net, name, False, x, y, steps=3)
    for param in weights_ref:
        torch.testing.assert_close(weights[param], weights_ref[param], rtol=0, atol=ATOL, msg=param)
    if name == "asf":
        assert [s["k"] for s in method.stats()] == pytest.approx([s["k"] for s in method_ref.stats()], abs=1e-12)


def test_a_sequence_input_is_not_affected():
    net = make("mlp")
    x, y = torch.rand(5, 4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 1])  # [T, B, 6]
    (loss, _, grads, _), _ = run(net, "saf-e", True, x, y)
    (loss_ref, _, grads_ref, _), _ = run(net, "saf-e", False, x, y)
    assert torch.equal(loss, loss_ref) and all(torch.equal(grads[p], grads_ref[p]) for p in grads)

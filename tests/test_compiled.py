"""``compile=True``: the neuron dynamics under torch.compile give the eager results for
every method (spikes exact, gradients within 1e-5), on a chain and on a residual network
with per-layer neurons; a function that fails to compile warns once and runs eagerly.

The suite compiles with the "aot_eager" backend (the graphs torch.compile captures, run
without code generation: fast enough for CI); one test compiles the LIF loop with inductor.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from spikeacc import LIF, MLP, compiling, methods
from spikeacc.methods.saf import saf_fire
from spikeacc.neurons.lif import free_steps, lif_window, neuron_step, window_backward, window_forward
from spikeacc.neurons.blocks import blocks_lif
from spikeacc.neurons.single_spike import single_spike_lif

compiling.BACKEND = "aot_eager"


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.lif1 = nn.Conv2d(1, 3, 3, padding=1), LIF(tau=3.0, surrogate="atan")
        self.conv2, self.lif2 = nn.Conv2d(3, 3, 3, padding=1), LIF(v_th=0.8, detach_reset=True)
        self.readout = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 4))
        self.sample_shape = (1, 6, 6)

    def forward(self, x):
        s1 = self.lif1(self.conv1(x))
        return self.readout(self.lif2(self.conv2(s1) + s1))


def make(kind: str) -> nn.Module:
    torch.manual_seed(0)
    net = MLP(6, [8], 4) if kind == "mlp" else Residual()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.5)
    return net


def run(net, name: str, compile: bool, x, y):
    net = copy.deepcopy(net)
    method = methods.get(name, T=4, compile=compile)
    loss, logits = method.loss_and_grad(net, x, y)
    return loss, logits, {n: p.grad for n, p in net.named_parameters()}, method.infer(net, x)


COMPILED = {"bptt": window_forward, "ottt-o": neuron_step, "ottt-a": neuron_step, "sr": saf_fire, "saf-e": saf_fire,
            "saf-f": saf_fire, "asf": free_steps, "single-spike": single_spike_lif,
            "blocks": blocks_lif}


@pytest.mark.parametrize("kind", ["mlp", "residual"])
@pytest.mark.parametrize("name", methods.names())
def test_compiled_equals_eager(name, kind, monkeypatch):
    net = make(kind)
    torch.manual_seed(1)
    x, y = torch.rand(5, *net.sample_shape), torch.tensor([0, 1, 2, 3, 1])
    requested = []
    real = compiling.compiled
    monkeypatch.setattr(compiling, "compiled", lambda fn: requested.append(fn) or real(fn))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would pass unnoticed otherwise
        loss, logits, grads, inference = run(net, name, True, x, y)
    assert COMPILED[name] in requested  # the method really ran its neurons compiled
    loss_ref, logits_ref, grads_ref, inference_ref = run(net, name, False, x, y)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, logits_ref, rtol=1e-5, atol=1e-5)
    for param in grads_ref:
        torch.testing.assert_close(grads[param], grads_ref[param], rtol=1e-5, atol=1e-5, msg=param)
    for counts, counts_ref in zip(inference.spike_counts, inference_ref.spike_counts, strict=True):
        assert torch.equal(counts, counts_ref)


@pytest.mark.parametrize("current_steps", [6, 1])
def test_the_lif_loop_compiled_by_inductor_equals_eager(current_steps, monkeypatch):
    """Forward and backward of the LIF window, each compiled by inductor (C++ here): spikes
    exact, gradients within 1e-5, for a sequence and a shared (static) current."""
    torch.manual_seed(2)
    current = (torch.rand(current_steps, 16, 32) * 1.5).requires_grad_()
    weights = torch.randn(6, 16, 32)
    monkeypatch.setattr(compiling, "BACKEND", "inductor")
    compiling.compiled.cache_clear()
    requested = []
    real = compiling.compiled
    monkeypatch.setattr(compiling, "compiled", lambda fn: requested.append(fn) or real(fn))
    results = []
    for compiled in (True, False):
        spikes = lif_window(current, 6, LIF(tau=2.0).dynamics(), compiled=compiled)
        (grad,) = torch.autograd.grad((spikes * weights).sum(), current)
        results.append((spikes, grad))
    real.cache_clear()  # the other tests' backend again
    assert requested == [window_forward, window_backward]
    assert torch.equal(results[0][0], results[1][0]) and results[1][0].sum() > 0
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-5)


def test_a_function_that_fails_to_compile_warns_once_and_runs_eagerly():
    def failing_backend(graph_module, example_inputs):
        raise RuntimeError("no code for you")

    def double(x):
        return 2 * x

    fn = compiling._Compiled(double, failing_backend)
    with pytest.warns(RuntimeWarning, match="torch.compile of .*double failed"):
        assert torch.equal(fn(torch.ones(3)), 2 * torch.ones(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(fn(torch.ones(3)), 2 * torch.ones(3))  # eager from now on, no second warning

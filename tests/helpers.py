"""Helpers several test modules share."""
from __future__ import annotations

import torch
import torch.nn.functional as F

ATOL = 1e-10  # float64: agreement to the rounding of a few dozen operations


def grads(net, method, x, y):
    """(loss, logits, {parameter name: gradient}) of one ``loss_and_grad`` from zero gradients."""
    net.zero_grad(set_to_none=True)
    loss, logits = method.loss_and_grad(net, x, y)
    return loss, logits, {n: p.grad.clone() for n, p in net.named_parameters()}


def assert_grads_close(a: dict, b: dict, scale: dict | None = None, atol: float = ATOL) -> None:
    """Same parameters, a[name] == scale[name] * b[name] to ``atol``."""
    assert a.keys() == b.keys()
    for name in a:
        factor = 1.0 if scale is None else scale[name]
        torch.testing.assert_close(a[name], factor * b[name], rtol=0, atol=atol, msg=name)


def assert_same_loss_and_gradients(net, first, second, x, y) -> dict:
    """Two methods give the same loss, logits and gradients (to ATOL); returns the first's
    gradients, checked to be non-zero everywhere."""
    loss_a, logits_a, g_a = grads(net, first, x, y)
    loss_b, logits_b, g_b = grads(net, second, x, y)
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=ATOL)
    torch.testing.assert_close(logits_b, logits_a, rtol=0, atol=ATOL)
    assert_grads_close(g_b, g_a)
    assert all(g.abs().sum() > 0 for g in g_a.values())
    return g_a


def assert_bptt_equals_unroll(net, method_grads, outs, y, T: int) -> None:
    """BPTT's (loss, logits, gradients) against a step-by-step unroll's outputs o[t]:
    L = (1/T) sum_t CE(o[t], y), logits = mean_t o[t], the gradients of L."""
    loss, logits, g = method_grads
    ref_loss = sum(F.cross_entropy(o, y) for o in outs) / T
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=0, atol=ATOL)
    torch.testing.assert_close(logits, torch.stack(outs).mean(0).detach(), rtol=0, atol=ATOL)
    assert_grads_close(g, {n: p.grad for n, p in net.named_parameters()})


def assert_saf_spikes_are_the_lif_networks(net, x, T: int) -> list[torch.Tensor]:
    """SAF-E's forward, step by step, gives exactly the LIF network's spikes and its
    outputs o[t] (to ATOL); returns the LIF network's spikes per site [T, B, ...]."""
    from spikeacc import graph, methods
    from spikeacc.graph import CallContext
    from spikeacc.methods.base import Inputs, lif_forward

    program = graph.of(net)
    inputs = Inputs(x, T, net, program)
    lif_spikes, lif_out = lif_forward(program, inputs, CallContext(inputs.batch))
    saf = methods.get("saf-e", T=T)
    state = saf.start(program)
    with torch.no_grad():
        for t in range(T):
            out, spikes = saf.forward_step(program, CallContext(inputs.batch), inputs, t, state)
            for site, s_saf, s_lif in zip(program.sites, spikes, lif_spikes, strict=True):
                assert torch.equal(s_saf, s_lif[t]), f"{site.name} step {t}"
            torch.testing.assert_close(out, lif_out[t], rtol=0, atol=ATOL)
    return lif_spikes

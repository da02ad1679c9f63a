"""Every method on every neuron setting of the LIF family (methods/rules.py), float64:

* what a method accepts it runs exactly: SAF's forward is the LIF network's, SAF-E's
  gradient equals OTTT-A's, SAF-F (SR surrogate) equals SR, BPTT equals a step-by-step
  unroll (learnable taus and thresholds included), and the SAF-trained weights run
  unchanged in ``spiking_inference``;
* what it does not, it refuses before computing, in one line naming the module, the
  setting, the method and why;
* the README's table is ``rules.markdown_table()``.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from spikeacc import IF, LIF, MLP, methods
from spikeacc.methods import rules
from spikeacc.methods.base import spiking_inference
from spikeacc.neurons.lif import neuron_step

from tests.helpers import (ATOL, assert_bptt_equals_unroll, assert_same_loss_and_gradients,
                           assert_saf_spikes_are_the_lif_networks, grads)

pytestmark = pytest.mark.usefixtures("float64")
README = Path(__file__).resolve().parents[1] / "README.md"

SAF_SETTINGS = {  # what OTTT and SAF run besides the default
    "late subtraction": dict(reset="subtract_late"),
    "no reset": dict(reset="none"),
    "input decay": dict(decay_input=True),
    "no leak": dict(tau=math.inf),
    "firing on >": dict(strict=True),
    "snnTorch default": dict(reset="subtract_late", strict=True, tau=4.0, detach_reset=True),
}
OTHER_SETTINGS = {  # BPTT only
    "hard reset": dict(reset="hard", v_reset=-0.2, decay_input=True),
    "snnTorch's immediate reset": dict(reset="subtract_snntorch", strict=True),
    "learnable tau": dict(tau=3.0, learn_tau=True),
    "learnable beta and threshold": dict(beta=0.7, learn_beta=True, learn_v_th=True),
    "per-neuron values": dict(beta=torch.linspace(0.3, 0.9, 9), v_th=torch.linspace(0.8, 1.2, 9)),
}


def make_mlp(settings: dict, seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    net = MLP(12, [9, 9], 4, neuron=LIF(**settings))
    with torch.no_grad():
        for p in net.parameters():  # weights large enough that every layer spikes
            if p.dim() > 0:  # not the neurons' learnable scalars
                p.mul_(3.0)
    return net


def batch(B: int = 6, seed: int = 1):
    torch.manual_seed(seed)
    return torch.rand(B, 12), torch.randint(0, 4, (B,))


@pytest.mark.parametrize("name", SAF_SETTINGS)
def test_saf_is_exact_for_the_settings_it_runs(name):
    net, T = make_mlp(SAF_SETTINGS[name]), 5
    x, y = batch()
    spikes = assert_saf_spikes_are_the_lif_networks(net, x, T)
    assert all(s.sum() > 0 for s in spikes)
    assert_same_loss_and_gradients(net, methods.get("ottt-a", T=T), methods.get("saf-e", T=T), x, y)
    saf_f = methods.get("saf-f", T=T)
    saf_f.step(net, torch.optim.SGD(net.parameters(), lr=0.5), x, y)
    ours, real = saf_f.infer(net, x), spiking_inference(net, x, T, "weighted")
    torch.testing.assert_close(ours.logits, real.logits, rtol=0, atol=ATOL)
    assert all(torch.equal(a, b) for a, b in zip(ours.spike_counts, real.spike_counts))


@pytest.mark.parametrize("name", ["input decay", "no leak", "firing on >"])
def test_saf_f_with_the_sr_surrogate_equals_spike_representation(name):
    net, T = make_mlp(SAF_SETTINGS[name]), 6
    x, y = batch()
    assert_same_loss_and_gradients(net, methods.get("sr", T=T), methods.get("saf-f", T=T, surrogate="sr"), x, y)


def unroll(net: torch.nn.Sequential, x: torch.Tensor, T: int) -> list[torch.Tensor]:
    """The MLP step by step with ``neuron_step``, autograd through everything: o[t] per step."""
    layers = list(net)
    neurons = [m for m in layers if isinstance(m, LIF)]
    state = {id(n): n.rest_state(torch.zeros(x.shape[0], 9)) for n in neurons}
    outs = []
    for _ in range(T):
        h = layers[0](x)
        for layer in layers[1:]:
            if isinstance(layer, LIF):
                _, spike, v_post = neuron_step(*state[id(layer)], h, layer.dynamics())
                state[id(layer)] = (v_post, spike)
                h = spike
            else:
                h = layer(h)
        outs.append(h)
    return outs


@pytest.mark.parametrize("name", [*SAF_SETTINGS, *OTHER_SETTINGS])
def test_bptt_equals_the_step_by_step_unroll_for_every_setting(name):
    settings = {**SAF_SETTINGS, **OTHER_SETTINGS}[name]
    net, T = make_mlp(settings), 5
    x, y = batch()
    result = grads(net, methods.get("bptt", T=T), x, y)
    net.zero_grad(set_to_none=True)
    assert_bptt_equals_unroll(net, result, unroll(net, x, T), y, T)
    assert all(g.abs().sum() > 0 for g in result[2].values())  # learnable taus and thresholds too


REFUSALS = [  # (method, setting, the feature named)
    ("ottt-a", dict(reset="hard"), "hard reset"), ("ottt-o", dict(learn_tau=True), "learnable tau"),
    ("saf-e", dict(reset="subtract_snntorch"), "snnTorch's immediate reset"),
    ("saf-f", dict(learn_v_th=True), "learnable threshold"),
    ("saf-f", dict(v_th=torch.full((9,), 0.9)), "per-neuron values"),
    ("sr", dict(reset="subtract_late"), "late subtraction"), ("sr", dict(reset="none"), "no reset"),
    ("asf", dict(learn_beta=True, beta=0.5), "learnable tau"),
    ("single-spike", dict(learn_v_th=True), "learnable threshold"),
    ("blocks", dict(learn_tau=True), "learnable tau"),
]


@pytest.mark.parametrize("method, settings, feature", REFUSALS)
def test_a_method_refuses_what_it_is_not_exact_for_in_one_line(method, settings, feature):
    net = make_mlp(settings)
    x, y = batch()
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError) as err:
        methods.get(method, T=3).loss_and_grad(net, x, y)
    message = str(err.value)
    assert "\n" not in message
    assert f"method {method!r} cannot run neuron '2' (LIF, {feature}:" in message
    assert "bptt runs every neuron setting" in message
    assert all(p.grad is None for p in net.parameters())  # nothing was computed
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    methods.get("bptt", T=3).loss_and_grad(net, x, y)  # which BPTT runs


def test_asf_single_spike_and_blocks_run_their_own_neurons_whatever_the_settings():
    net = make_mlp(dict(reset="hard", decay_input=True, strict=True))
    x, y = batch()
    for name in ("asf", "single-spike", "blocks"):
        loss, _ = methods.get(name, T=4).loss_and_grad(net, x, y)
        assert torch.isfinite(loss)


def test_an_if_network_trains_under_every_method():
    torch.manual_seed(0)
    net = MLP(12, [9], 4, neuron=IF(v_th=1.5))
    x, y = batch()
    for name in methods.names():
        loss, _ = methods.get(name, T=4).loss_and_grad(net, x, y)
        assert torch.isfinite(loss), name


def test_the_readme_table_is_the_rules_table():
    assert rules.markdown_table() in README.read_text()


def test_features_name_every_setting_once():
    assert rules.features(LIF()) == []
    assert rules.features(IF(reset="hard", strict=True)) == ["hard reset", "no leak", "firing on >"]
    assert rules.features(LIF(beta=torch.full((3,), 0.5))) == ["per-neuron values"]
    assert rules.features(LIF(learn_beta=True, learn_v_th=True)) == ["learnable tau", "learnable threshold"]
    assert set(rules.REFUSED["bptt"]) == set() and set(rules.FEATURES) >= set().union(*rules.REFUSED.values())

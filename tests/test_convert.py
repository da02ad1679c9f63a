"""``spikeacc.convert`` against the peers' own code, on their own model definitions.

SpikingJelly (float64): spikeacc's BPTT on the converted network gives SpikingJelly's
multi-step BPTT loss and every gradient (relative 1e-10) on ``sew_resnet18`` (default
LIFNode: decay_input, hard reset; and ParametricLIFNode), ``spiking_resnet18`` and
``spiking_vgg11`` (IFNode), and on a single-step network; on the converted
``ottt_spiking_vggws`` (CIFAR shapes, T = 2, batch 2) SAF-E equals OTTT-A and both equal
SpikingJelly's OTTT. snnTorch (float32, its spikes are float32): the tutorials' networks,
every reset_mechanism and reset_delay, learnable beta and threshold: spikeacc's BPTT
gives snnTorch's ``ce_rate_loss`` and every gradient (relative 1e-4). The converted network
holds the original's Parameter objects, in order; what has no counterpart is refused in
one line.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikeacc
from spikeacc import methods
from spikeacc.interop.convert import ConversionError
from spikeacc.methods.base import per_step_ce
from spikeacc.neurons import accumulation_weight

from tests.peers import require

T_BPTT = 4


def relative_errors(net: nn.Module, reference: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: ((p.grad - reference[name]).abs().max() / reference[name].abs().max()).item()
            for name, p in net.named_parameters()}


def assert_same_parameters(original: nn.Module, converted: nn.Module) -> None:
    names = [name for name, _ in original.named_parameters()]
    assert names == [name for name, _ in converted.named_parameters()]
    assert all(a is b for a, b in zip(original.parameters(), converted.parameters(), strict=True))


# --- SpikingJelly --------------------------------------------------------------------------

def spikingjelly_bptt(net: nn.Module, x: torch.Tensor, y: torch.Tensor, T: int) -> tuple[torch.Tensor, dict]:
    """SpikingJelly's own BPTT: its multi-step network on x repeated T times, L = mean_t CE(o[t], y)."""
    functional = require("spikingjelly.activation_based.functional")
    functional.set_step_mode(net, "m")
    loss = per_step_ce(net(x.unsqueeze(0).expand(T, *x.shape)), y)
    loss.backward()
    functional.reset_net(net)
    return loss.detach(), {name: p.grad.clone() for name, p in net.named_parameters()}


def assert_bptt_equals_the_peers(net: nn.Module, x: torch.Tensor, y: torch.Tensor, T: int,
                                 peer: tuple[torch.Tensor, dict], tolerance: float) -> None:
    """spikeacc's BPTT on the converted network gives the peer's loss and every gradient
    (``peer``, computed first) to ``tolerance`` relative, on the same Parameter objects."""
    loss_peer, grads_peer = peer
    converted = spikeacc.convert(net, sample_shape=x.shape[1:])
    assert_same_parameters(net, converted)
    net.zero_grad(set_to_none=True)
    loss, _ = methods.get("bptt", T=T).loss_and_grad(converted, x, y)
    torch.testing.assert_close(loss, loss_peer, rtol=tolerance, atol=0)
    errors = relative_errors(net, grads_peer)
    assert max(errors.values()) < tolerance, errors
    assert all(g.abs().sum() > 0 for g in grads_peer.values())  # every layer active: the check has teeth


def check_bptt(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    assert_bptt_equals_the_peers(net, x, y, T_BPTT, spikingjelly_bptt(net, x, y, T_BPTT), 1e-10)


def resnet_input(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.rand(2, 3, 32, 32) * 3, torch.tensor([1, 5])


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("model, neuron, connect", [("sew_resnet", "LIFNode", "ADD"),
                                                    ("sew_resnet", "ParametricLIFNode", "IAND"),
                                                    ("spiking_resnet", "LIFNode", None)])
def test_bptt_equals_spikingjelly_on_its_resnets(model, neuron, connect):
    zoo = require(f"spikingjelly.activation_based.model.{model}")
    node = getattr(require("spikingjelly.activation_based.neuron"), neuron)
    extra = {"cnf": connect} if connect else {}
    torch.manual_seed(0)
    net = getattr(zoo, f"{model}18")(spiking_neuron=node, num_classes=10, v_threshold=0.3, **extra)
    check_bptt(net, *resnet_input())


@pytest.mark.usefixtures("float64")
def test_bptt_equals_spikingjelly_on_spiking_vgg11_with_if_neurons():
    zoo = require("spikingjelly.activation_based.model.spiking_vgg")
    neuron = require("spikingjelly.activation_based.neuron")
    torch.manual_seed(0)
    net = zoo.spiking_vgg11(spiking_neuron=neuron.IFNode, num_classes=10, v_threshold=0.5).eval()  # no dropout
    with torch.no_grad():
        for layer in net.classifier:  # its N(0, 0.01) classifier would never fire at this size
            if hasattr(layer, "weight"):
                layer.weight.mul_(30.0)
    check_bptt(net, *resnet_input())


@pytest.mark.usefixtures("float64")
def test_bptt_equals_spikingjelly_on_a_single_step_network():
    """Single-step layers and neurons, the PLIF and a soft-reset LIF, its own loop over time."""
    layer = require("spikingjelly.activation_based.layer")
    neuron = require("spikingjelly.activation_based.neuron")
    functional = require("spikingjelly.activation_based.functional")
    surrogate = require("spikingjelly.activation_based.surrogate")
    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(2, 6, 3, padding=1), neuron.ParametricLIFNode(init_tau=3.0, v_threshold=0.5),
                        layer.AvgPool2d(2), layer.Flatten(), layer.Linear(6 * 4 * 4, 12),
                        neuron.LIFNode(tau=4.0, decay_input=False, v_reset=None, surrogate_function=surrogate.ATan()),
                        layer.Linear(12, 3))
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 0:
                p.mul_(3.0)  # every layer fires
    x, y = torch.rand(5, 2, 8, 8) * 2, torch.tensor([0, 1, 2, 0, 1])
    outputs = [net(x) for _ in range(T_BPTT)]
    per_step_ce(torch.stack(outputs), y).backward()
    functional.reset_net(net)
    grads_peer = {name: p.grad.clone() for name, p in net.named_parameters()}
    converted = spikeacc.convert(net)
    net.zero_grad(set_to_none=True)
    methods.get("bptt", T=T_BPTT).loss_and_grad(converted, x, y)
    assert max(relative_errors(net, grads_peer).values()) < 1e-10
    assert all(g.abs().sum() > 0 for g in grads_peer.values())


@pytest.mark.usefixtures("float64")
def test_on_ottt_spiking_vggws_saf_e_equals_ottt_a_equals_spikingjelly_ottt():
    """SpikingJelly's OTTT: one online step per time step, its OTTTSequential fed the image
    and its trace [x, c[t] x] (as spikeacc's OTTT reads a static input), loss CE(o[t], y)/T,
    gradients summed. spikeacc's OTTT gives a bias feeding a neuron the trace of a constant
    input, c[t] = sum_{k<t} lam^k, where SpikingJelly's ReplaceforGrad gives 1, so those
    biases' step-t gradients are weighted by c[t] (methods/ottt.py); everything else is
    compared as it is."""
    zoo = require("spikingjelly.activation_based.model.spiking_vggws_ottt")
    functional = require("spikingjelly.activation_based.functional")
    T = 2
    torch.manual_seed(0)
    net = zoo.ottt_spiking_vggws(num_classes=10)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):  # initialised to 0: biases that matter
                p.uniform_(-0.5, 0.5)
    x, y = torch.rand(2, 3, 32, 32) * 2, torch.tensor([3, 7])
    lam = 0.5  # its OTTTLIFNode's tau = 2
    expected = {name: torch.zeros_like(p) for name, p in net.named_parameters()}
    loss_peer = 0.0
    for t in range(T):
        net.zero_grad(set_to_none=True)
        c_t = accumulation_weight(lam, t + 1)
        loss_t = F.cross_entropy(net([x, c_t * x]), y) / T
        loss_t.backward()
        loss_peer += loss_t.item()
        for name, p in net.named_parameters():
            expected[name] += (c_t if name.startswith("features") and name.endswith("bias") else 1.0) * p.grad
    functional.reset_net(net)
    converted = spikeacc.convert(net, sample_shape=(3, 32, 32))
    assert_same_parameters(net, converted)
    for name in ("ottt-a", "saf-e"):
        net.zero_grad(set_to_none=True)
        loss, _ = methods.get(name, T=T).loss_and_grad(converted, x, y)
        assert loss.item() == pytest.approx(loss_peer, rel=1e-12)
        errors = relative_errors(net, expected)
        assert max(errors.values()) < 1e-10, (name, errors)
    assert all(g.abs().sum() > 0 for g in expected.values())


def test_spikingjelly_defaults_run_under_bptt_and_are_refused_by_saf_in_one_line():
    neuron = require("spikingjelly.activation_based.neuron")
    layer = require("spikingjelly.activation_based.layer")
    net = spikeacc.convert(nn.Sequential(layer.Flatten(), layer.Linear(12, 8), neuron.LIFNode(), layer.Linear(8, 3)))
    assert net[2].reset == "hard" and net[2].decay_input and net[2].v_reset == 0.0
    x, y = torch.rand(4, 12), torch.tensor([0, 1, 2, 0])
    methods.get("bptt", T=3).loss_and_grad(net, x, y)
    with pytest.raises(ValueError, match=r"^method 'saf-f' cannot run neuron '2' \(LIF, hard reset"):
        methods.get("saf-f", T=3).loss_and_grad(net, x, y)


def test_spikingjelly_modules_without_a_counterpart_are_refused_in_one_line():
    neuron = require("spikingjelly.activation_based.neuron")
    layer = require("spikingjelly.activation_based.layer")
    surrogate = require("spikingjelly.activation_based.surrogate")
    cases = {
        "QIFNode": nn.Sequential(layer.Linear(4, 4), neuron.QIFNode()),
        "PiecewiseQuadratic": nn.Sequential(layer.Linear(4, 4),
                                            neuron.LIFNode(surrogate_function=surrogate.PiecewiseQuadratic())),
        "SynapseFilter": nn.Sequential(layer.Linear(4, 4), layer.SynapseFilter(), neuron.IFNode()),
    }
    for culprit, net in cases.items():
        with pytest.raises(ConversionError) as err:
            spikeacc.convert(net)
        assert culprit in str(err.value) and "\n" not in str(err.value)
        assert "module '1" in str(err.value)


# --- snnTorch ----------------------------------------------------------------------------

def tutorial_csnn(snn, surrogate, **leaky) -> nn.Sequential:
    """snnTorch tutorial 6's convolutional network (init_hidden neurons in an nn.Sequential)."""
    grad = surrogate.fast_sigmoid(slope=25)
    return nn.Sequential(nn.Conv2d(1, 12, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True, **leaky),
                         nn.Conv2d(12, 64, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True, **leaky),
                         nn.Flatten(), nn.Linear(64 * 4 * 4, 10),
                         snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True, output=True, **leaky))


def tutorial_mlp(snn, **leaky) -> nn.Sequential:
    """The 784-1000-10 network of snnTorch's tutorial 5 (beta 0.95, its default atan surrogate)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 1000), snn.Leaky(beta=0.95, init_hidden=True, **leaky),
                         nn.Linear(1000, 10), snn.Leaky(beta=0.95, init_hidden=True, output=True, **leaky))


def snntorch_bptt(net: nn.Module, x: torch.Tensor, y: torch.Tensor, T: int) -> tuple[torch.Tensor, dict]:
    """snnTorch's own training step: utils.reset, T calls of the network, ce_rate_loss on its
    outputs (the spikes of an output=True neuron, or a readout layer's values)."""
    utils, loss_fn = require("snntorch.utils"), require("snntorch.functional").ce_rate_loss()
    utils.reset(net)
    outputs = [net(x) for _ in range(T)]
    loss = loss_fn(torch.stack([out[0] if isinstance(out, tuple) else out for out in outputs]), y)
    loss.backward()
    return loss.detach().reshape(()), {name: p.grad.clone() for name, p in net.named_parameters()}


def check_snntorch(net: nn.Module, x: torch.Tensor, y: torch.Tensor, T: int = 6) -> None:
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 0:
                p.mul_(3.0)  # every layer fires
    assert_bptt_equals_the_peers(net, x, y, T, snntorch_bptt(net, x, y, T), 1e-4)  # float32


@pytest.mark.parametrize("reset_mechanism, reset_delay", [("subtract", True), ("subtract", False), ("zero", True),
                                                          ("zero", False), ("none", True)])
def test_bptt_equals_snntorch_on_its_tutorial_csnn(reset_mechanism, reset_delay):
    snn, surrogate = require("snntorch"), require("snntorch.surrogate")
    torch.manual_seed(0)
    net = tutorial_csnn(snn, surrogate, reset_mechanism=reset_mechanism, reset_delay=reset_delay)
    check_snntorch(net, torch.rand(4, 1, 28, 28), torch.tensor([1, 2, 3, 4]))


def test_bptt_equals_snntorch_on_its_tutorial_mlp_with_learnable_beta_and_threshold():
    snn = require("snntorch")
    torch.manual_seed(0)
    net = tutorial_mlp(snn, learn_beta=True, learn_threshold=True)
    check_snntorch(net, torch.rand(8, 1, 28, 28), torch.arange(8) % 10, T=5)
    converted = spikeacc.convert(net)
    assert [name for name, _ in converted[2].named_parameters()] == ["threshold", "beta"]  # snnTorch's order


def test_snntorch_per_neuron_beta_and_sigmoid_surrogate():
    snn, surrogate = require("snntorch"), require("snntorch.surrogate")
    torch.manual_seed(0)
    # slope 5: at its default 25, snnTorch's sigmoid derivative computes exp(25 |x|) / (exp(25 |x|) + 1)^2,
    # inf / inf = NaN in float32 below x = -3.5 (spikeacc's closed form stays finite)
    grad = surrogate.sigmoid(slope=5)
    net = nn.Sequential(nn.Linear(20, 16), snn.Leaky(beta=torch.linspace(0.2, 0.9, 16), spike_grad=grad, init_hidden=True),
                        nn.Linear(16, 4))
    check_snntorch(net, torch.rand(6, 20), torch.tensor([0, 1, 2, 3, 0, 1]))


def test_snntorch_modules_without_a_counterpart_are_refused_in_one_line():
    snn, surrogate = require("snntorch"), require("snntorch.surrogate")

    class Tutorial5(nn.Module):  # state passed through a forward that loops over time
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1, self.fc2 = nn.Linear(4, 4), snn.Leaky(beta=0.9), nn.Linear(4, 2)

        def forward(self, x):
            mem = self.lif1.init_leaky()
            spikes = []
            for _ in range(3):
                spike, mem = self.lif1(self.fc1(x), mem)
                spikes.append(self.fc2(spike))
            return torch.stack(spikes)

    cases = {"init_hidden=False": Tutorial5(),
             "Synaptic": nn.Sequential(nn.Linear(4, 4), snn.Synaptic(alpha=0.9, beta=0.8, init_hidden=True)),
             "triangular": nn.Sequential(nn.Linear(4, 4), snn.Leaky(0.9, spike_grad=surrogate.triangular(),
                                                                     init_hidden=True)),
             "inhibition": nn.Sequential(nn.Linear(4, 4), snn.Leaky(0.9, inhibition=True, init_hidden=True))}
    for culprit, net in cases.items():
        with pytest.raises(ConversionError) as err:
            spikeacc.convert(net)
        assert culprit in str(err.value) and "\n" not in str(err.value), err.value

"""Reading a user's network (spikeacc.graph): what traces, what each method accepts,
and the errors for what it cannot run."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeacc import LIF, MLP, graph, methods
from spikeacc.graph import CallContext, GraphError
from spikeacc.layers import ScaledWSConv2d
from spikeacc.methods.base import Inputs, lif_forward

AFFINE_ONLY = ["ottt-o", "ottt-a", "sr", "saf-e", "saf-f", "asf"]
ANY_OP = ["bptt", "single-spike", "blocks"]


class Branches(nn.Module):
    """Two branches concatenated on channels, a residual addition, functional ops."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.left, self.lif_left = nn.Conv2d(c, c, 3, padding=1), LIF(tau=3.0)
        self.right, self.lif_right = nn.Conv2d(c, c, 1), LIF(v_th=0.7)
        self.mix, self.lif_out = nn.Conv2d(2 * c, c, 1), LIF(surrogate="atan")
        self.skip = nn.Identity()

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        both = torch.cat([self.lif_left(self.left(s)), self.lif_right(self.right(s))], dim=1)
        return self.lif_out(self.mix(both) + 0.5 * self.skip(s))


def branchy_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), LIF(), nn.Dropout(0.2), Branches(4),
        nn.AvgPool2d(2), nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 6)))


@pytest.mark.parametrize("name", methods.names())
def test_every_method_trains_nested_residual_concatenated_network(name):
    net = branchy_net()
    x, y = torch.rand(5, 1, 8, 8) * 2, torch.randint(0, 6, (5,))
    method = methods.get(name, T=3)
    loss, logits = method.loss_and_grad(net, x, y)
    assert torch.isfinite(loss) and logits.shape == (5, 6)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    net.eval()
    inference = method.infer(net, x)
    assert inference.logits.shape == (5, 6) and len(inference.spike_counts) == 4


def test_graph_is_read_once_and_again_when_a_module_is_replaced():
    net = MLP(6, [5], 3)
    program = graph.of(net)
    assert graph.of(net) is program
    net[2] = LIF(tau=4.0)
    assert graph.of(net) is not program
    assert graph.of(net).sites[0].module.tau == 4.0


def test_sites_sources_and_readout_of_the_contract_network():
    net = branchy_net()
    program = graph.of(net)
    assert [s.name for s in program.sites] == ["1", "3.lif_left", "3.lif_right", "3.lif_out"]
    first, left, right, out = program.sites
    assert program.sources_of[left.input] == {first.index}
    assert program.sources_of[out.input] == {left.index, right.index, first.index}  # cat + residual
    assert program.readout_sites() == [out]


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lif = LIF()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow
            x = x * 2
        return self.lif(x)


def test_data_dependent_control_flow_names_module_and_line():
    net = nn.Sequential(nn.Linear(3, 3), DataDependent(), nn.Linear(3, 2))
    with pytest.raises(GraphError) as err:
        methods.get("bptt", T=2).loss_and_grad(net, torch.rand(4, 3), torch.zeros(4, dtype=torch.long))
    message = str(err.value)
    assert "DataDependent '1'" in message and "test_graph.py" in message and "if x.sum() > 0" in message
    assert "\n" not in message


class TwoInputs(nn.Module):
    def forward(self, x, y):
        return x + y


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lif = LIF()

    def forward(self, x):
        return self.lif(x), x


@pytest.mark.parametrize("net, message", [
    (TwoInputs(), "exactly one input tensor"),
    (TupleOut(), "must return one tensor"),
])
def test_bad_signatures_are_graph_errors(net, message):
    with pytest.raises(GraphError, match=message):
        graph.of(net)


class Gate(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)  # a product of two data tensors


@pytest.mark.parametrize("layer, named", [
    (nn.MaxPool2d(2), "module '2' (MaxPool2d)"),
    (nn.ReLU(), "module '2' (ReLU)"),
    (nn.BatchNorm2d(3), "module '2' (BatchNorm2d)"),
    (Gate(), "in module '2'"),
])
@pytest.mark.parametrize("name", AFFINE_ONLY)
def test_non_affine_ops_are_refused_before_any_computation(layer, named, name):
    torch.manual_seed(0)
    features = 3 * 2 * 2 if isinstance(layer, nn.MaxPool2d) else 3 * 4 * 4
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), LIF(), layer, nn.Flatten(), nn.Linear(features, 4))
    with pytest.raises(ValueError) as err:
        methods.get(name, T=2).loss_and_grad(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))
    message = str(err.value)
    assert named in message and f"method {name!r}" in message and "affine" in message
    assert all(p.grad is None for p in net.parameters())  # refused before computing


@pytest.mark.parametrize("name", ANY_OP)
def test_bptt_single_spike_and_blocks_accept_any_op(name):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), LIF(), nn.MaxPool2d(2), nn.ReLU(),
                        Gate(), nn.Flatten(), nn.Linear(12, 4))
    loss, _ = methods.get(name, T=2).loss_and_grad(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))
    assert torch.isfinite(loss) and net[0].weight.grad.abs().sum() > 0


def test_batchnorm_in_eval_mode_and_cat_along_channels_are_affine():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), LIF(), nn.Flatten(), nn.Linear(32, 3))
    net.eval()
    graph.of(net).check_affine("saf-e")
    net.train()
    with pytest.raises(ValueError, match="training mode"):
        graph.of(net).check_affine("saf-e")


class CatBatch(nn.Module):
    def forward(self, x):
        return torch.cat([x, x], dim=0)


def test_concatenation_along_the_batch_dim_is_not_affine():
    net = nn.Sequential(nn.Linear(3, 3), LIF(), CatBatch(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="CatBatch|op 'cat'"):
        graph.of(net).check_affine("saf-f")


def test_dropout_mask_is_shared_by_all_time_steps():
    """One mask per batch: a neuron behind a kept input (current 2 every step) fires at
    every step, one behind a dropped input never; a mask drawn per step would mix."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Dropout(0.5), LIF(tau=2.0, v_th=0.9))
    program = graph.of(net)
    inputs = Inputs(torch.ones(4, 64), 6, net, program)
    (spikes,), _ = lif_forward(program, inputs, CallContext(4))  # [T, B, 64]
    fired = spikes.sum(0) > 0
    assert 0.3 < fired.float().mean() < 0.7
    assert torch.equal(spikes, fired.expand_as(spikes).to(spikes.dtype))


def test_scaled_weight_standardisation_is_traced_through_and_affine():
    torch.manual_seed(1)
    net = nn.Sequential(ScaledWSConv2d(1, 3, 3, padding=1), LIF(), nn.Flatten(), nn.Linear(48, 2))
    program = graph.of(net)
    program.check_affine("saf-f")
    assert [n.label for n in program.nodes if n.kind == "op"][0] == "conv2d"


def test_functional_average_pooling_mean_and_flatten_are_affine():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.lif, self.fc = nn.Conv2d(1, 2, 3, padding=1), LIF(), nn.Linear(2, 3)

        def forward(self, x):
            h = F.avg_pool2d(self.lif(self.conv(x)), 2)
            return self.fc(h.mean((2, 3)).flatten(1) - 0.25)

    net = Functional()
    graph.of(net).check_affine("saf-e")
    loss, _ = methods.get("saf-e", T=2).loss_and_grad(net, torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2]))
    assert torch.isfinite(loss)


def test_calling_a_lif_directly_explains_how_to_run_the_network():
    with pytest.raises(RuntimeError, match="through a method"):
        LIF()(torch.zeros(2, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 4, 6, 8), (2, 1, 2, 2), (5, 3, 7, 6), (2, 2, 6, 5)])
def test_two_by_two_average_pooling_equals_avg_pool2d_bit_for_bit(shape, dtype):
    """nn.AvgPool2d(2) runs ``_Pool2x2`` on even sizes (odd ones: the module): values and
    gradients equal to avg_pool2d's exactly, the op's output shape for odd sizes too."""
    from spikeacc.graph.ops import AvgPool2x2, make_op
    pool = nn.AvgPool2d(2)
    op = make_op("call_module", "pool", (), {}, lambda a: True, pool, "pool", 0)
    assert isinstance(op, AvgPool2x2)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype).requires_grad_()
    out, expected = op((x,), {}, None, None), F.avg_pool2d(x, 2)
    assert torch.equal(out, expected)
    assert (type(out.grad_fn).__name__ == "_Pool2x2Backward") == (shape[2] % 2 == 0 and shape[3] % 2 == 0)
    weights = torch.randn(expected.shape, dtype=dtype)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), x)
    assert torch.equal(grad, grad_expected)


def test_other_average_poolings_keep_the_module():
    from spikeacc.graph.ops import AvgPool2x2, make_op
    for pool in (nn.AvgPool2d(3), nn.AvgPool2d(2, stride=1), nn.AvgPool2d(2, padding=1), nn.AvgPool2d(2, ceil_mode=True),
                 nn.AvgPool2d(2, divisor_override=3)):
        assert not isinstance(make_op("call_module", "pool", (), {}, lambda a: True, pool, "pool", 0), AvgPool2x2)

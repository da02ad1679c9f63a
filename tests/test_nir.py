"""NIR export and import (spikeacc.interop.nir, ``spikeacc export --format nir``).

* Round trip: every parameter written equals the module's, survives the file, and
  ``load`` gives back the same modules (exact; float64).
* A NIR simulator written here (Euler steps of NIR's own equations, its reset to v_reset
  and its v > v_threshold rule) equals ``spiking_inference`` on networks built so that
  the reset rule never matters, and differs on one where it does: the reason export
  asks for ``allow_lossy``.
* Refusals are one line; the CLI works end to end on a checkpoint trained here.
"""
from __future__ import annotations

import math

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeacc import LIF, methods
from spikeacc.interop import nir as snir
from spikeacc.models import MLP, ConvNet, SpikingResNet, build
from benchmarks.nir_consumers import limit_charge
from tests.test_cli import in_process, one_error_line

SAMPLE = (1, 8, 8)


# --- a NIR graph simulator: NIR's equations, one forward Euler step of dt per time step ------

def topological_order(graph: nir.NIRGraph) -> list[str]:
    sources = {name: [src for src, dst in graph.edges if dst == name] for name in graph.nodes}
    order: list[str] = []
    while len(order) < len(graph.nodes):
        order += [name for name in graph.nodes
                  if name not in order and all(src in order for src in sources[name])]
    return order


class NIRSimulator:
    """Each step, every node in a topological order acts on the sum of its inputs (NIR's
    edges), with NIR's definitions: Affine W I + b, Linear W I, Conv2d, AvgPool2d =
    SumPool2d then Scale 1/(k_h k_w), Flatten to NIR's own output type, Scale s I, and LIF
    tau dv/dt = (v_leak - v) + R I by Euler, spike where v > v_threshold, then v = v_reset."""

    def __init__(self, graph: nir.NIRGraph, dt: float) -> None:
        self.graph, self.dt, self.order = graph, dt, topological_order(graph)
        self.sources = {name: [src for src, dst in graph.edges if dst == name] for name in graph.nodes}
        self.v_mem: dict[str, torch.Tensor] = {}
        self.spike_counts: dict[str, torch.Tensor] = {}  # per LIF node, spikes per sample [B]
        self.v_peak: dict[str, float] = {}  # per LIF node, the highest membrane before a reset

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, B, *input shape] -> the Output node's value per step [T, B, K]."""
        outputs = []
        for x_t in x:
            values: dict[str, torch.Tensor] = {}
            for name in self.order:
                node = self.graph.nodes[name]
                if isinstance(node, nir.Input):
                    values[name] = x_t
                    continue
                current = sum(values[src] for src in self.sources[name])
                values[name] = self.step(name, node, current)
                if isinstance(node, nir.Output):
                    outputs.append(values[name])
        return torch.stack(outputs)

    def step(self, name: str, node: nir.NIRNode, current: torch.Tensor) -> torch.Tensor:
        def tensor(value) -> torch.Tensor:
            return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=current.dtype)

        def ints(value) -> tuple[int, ...]:
            return tuple(int(v) for v in np.atleast_1d(value))

        if isinstance(node, nir.Output):
            return current
        if isinstance(node, nir.Affine):
            return current @ tensor(node.weight).T + tensor(node.bias)
        if isinstance(node, nir.Linear):
            return current @ tensor(node.weight).T
        if isinstance(node, nir.Conv2d):
            return F.conv2d(current, tensor(node.weight), tensor(node.bias), ints(node.stride),
                            ints(node.padding), ints(node.dilation), int(node.groups))
        if isinstance(node, nir.AvgPool2d):
            (k_h, k_w), channels = ints(node.kernel_size), current.shape[1]
            ones = current.new_ones(channels, 1, k_h, k_w)
            window_sum = F.conv2d(current, ones, None, ints(node.stride), ints(node.padding), 1, channels)
            return window_sum / (k_h * k_w)
        if isinstance(node, nir.Flatten):
            return current.reshape(current.shape[0], *ints(node.output_type["output"]))
        if isinstance(node, nir.Scale):
            return current * tensor(node.scale)
        if isinstance(node, nir.LIF):
            return self.lif(name, node, current, tensor)
        raise TypeError(f"the simulator has no {type(node).__name__}")

    def lif(self, name: str, node: nir.LIF, current: torch.Tensor, tensor) -> torch.Tensor:
        v_mem = self.v_mem.get(name, torch.zeros_like(current))
        v_mem = v_mem + self.dt / tensor(node.tau) * (tensor(node.v_leak) - v_mem + tensor(node.r) * current)
        spikes = (v_mem > tensor(node.v_threshold)).to(current.dtype)
        self.v_peak[name] = max(self.v_peak.get(name, -np.inf), float(v_mem.max()))
        self.v_mem[name] = torch.where(spikes.bool(), tensor(node.v_reset), v_mem)
        self.spike_counts[name] = self.spike_counts.get(name, 0) + spikes.flatten(1).sum(1)
        return spikes


def simulate(graph: nir.NIRGraph, x: torch.Tensor, dt: float
             ) -> tuple[torch.Tensor, list[torch.Tensor], NIRSimulator]:
    """Logits (mean of the output over the steps, spikeacc's "mean" readout) and spike
    counts per LIF node, in graph order."""
    simulator = NIRSimulator(graph, dt)
    logits = simulator.run(x).mean(0)
    lif_names = [name for name in graph.nodes if isinstance(graph.nodes[name], nir.LIF)]
    return logits, [simulator.spike_counts[name] for name in lif_names], simulator


# --- networks ------------------------------------------------------------------------------

def sequential(*layers: nn.Module) -> nn.Sequential:
    net = nn.Sequential(*layers)
    net.sample_shape = SAMPLE
    return net


def odd_conv_net() -> nn.Sequential:
    """Every conv, pool and flatten parameter away from its default."""
    return sequential(
        nn.Conv2d(1, 4, 3, stride=(1, 2), padding=(2, 1), dilation=(2, 1), bias=False), LIF(tau=4.0),
        nn.AvgPool2d(3, stride=2, padding=1), nn.Conv2d(4, 6, 3, padding="same"),
        LIF(tau=3.0, v_th=0.75), nn.Flatten(2, 3), nn.Flatten(1, -1), nn.Linear(6 * 4 * 2, 5))


class ResidualNet(nn.Module):
    """conv -> LIF -> conv (+ the LIF's spikes) -> LIF -> pool -> flatten -> x2 -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.sample_shape = SAMPLE
        self.conv0, self.lif0 = nn.Conv2d(1, 4, 3, padding=1, bias=False), LIF(tau=4.0)
        self.conv1, self.lif1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), LIF(tau=3.0, v_th=1.2)
        self.pool, self.flatten, self.readout = nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes = self.lif0(self.conv0(x))
        return self.readout(self.flatten(self.pool(self.lif1(self.conv1(spikes) + spikes))) * 2.0)


NETWORKS = {
    "mlp": lambda: MLP(64, [12, 10], 5, neuron=LIF(tau=3.0, v_th=0.8), sample_shape=SAMPLE),
    "conv": lambda: ConvNet(SAMPLE, (3, 4), 5, neuron=LIF(tau=2.5)),
    "odd-conv": odd_conv_net,
    "residual": ResidualNet,
    "resnet-sws": lambda: SpikingResNet(SAMPLE, 5, widths=(2, 3)),  # sWS convs, x2.74, adaptive pooling
}


# --- round trip ------------------------------------------------------------------------------

def node_fields(node: nir.NIRNode) -> dict:
    fields = node.to_dict()
    fields.pop("metadata", None)
    return fields


def assert_same_node(a: nir.NIRNode, b: nir.NIRNode) -> None:
    assert type(a) is type(b)
    fields_a, fields_b = node_fields(a), node_fields(b)
    assert fields_a.keys() == fields_b.keys()
    neuron = isinstance(a, (nir.LIF, nir.IF))  # thresholds scaled by 1/tau and back: to the last bits
    for key in fields_a:
        value_a, value_b = np.asarray(fields_a[key]), np.asarray(fields_b[key])
        numeric = neuron and value_a.dtype.kind == "f"
        same = np.allclose(value_a, value_b, rtol=4e-16, atol=0) if numeric else np.array_equal(value_a, value_b)
        assert same, (type(a).__name__, key)


def pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def assert_exported(module: nn.Module, node: nir.NIRNode, in_shape: tuple[int, ...], dt: float) -> None:
    """The node holds exactly the module's parameters."""
    def same(array, tensor) -> bool:
        return np.array_equal(np.asarray(array), tensor.detach().numpy())

    if isinstance(module, nn.Linear):
        assert isinstance(node, nir.Affine if module.bias is not None else nir.Linear)
        assert same(node.weight, module.weight)
        assert module.bias is None or same(node.bias, module.bias)
    elif isinstance(module, nn.Conv2d):
        assert isinstance(node, nir.Conv2d) and tuple(node.input_shape) == in_shape[1:]
        assert same(node.weight, module.weight)
        assert same(node.bias, module.bias if module.bias is not None else torch.zeros(module.out_channels))
        padding = module.padding if module.padding != "same" else (1, 1)  # 3x3, dilation 1
        assert (node.stride, node.padding, node.dilation, node.groups) == (
            module.stride, padding, module.dilation, module.groups)
    elif isinstance(module, nn.AvgPool2d):
        assert isinstance(node, nir.AvgPool2d)
        for field in ("kernel_size", "stride", "padding"):
            assert tuple(getattr(node, field)) == pair(getattr(module, field))
    elif isinstance(module, nn.Flatten):
        assert isinstance(node, nir.Flatten) and tuple(node.input_type["input"]) == in_shape
        per_sample = tuple(d - 1 if d > 0 else d for d in (module.start_dim, module.end_dim))
        assert (node.start_dim, node.end_dim) == per_sample
    elif isinstance(module, LIF):
        assert isinstance(node, nir.LIF) and node.tau.shape == in_shape
        for field, value in (("tau", module.tau * dt), ("r", 1.0), ("v_leak", 0.0),
                             ("v_threshold", module.v_th / module.tau), ("v_reset", 0.0)):
            assert np.all(getattr(node, field) == value), field
    else:
        raise AssertionError(f"unexpected {module}")


def input_shape(net: nn.Sequential, i: int) -> tuple[int, ...]:
    """Per-sample shape of the input of module i (neurons as identities: same shape)."""
    silent = nn.Sequential(*[nn.Identity() if isinstance(m, LIF) else m for m in net[:i]])
    return tuple(silent(torch.zeros(1, *SAMPLE)).shape[1:])


def assert_same_module(a: nn.Module, b: nn.Module) -> None:
    assert type(a) is type(b)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    for attr in ("stride", "dilation", "groups", "kernel_size", "start_dim", "end_dim"):
        if hasattr(a, attr):
            assert pair(getattr(a, attr)) == pair(getattr(b, attr)), attr
    if isinstance(a, LIF):  # thresholds scaled by 1/tau and back: to the last bits
        assert a.settings().keys() == b.settings().keys()
        assert all(math.isclose(getattr(a, key), getattr(b, key), rel_tol=4e-16) for key in ("tau", "v_th"))
    if hasattr(a, "padding"):
        assert pair(a.padding if a.padding != "same" else 1) == pair(b.padding)


@pytest.mark.parametrize("name", ["mlp", "conv", "odd-conv"])
def test_every_parameter_is_written_read_and_loaded_back(name, float64, tmp_path):
    torch.manual_seed(0)
    net, dt = NETWORKS[name](), 0.5
    graph = snir.export(net, dt=dt, allow_lossy=True)
    for i, module in enumerate(net):
        assert_exported(module, graph.nodes[str(i)], input_shape(net, i), dt)
    path = tmp_path / "net.nir"
    snir.save(graph, path)
    read = nir.read(path)
    assert read.nodes.keys() == graph.nodes.keys() and set(read.edges) == set(graph.edges)
    for key, node in graph.nodes.items():
        assert_same_node(node, read.nodes[key])
    loaded = snir.load(path, dt=dt)
    assert loaded.sample_shape == SAMPLE and list(loaded.layers) == [str(i) for i in range(len(net))]
    for i, module in enumerate(net):
        assert_same_module(module, loaded.layers[str(i)])


@pytest.mark.parametrize("name", ["residual", "resnet-sws"])
def test_graphs_with_additions_round_trip_and_run_the_same(name, float64, tmp_path):
    torch.manual_seed(0)
    net = NETWORKS[name]()
    graph = snir.export(net, allow_lossy=True)
    adds = [dst for dst in graph.nodes if sum(d == dst for _, d in graph.edges) == 2]
    assert adds == (["lif1"] if name == "residual" else ["blocks.0.lif2", "blocks.1.lif2"])
    snir.save(graph, tmp_path / "net.nir")
    loaded = snir.load(tmp_path / "net.nir")
    again = snir.export(loaded, allow_lossy=True)
    renamed = {key if key in ("input", "output") else f"layers.{key.replace('.', '_')}": key
               for key in graph.nodes}  # the loaded network's module names
    assert again.nodes.keys() == renamed.keys()
    assert {(renamed[a], renamed[b]) for a, b in again.edges} == set(graph.edges)
    for key, node in again.nodes.items():
        assert_same_node(node, graph.nodes[renamed[key]])  # sWS convs: the weight they compute
    x = torch.rand(3, *SAMPLE) * 3
    expected, got = methods.spiking_inference(net, x, 5), methods.spiking_inference(loaded, x, 5)
    assert torch.allclose(got.logits, expected.logits, rtol=0, atol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(got.spike_counts, expected.spike_counts))


def test_metadata_records_dt_and_the_lossy_difference(tmp_path):
    graph = snir.export(NETWORKS["mlp"](), dt=0.25, allow_lossy=True)
    snir.save(graph, tmp_path / "net.nir")
    metadata = nir.read(tmp_path / "net.nir").metadata
    assert metadata["dt"] == 0.25 and metadata["source"].startswith("spikeacc ")
    assert "subtracts V_th from the membrane after a spike where NIR sets v = v_reset" in metadata["lossy"]
    assert "fires on v >= V_th where NIR fires on v > v_threshold" in metadata["lossy"]
    affine_only = sequential(nn.Flatten(), nn.Linear(64, 5))  # nothing lossy: written without the flag
    assert "lossy" not in snir.export(affine_only).metadata


def test_loaded_network_trains_under_spikeacc_methods(tmp_path):
    torch.manual_seed(0)
    snir.save(snir.export(NETWORKS["conv"](), allow_lossy=True), tmp_path / "net.nir")
    loaded = snir.load(tmp_path / "net.nir")
    x, y = torch.rand(4, *SAMPLE), torch.randint(0, 5, (4,))
    for name in ("saf-e", "bptt"):
        loaded.zero_grad()
        methods.get(name, T=3).loss_and_grad(loaded, x, y)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loaded.parameters())


# --- the NIR simulator against spiking_inference -------------------------------------------

def pulse(steps: int, T: int, seed: int) -> torch.Tensor:
    """x [T, 6, *SAMPLE]: random binary frames (90% ones) for ``steps`` steps, then nothing."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.zeros(T, 6, *SAMPLE)
    x[:steps] = (torch.rand(steps, 6, *SAMPLE, generator=generator) < 0.9).to(x.dtype)
    return x


def no_bias_mlp() -> nn.Sequential:
    return sequential(nn.Flatten(), nn.Linear(64, 32, bias=False), LIF(tau=4.0), nn.Linear(32, 16, bias=False),
                      LIF(tau=3.0, v_th=0.5), nn.Linear(16, 5))


# weight sums below 2 V_th / (charge per input element): 2 steps of pixels <= 1 (first layer),
# spikes <= 1 (after a LIF, also pooled); lif1 of the residual net also gets its source's
# spike (1), so conv1 gets 2.3 - 1 with V_th = 1.2
RESET_NEVER_MATTERS = {
    "mlp": (no_bias_mlp, {"1": 1.9 / 2, "3": 0.95}),
    "odd-conv": (odd_conv_net, {"0": 1.9 / 2, "3": 1.45}),
    "residual": (ResidualNet, {"conv0": 1.9 / 2, "conv1": 1.3}),
}


@pytest.mark.parametrize("name", list(RESET_NEVER_MATTERS))
def test_nir_simulation_equals_spiking_inference_where_the_reset_never_matters(name, float64):
    """Tolerance: spikes and counts exact; logits 1e-12 (the same affine ops in another order)."""
    build_net, charge_in = RESET_NEVER_MATTERS[name]
    torch.manual_seed(0)
    net, x, dt = limit_charge(build_net(), charge_in), pulse(2, 8, seed=1), 0.5
    graph = snir.export(net, dt=dt, allow_lossy=True)
    expected = methods.spiking_inference(net, x, T=8)
    logits, counts, simulator = simulate(graph, x, dt)
    for got, want in zip(counts, expected.spike_counts):
        assert torch.equal(got, want)
    assert torch.allclose(logits, expected.logits, rtol=0, atol=1e-12)
    # not vacuous: every layer fires, some membrane passes its threshold (so the two resets
    # leave different membranes), and a wrong Euler step changes the spikes
    assert all(count.sum() > 0 for count in counts)
    assert any(simulator.v_peak[n] > graph.nodes[n].v_threshold.flat[0] + 0.05 for n in simulator.v_peak)
    _, wrong_counts, _ = simulate(graph, x, dt=1.0)
    assert any(not torch.equal(a, b) for a, b in zip(wrong_counts, counts))


@pytest.mark.parametrize("name", ["mlp", "residual"])
def test_nir_simulation_differs_once_membranes_pass_the_threshold(name, float64):
    """Strong static input: neurons fire above V_th and again from the membrane spikeacc
    keeps (u - V_th), which NIR resets to 0: spikes and logits differ. This is why export
    refuses LIF without allow_lossy."""
    torch.manual_seed(0)
    net = NETWORKS[name]()
    x = torch.rand(6, *SAMPLE) * 4
    graph = snir.export(net, allow_lossy=True)
    expected = methods.spiking_inference(net, x, T=8)
    logits, counts, _ = simulate(graph, x.expand(8, *x.shape), dt=1.0)
    assert any(not torch.equal(a, b) for a, b in zip(counts, expected.spike_counts))
    assert not torch.allclose(logits, expected.logits, atol=1e-6)


# --- refusals: one line each ------------------------------------------------------------------

def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_export_refuses_lif_without_allow_lossy():
    with pytest.raises(ValueError) as err:
        snir.export(NETWORKS["mlp"]())
    text = one_line(err)
    for part in ("neuron '2'", "subtracts V_th", "v >= V_th", "v = v_reset", "v > v_threshold", "allow_lossy=True"):
        assert part in text


class Shift(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - 0.5


@pytest.mark.parametrize("layers, message", [
    ([nn.Conv2d(1, 2, 3), LIF(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(18, 3)], "module '2' (MaxPool2d)"),
    ([nn.Flatten(), nn.Linear(64, 4), nn.ReLU(), LIF(), nn.Linear(4, 3)], "module '2' (ReLU)"),
    ([nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2).eval(), nn.Flatten(), nn.Linear(72, 3)], "module '1' (BatchNorm2d)"),
    ([nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 3)], "module '1' (Dropout)"),
    ([nn.Flatten(), nn.Linear(64, 4), Shift(), nn.Linear(4, 3)], "op 'sub' (sub) in module '2'"),
    ([nn.Linear(8, 4), LIF(), nn.Flatten(), nn.Linear(32, 3)], "NIR's Affine takes one vector per sample"),
    ([nn.AvgPool2d(3, ceil_mode=True), nn.Flatten(), nn.Linear(9, 3)], "ceil_mode"),
    ([nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(9, 3)], "does not divide"),
    ([nn.Conv2d(1, 2, 2, padding="same"), nn.Flatten(), nn.Linear(128, 3)], "padding 'same'"),
    ([nn.Flatten(0), nn.Linear(64, 3)], "flattens the batch dim"),
    ([nn.Conv2d(1, 2, (3, 1)), nn.Flatten(), nn.Linear(96, 3)], "gives its output the shape [2, 6, 6]"),
    ([nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1, groups=2), nn.Flatten(), nn.Linear(128, 3)],
     "module '1' (Conv2d): NIR 1.0.8 gives its input the shape [1, 8, 8]"),
])
def test_export_refuses_what_nir_cannot_express(layers, message):
    with pytest.raises(ValueError) as err:
        snir.export(sequential(*layers), allow_lossy=True)
    assert message in one_line(err)


def test_export_needs_the_sample_shape():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(ValueError) as err:
        snir.export(net)
    assert "pass sample_shape or set net.sample_shape" in one_line(err)
    assert isinstance(snir.export(net, sample_shape=SAMPLE).nodes["1"], nir.Affine)


def test_export_refuses_an_op_that_reads_one_value_twice():
    class Doubled(nn.Module):
        def forward(self, x):
            return x + x

    net = sequential(nn.Flatten(), nn.Linear(64, 3), Doubled())
    with pytest.raises(ValueError) as err:
        snir.export(net)
    assert "reads '1' twice" in one_line(err)


def small_graph(lif: nir.NIRNode | None = None, edges: list | None = None) -> nir.NIRGraph:
    ones = np.ones(2)
    lif = lif if lif is not None else nir.LIF(tau=2 * ones, r=2 * ones, v_leak=0 * ones, v_threshold=ones)
    nodes = {"input": nir.Input(np.array([3])), "fc": nir.Affine(np.ones((2, 3)), np.zeros(2)), "lif": lif,
             "output": nir.Output(np.array([2]))}
    edges = edges or [("input", "fc"), ("fc", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes, edges, type_check=False)


def test_load_reads_a_graph_it_did_not_write_with_nirs_rules():
    net = snir.load(small_graph())
    lif = net.layers["lif"]
    assert isinstance(lif, LIF) and (lif.tau, lif.v_th, lif.reset, lif.v_reset, lif.strict) == (2.0, 1.0, "hard", 0.0, True)
    assert net.sample_shape == (3,) and isinstance(net.layers["fc"], nn.Linear)
    assert methods.spiking_inference(net, torch.ones(2, 3), T=3).logits.shape == (2, 2)


@pytest.mark.parametrize("graph, options, message", [
    (small_graph(nir.CubaLIF(tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2), v_leak=np.zeros(2),
                             v_threshold=np.ones(2))), {}, "'lif' (CubaLIF) has no exact spikeacc counterpart"),
    (small_graph(nir.LIF(tau=2 * np.ones(2), r=2 * np.ones(2), v_leak=np.ones(2), v_threshold=np.ones(2))),
     {}, "v_leak = 1.0 where spikeacc's neurons leak toward their reset value 0.0"),
    (small_graph(nir.LIF(tau=2 * np.ones(2), r=np.array([1.0, 2.0]), v_leak=np.zeros(2), v_threshold=np.ones(2))),
     {}, "r varies across neurons"),
    (small_graph(nir.LIF(tau=np.array([2.0, 3.0]), r=np.array([2.0, 3.0]), v_leak=np.zeros(2),
                         v_threshold=np.ones(2))), {}, "tau varies across neurons"),
    (small_graph(edges=[("input", "fc"), ("fc", "lif"), ("lif", "fc"), ("lif", "output")]), {},
     "not fed by the Input through a feed-forward path"),
])
def test_load_refuses_what_spikeacc_cannot_run_exactly(graph, options, message):
    with pytest.raises(ValueError) as err:
        snir.load(graph, **options)
    assert message in one_line(err)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_load_refuses_weights_that_are_not_finite(bad, tmp_path):
    graph = small_graph()
    graph.nodes["fc"].weight[1, 2] = bad
    nir.write(tmp_path / "bad.nir", graph)
    with pytest.raises(ValueError) as err:
        snir.load(tmp_path / "bad.nir")
    assert one_line(err) == "NIR node 'fc' weight holds 1 NaN or infinite value(s)"


def test_load_refuses_a_file_that_is_not_nir(tmp_path):
    (tmp_path / "x.nir").write_bytes(b"not hdf5")
    with pytest.raises(ValueError) as err:
        snir.load(tmp_path / "x.nir")
    assert f"{tmp_path / 'x.nir'} is not a NIR file" in one_line(err)


# --- the command line ------------------------------------------------------------------------

CLI_TINY = ["--epochs", "1", "--T", "2", "--limit-train", "128", "--limit-test", "20", "--hidden", "16"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    root = tmp_path_factory.mktemp("nir-runs")
    try:
        for method in ("saf-f", "asf"):
            assert in_process("train", *CLI_TINY, "--method", method, "--out", str(root / method)) == 0
    finally:
        torch.set_default_dtype(previous)
    return {method: str(root / method / "checkpoint.pt") for method in ("saf-f", "asf")}


def test_cli_exports_a_trained_checkpoint(checkpoints, tmp_path, capsys):
    out = tmp_path / "model.nir"
    assert in_process("export", "--format", "nir", checkpoints["saf-f"], str(out)) == 2
    assert "v > v_threshold" in one_error_line(capsys.readouterr().err) and not out.exists()
    assert in_process("export", "--format", "nir", checkpoints["saf-f"], str(out), "--allow-lossy",
                      "--dt", "0.5") == 0
    assert f"wrote {out}" in capsys.readouterr().out
    graph = nir.read(out)
    assert graph.metadata["method"] == "saf-f" and graph.metadata["dt"] == 0.5 and "lossy" in graph.metadata
    state = torch.load(checkpoints["saf-f"], weights_only=True)
    trained = build("mlp", tuple(state["sample_shape"]), state["n_classes"], hidden=state["config"]["hidden"])
    trained.load_state_dict(state["model"])
    loaded = snir.load(out, dt=0.5)
    x = torch.rand(7, *state["sample_shape"])
    expected, got = methods.spiking_inference(trained, x, 4), methods.spiking_inference(loaded, x, 4)
    assert torch.equal(got.logits, expected.logits)
    assert all(torch.equal(a, b) for a, b in zip(got.spike_counts, expected.spike_counts))


def test_cli_export_for_a_target_says_which_dt_each_reader_needs(checkpoints, tmp_path, capsys):
    out = tmp_path / "model.nir"
    assert in_process("export", "--format", "nir", checkpoints["saf-f"], str(out), "--allow-lossy",
                      "--target", "snntorch") == 0
    printed = capsys.readouterr()
    assert "dt=0.0001" in printed.out and "snntorch: snntorch.import_nir.import_from_nir(graph) always steps with " \
        "dt = 1e-4; reads it as written" in printed.out and not printed.err
    assert nir.read(out).metadata["dt"] == 1e-4
    assert in_process("export", "--format", "nir", checkpoints["saf-f"], str(out), "--allow-lossy",
                      "--target", "snntorch", "--dt", "1.0") == 0
    printed = capsys.readouterr()
    assert printed.err.count("\n") == 1 and printed.err.startswith("spikeacc: warning: exporting at dt=1.0 for snnTorch")
    assert "snntorch: " in printed.out and "would misread dt=1.0" in printed.out


@pytest.mark.parametrize("source, out, extra, message", [
    ("asf", "o.nir", [], "trained with method 'asf'"),
    ("garbage", "o.nir", [], "is not a spikeacc checkpoint"),
    ("missing", "o.nir", [], "no checkpoint at"),
    ("saf-f", "no-such-dir/o.nir", [], "cannot write"),
    ("saf-f", "o.nir", ["--dt", "0"], "--dt: must be a positive finite number"),
    ("saf-f", "o.nir", ["--format", "onnx"], "invalid choice: 'onnx'"),
])
def test_cli_export_errors_are_one_line(source, out, extra, message, checkpoints, tmp_path, capsys):
    (tmp_path / "garbage").write_bytes(b"not a checkpoint")
    path = checkpoints.get(source, str(tmp_path / source))
    assert in_process("export", "--format", "nir", path, str(tmp_path / out), "--allow-lossy", *extra) == 2
    line = one_error_line(capsys.readouterr().err)
    assert message in line and "weights_only" not in line

"""SAF's kernels' paths (methods/saf_fused.py ``whole_sites``, ``fused_trajectory``,
kernels/cpu.c ``saf_steps``) against the step-by-step reference (``saf_step`` in a loop,
what ``kernels.mode = "off"`` runs): every site's sums after any number of steps and the
spike counts bit for bit, float64 and float32, for every neuron setting SAF runs, also with
currents exactly at, one ulp below and one ulp above the threshold; SAF-F's and SR's
losses and logits bit for bit and gradients within 1e-12 (float64; the last step's
surrogate derivative is computed in C, its exp rounded differently)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from spikeacc import LIF, MLP, ConvNet, graph, kernels, methods
from spikeacc.graph import CallContext
from spikeacc.methods.base import Inputs
from spikeacc.methods.online import Leaks
from spikeacc.methods.saf import accumulated_trajectory
from spikeacc.methods.saf_fused import whole_sites

SAF_SETTINGS = [dict(), dict(reset="subtract_late"), dict(reset="none"), dict(decay_input=True), dict(tau=math.inf),
                dict(strict=True), dict(reset="subtract_late", strict=True, tau=4.0), dict(surrogate="atan")]
GRAD_TOLERANCE = 1e-12


def settings_id(settings: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in settings.items()) or "default"


class TwoLeaks(nn.Module):
    """Two sites of different leaks, both read by the readout only: each keeps its sums
    with its own leak and with the readout's (the larger)."""

    def __init__(self) -> None:
        super().__init__()
        self.fast, self.slow = nn.Linear(12, 9), nn.Linear(12, 7)
        self.lif_fast, self.lif_slow = LIF(tau=2.0), LIF(tau=5.0, v_th=0.7)
        self.readout = nn.Linear(16, 4)
        self.sample_shape = (12,)

    def forward(self, x):
        return self.readout(torch.cat([self.lif_fast(self.fast(x)), self.lif_slow(self.slow(x))], 1))


def scaled(net: nn.Module, factor: float = 3.0) -> nn.Module:
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(factor)  # currents large enough that every site fires
    return net


def trajectories(net: nn.Module, x: torch.Tensor, steps: int, fused_mode: str = "auto") -> dict[str, tuple]:
    """(sums, counts) of ``accumulated_trajectory`` on the kernels of ``kernels.mode``
    ``fused_mode`` ("auto": C, "all": Triton) and on the reference ("off")."""
    program = graph.of(net)
    results = {}
    for mode in (fused_mode, "off"):
        previous, kernels.mode = kernels.mode, mode
        try:
            ctx = CallContext(x.shape[0], x)
            inputs = Inputs(x, steps, net, program)
            results[mode] = accumulated_trajectory(program, ctx, Leaks(program, own=True), inputs, steps)
        finally:
            kernels.mode = previous
    return results


def assert_same_trajectory(net: nn.Module, x: torch.Tensor, steps: int, fused_mode: str = "auto") -> None:
    """Every site's sums and counts bit for bit; the input's sums, which nothing reads but as
    the carrier of the input-only values' scale (``scaled_input_sums``), to rounding."""
    fused, reference = trajectories(net, x, steps, fused_mode).values()
    assert fused[0].keys() == reference[0].keys()
    for key in reference[0]:
        if key[0] == graph.of(net).input:
            torch.testing.assert_close(fused[0][key], reference[0][key])
        else:
            assert torch.equal(fused[0][key], reference[0][key]), key
    for counts, counts_ref in zip(fused[1], reference[1], strict=True):
        assert torch.equal(counts, counts_ref)
    assert all(counts.sum() > 0 for counts in reference[1])  # every site fires


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("steps", [1, 2, 7, 16])
@pytest.mark.parametrize("settings", SAF_SETTINGS, ids=settings_id)
def test_fused_trajectory_equals_the_step_by_step_reference(settings, steps, dtype):
    torch.manual_seed(0)
    net = scaled(MLP(12, [9], 4, neuron=LIF(**settings))).to(dtype)
    assert_same_trajectory(net, torch.rand(6, 12, dtype=dtype), steps)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("model", ["two hidden layers", "conv"])
@pytest.mark.parametrize("settings", SAF_SETTINGS, ids=settings_id)
def test_fused_steps_of_sites_that_read_sites_equal_the_reference(settings, model, dtype):
    """Sites read by others, or reading others, step by step, each step's neuron update in
    one C call (``fused_step``)."""
    torch.manual_seed(0)
    neuron = LIF(**settings)
    net = MLP(12, [9, 7], 4, neuron=neuron) if model != "conv" else ConvNet((1, 8, 8), (3, 4), 4, neuron=neuron)
    net = scaled(net, 4.0 if neuron.decay_input else 3.0).to(dtype)  # input decay: g = 1 - lam
    x = torch.rand(6, *net.sample_shape, dtype=dtype)
    assert whole_sites(graph.of(net), CallContext(6, x)) == []
    assert_same_trajectory(net, x, 9)


def test_sums_with_two_leaks_equal_the_reference():
    torch.manual_seed(0)
    net = scaled(TwoLeaks()).double()
    x = torch.rand(6, 12, dtype=torch.float64)
    program = graph.of(net)
    assert len(whole_sites(program, CallContext(6, x))) == 2
    assert all(len(Leaks(program, own=True).of_source[site.index]) == 2 for site in program.sites[:1])
    assert_same_trajectory(net, x, 9)


def currents_at_threshold(v_th: float, gain: float, dtype: torch.dtype, n: int = 60) -> torch.Tensor:
    """Unit values u [n] whose first fire value g u lands exactly at V_th, one ulp below or
    one ulp above it (in turn), nudged one ulp at a time."""
    target = torch.tensor(v_th, dtype=dtype)
    targets = torch.stack([target.nextafter(torch.tensor(-math.inf, dtype=dtype)), target,
                           target.nextafter(torch.tensor(math.inf, dtype=dtype))]).repeat(n // 3)
    u = targets / gain
    for _ in range(8):
        value = u if gain == 1.0 else gain * u
        u = torch.where(value < targets, u.nextafter(torch.tensor(math.inf, dtype=dtype)),
                        torch.where(value > targets, u.nextafter(torch.tensor(-math.inf, dtype=dtype)), u))
    assert torch.equal(u if gain == 1.0 else gain * u, targets)
    return u


class Direct(nn.Module):
    """x -> Identity op -> LIF -> Linear: the site's unit value is the input itself, so a test
    sets the neuron's current exactly."""

    def __init__(self, neuron: LIF, n: int) -> None:
        super().__init__()
        self.scale, self.lif, self.readout = nn.Identity(), neuron, nn.Linear(n, 3)
        self.sample_shape = (n,)

    def forward(self, x):
        return self.readout(self.lif(self.scale(x) * 1.0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("settings", SAF_SETTINGS, ids=settings_id)
def test_fused_trajectory_at_just_below_and_just_above_the_threshold(settings, dtype):
    """The first step's fire values sit on V_th and one ulp either side; later steps subtract
    rho V_th A (rounded), which any other rounding order would change."""
    neuron = LIF(**{"v_th": 0.7, **settings})
    gain = 1.0 - neuron.lam if neuron.decay_input else 1.0
    u = currents_at_threshold(neuron.v_th, gain, dtype)
    net = Direct(neuron, u.numel()).to(dtype)
    x = torch.stack([u, u.flip(0), 1.5 * u])  # [3, n]
    assert whole_sites(graph.of(net), CallContext(3, x))
    assert_same_trajectory(net, x, 12)


def gradients(net: nn.Module, method, x, y, mode: str):
    previous, kernels.mode = kernels.mode, mode
    try:
        net = copy.deepcopy(net)
        loss, logits = method.loss_and_grad(net, x, y)
        inference = method.infer(net, x)
    finally:
        kernels.mode = previous
    return loss, logits, [p.grad for p in net.parameters()], inference


METHOD_SETTINGS = SAF_SETTINGS[:4] + [dict(v_th=0.8, surrogate="fast_sigmoid")]
CASES = [(name, options, settings) for name, options in (("saf-f", {}), ("saf-f", {"surrogate": "sr"}), ("sr", {}))
         for settings in METHOD_SETTINGS if name != "sr" or settings.get("reset") is None]  # SR: subtraction only


@pytest.mark.parametrize("name, options, settings", CASES,
                         ids=[f"{n}{o.get('surrogate', '')}-{settings_id(s)}" for n, o, s in CASES])
def test_saf_f_and_sr_through_the_fused_path_equal_the_reference(name, options, settings):
    torch.manual_seed(0)
    net = scaled(MLP(12, [9], 4, neuron=LIF(**settings)), 2.0).double()
    x, y = torch.rand(6, 12, dtype=torch.float64), torch.randint(0, 4, (6,))
    method = methods.get(name, T=6, **options)
    fused, reference = (gradients(net, method, x, y, mode) for mode in ("auto", "off"))
    assert torch.equal(fused[0], reference[0]) and torch.equal(fused[1], reference[1])
    for grad, grad_ref in zip(fused[2], reference[2], strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=GRAD_TOLERANCE, atol=GRAD_TOLERANCE)
    assert all(g.abs().sum() > 0 for g in reference[2])
    assert torch.equal(fused[3].logits, reference[3].logits)
    for counts, counts_ref in zip(fused[3].spike_counts, reference[3].spike_counts, strict=True):
        assert torch.equal(counts, counts_ref)


def test_saf_f_runs_the_whole_trajectory_in_one_call(monkeypatch):
    """SAF-F on the one-hidden-layer MLP: no step-by-step step at all, one C call."""
    from spikeacc.methods import saf
    calls = {"saf_step": 0, "saf_steps": 0}
    for module, name in ((saf, "saf_step"), (kernels.cpu, "saf_steps")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: calls.__setitem__(
            _name, calls[_name] + 1) or _real(*a, **k))
    net = MLP(12, [9], 4)
    methods.get("saf-f", T=8).loss_and_grad(net, torch.rand(5, 12), torch.randint(0, 4, (5,)))
    assert calls == {"saf_step": 0, "saf_steps": 1}


@pytest.mark.parametrize("case", ["two hidden layers", "per-step algorithm", "sequence input", "kernels off"])
def test_where_the_fused_path_does_not_apply(case):
    net = MLP(12, [9, 9], 4) if case == "two hidden layers" else MLP(12, [9], 4)
    program = graph.of(net)
    x = torch.rand(6, 12)
    if case == "two hidden layers":  # the first site is read by the second, the second reads a site
        assert whole_sites(program, CallContext(6, x)) == []
    elif case == "per-step algorithm":  # static_once=False: no input-only values once per call
        assert whole_sites(program, CallContext(6, None)) == []
    elif case == "sequence input":
        method = methods.get("saf-f", T=4)
        _, inputs, ctx = method.setup(net, torch.rand(4, 6, 12), torch.randint(0, 4, (6,)))
        assert not inputs.static and whole_sites(program, ctx) == []
    else:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(kernels, "mode", "off")
            assert whole_sites(program, CallContext(6, x)) == []


@pytest.mark.parametrize("model", ["one conv site", "conv"])
def test_channels_last_currents_take_the_fused_paths(model):
    """Currents in another memory layout (a conv of a channels-last batch): the same sums,
    and SAF-F the same loss, through the whole-trajectory and the per-step calls."""
    torch.manual_seed(0)
    net = ConvNet((1, 8, 8), (3, 4), 4) if model == "conv" else nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), LIF(), nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    net.sample_shape = (1, 8, 8)
    net = scaled(net).double()
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64).to(memory_format=torch.channels_last)
    assert len(whole_sites(graph.of(net), CallContext(6, x))) == (1 if model == "one conv site" else 0)
    assert_same_trajectory(net, x, 7)
    y = torch.randint(0, 4, (6,))
    fused, reference = (gradients(net, methods.get("saf-f", T=5), x, y, mode) for mode in ("auto", "off"))
    assert torch.equal(fused[0], reference[0])

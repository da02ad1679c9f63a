"""The fused Triton kernels equal the reference loops in values and gradients.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (tests/conftest.py
sets TRITON_INTERPRET=1 before triton is imported); with one they compile and run on CUDA
tensors. The interpreter is slow, so the shapes are tiny. triton is imported at the top on
purpose: without it this module fails to collect, it does not skip.
"""
import math
import os

import pytest
import torch
import triton

from spikeacc import LIF, kernels, methods
from spikeacc.kernels import first_spike as first_spike_kernels
from spikeacc.kernels import lif as lif_kernels
from spikeacc.kernels.first_spike import fused_first_spike
from spikeacc.kernels.lif import fused_lif
from spikeacc.models import MLP, ConvNet
from spikeacc.neurons.single_spike import (
    _FirstSpike, first_spike, sequential_single_spike, single_spike_lif)
from spikeacc.neurons.surrogate import SURROGATES, derivative

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
T, B, N = 6, 4, 50  # [T, B, N]: 200 neurons, one program of BLOCK = 1024


def test_triton_is_the_pinned_one_and_interprets_without_a_gpu():
    assert triton.__version__ == "3.7.1"
    if DEVICE == "cpu":
        assert os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture
def kernels_everywhere(monkeypatch):
    """spikeacc.kernels.mode = "all": CPU tensors take the kernels too (interpreter)."""
    monkeypatch.setattr(kernels, "mode", "all")


def lif_grads(run, current, weights):
    """Spikes of ``run(current)`` and the gradient of sum(spikes * weights) w.r.t. the
    current, or w.r.t. its one step [B, ...] when the current is that step expanded over
    T (stride 0 in dim 0; ``run`` then reads the expanded view, as BPTT passes it)."""
    expanded = current.stride(0) == 0
    leaf = (current[0] if expanded else current).detach().clone().requires_grad_(True)
    spikes = run(leaf.expand_as(current) if expanded else leaf)
    (spikes * weights).sum().backward()
    return spikes.detach(), leaf.grad


def make_current(expanded: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[T, B, N] drive in [-0.2, 1.4): some neurons fire, some stay below threshold 1.
    Multiples of 1/32 (exact in bfloat16 and float16): with lam = 0.5 every membrane is
    exact in float32, so some sit exactly at the threshold (H(0) = 1 is exercised) and no
    rounding order (a GPU's fused multiply-add) changes a spike.
    ``expanded``: one step expanded over T (stride 0 in dim 0, a static input's current)."""
    gen = torch.Generator().manual_seed(0)
    drive = torch.round(32 * (1.6 * torch.rand(1 if expanded else T, B, N, generator=gen) - 0.2)) / 32
    return drive.to(DEVICE, dtype).expand(T, B, N)


def membranes(current: torch.Tensor, lam: float, v_th: float) -> torch.Tensor:
    """u[t] of the LIF recurrence in float64, for checking the test data: [T, B, N]."""
    v_mem, spike, out = 0.0, 0.0, []
    for current_t in current.double():
        v_mem = lam * (v_mem - v_th * spike) + current_t
        spike = (v_mem >= v_th).double()
        out.append(v_mem)
    return torch.stack(out)


def spike_weights(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(T, B, N, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)


def reference_run(lif: LIF):
    """``lif.run`` with the kernels off: the reference loop, on any device."""
    def run(current: torch.Tensor) -> torch.Tensor:
        previous, kernels.mode = kernels.mode, "off"
        try:
            return lif.run(current)
        finally:
            kernels.mode = previous
    return run


def kernel_and_reference(lif: LIF, current: torch.Tensor, weights: torch.Tensor):
    """(spikes, grad) of the kernel and of the reference loop on the same current."""
    fused = lif_grads(lambda x: fused_lif(x, lif.lam, lif.v_th, lif.surrogate, lif.alpha, lif.detach_reset),
                      current, weights)
    return fused, lif_grads(reference_run(lif), current, weights)


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("expanded", [False, True])
def test_lif_kernel_equals_reference(surrogate, detach_reset, expanded):
    lif = LIF(tau=2.0, v_th=1.0, surrogate=surrogate, alpha=4.0, detach_reset=detach_reset)
    current = make_current(expanded)
    (spikes, grad), (spikes_ref, grad_ref) = kernel_and_reference(lif, current, spike_weights())
    assert 0 < spikes_ref.mean() < 0.7  # both firing and silent neurons, and resets
    assert (membranes(current, lif.lam, lif.v_th) == lif.v_th).any()  # ties at the threshold
    assert torch.equal(spikes, spikes_ref)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-6)


def test_lif_kernel_other_tau_and_threshold():
    lif = LIF(tau=3.5, v_th=0.7, surrogate="atan", alpha=2.0)
    (spikes, grad), (spikes_ref, grad_ref) = kernel_and_reference(lif, make_current(False), spike_weights())
    assert spikes_ref.sum() > 0
    assert torch.equal(spikes, spikes_ref)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_no_surrogate_gradient_is_silently_zero(surrogate):
    # SpikingJelly's PR #660: five surrogates of its Triton backend returned zero
    # gradients. Here the kernel's gradient must be nonzero exactly where the reference's is.
    lif = LIF(surrogate=surrogate)
    (_, grad), (_, grad_ref) = kernel_and_reference(lif, make_current(False), spike_weights())
    assert (grad_ref != 0).float().mean() > 0.2
    assert torch.equal(grad != 0, grad_ref != 0)


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_kernel_surrogate_derivative_equals_spikeacc_surrogate(surrogate):
    # At T = 1 with dL/ds = 1 the kernel's gradient is sigma'(I - V_th) itself.
    alpha, v_th = 3.0, 1.0
    current = torch.linspace(-1.0, 1.0, 401).to(DEVICE) + v_th  # both sides of rect's window
    _, grad = lif_grads(lambda c: fused_lif(c, 0.5, v_th, surrogate, alpha, False),
                        current.view(1, 1, -1), torch.ones(1, 1, current.numel(), device=DEVICE))
    want = derivative(surrogate, current - v_th, alpha)
    assert (want == 0).sum() > 100 if surrogate == "rect" else (want > 0).all()
    torch.testing.assert_close(grad.view(-1), want, rtol=1e-6, atol=1e-7)


def test_lif_kernel_blocks_split_the_neurons(monkeypatch):
    # 200 neurons in programs of 64: four programs, the last one holding 8 neurons.
    monkeypatch.setattr(lif_kernels, "BLOCK", 64)
    (spikes, grad), (spikes_ref, grad_ref) = kernel_and_reference(LIF(), make_current(False), spike_weights())
    assert torch.equal(spikes, spikes_ref)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("expanded", [False, True])
def test_lif_kernel_low_precision_accumulates_in_float32(dtype, expanded):
    # The kernel computes in float32: its spikes are the float32 reference's on the same
    # (exactly representable) values; its gradient is that gradient rounded to dtype.
    lif = LIF(surrogate="sigmoid")
    current, weights = make_current(expanded, dtype), spike_weights(dtype)
    spikes, grad = lif_grads(lambda x: fused_lif(x, lif.lam, lif.v_th, "sigmoid", lif.alpha, False),
                             current, weights)
    current32 = current[0].float().expand_as(current) if expanded else current.float()
    _, (spikes_ref, grad_ref) = kernel_and_reference(lif, current32, weights.float())
    assert spikes.dtype == grad.dtype == dtype
    assert torch.equal(spikes.float(), spikes_ref)
    torch.testing.assert_close(grad.float(), grad_ref, rtol=1e-2, atol=1e-2)


@pytest.fixture
def forward_launches(monkeypatch) -> list[dict]:
    """Records the arguments of every launch of the LIF forward kernel."""
    launches, kernel = [], lif_kernels._lif_forward

    class Recorder:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append(dict(zip(("current", "current_step", "spike", "v_mem"), args)))
                return kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(lif_kernels, "_lif_forward", Recorder())
    return launches


def test_lif_kernel_reads_an_expanded_current_without_copying_it(forward_launches):
    current = make_current(expanded=True)
    current.requires_grad_(True)
    fused_lif(current, 0.5, 1.0, "sigmoid", 4.0, False)
    (launch,) = forward_launches
    assert launch["current"].shape == (B, N) and launch["current_step"] == 0
    assert launch["v_mem"].shape == (T, B, N) and launch["v_mem"].dtype == torch.float32


def test_lif_kernel_without_gradient_saves_no_membrane(forward_launches):
    lif = LIF()
    current = make_current(False).requires_grad_(True)
    with torch.no_grad():
        spikes = fused_lif(current, lif.lam, lif.v_th, lif.surrogate, lif.alpha, False)
    (spikes_ref, _), _ = kernel_and_reference(lif, current, spike_weights())
    assert forward_launches[0]["v_mem"] is None and spikes.grad_fn is None
    assert torch.equal(spikes, spikes_ref)


def test_mode_decides_which_tensors_take_a_kernel(monkeypatch):
    current = make_current(False).requires_grad_(True)
    monkeypatch.setattr(kernels, "mode", "all")
    assert type(LIF().run(current).grad_fn).__name__ == "_FusedLIFBackward"
    assert type(first_spike(current, 1.0, 10.0).grad_fn).__name__ == "_FusedFirstSpikeBackward"
    assert type(LIF().run(current.double()).grad_fn).__name__ != "_FusedLIFBackward"  # float64: reference
    monkeypatch.setattr(kernels, "mode", "off")
    assert not kernels.wanted(current)
    monkeypatch.setattr(kernels, "mode", "cuda")
    assert kernels.wanted(current) == current.is_cuda
    monkeypatch.setattr(kernels, "mode", "gpu")
    with pytest.raises(ValueError, match="kernels.mode"):
        kernels.wanted(current)


@pytest.mark.parametrize("static", [True, False])
def test_bptt_and_spiking_inference_through_the_kernel(static, monkeypatch):
    # The first LIF reads an expanded current for static input, a full sequence otherwise.
    torch.manual_seed(0)
    net = MLP(16, [12], 3, neuron=LIF(surrogate="atan", detach_reset=True)).to(DEVICE)
    x = 3 * torch.rand(*(() if static else (T,)), 5, 16, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    y = torch.tensor([0, 1, 2, 0, 1], device=DEVICE)
    bptt, results = methods.get("bptt", T=T), []
    for mode in ("all", "off"):
        monkeypatch.setattr(kernels, "mode", mode)
        net.zero_grad()
        loss, logits = bptt.loss_and_grad(net, x, y)
        deployed = methods.spiking_inference(net, x, T=T)
        results.append([loss, logits, deployed.logits, *deployed.spike_counts,
                        *[p.grad.clone() for p in net.parameters()]])
    assert results[1][3].sum() > 0  # spike counts of the hidden layer: it fires
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def first_spike_cases() -> torch.Tensor:
    """Membranes [T, B, N] with neurons that never fire, fire at t = 0 (and again later:
    only the first crossing counts), fire only at t = T-1, touch the threshold exactly,
    and random ones."""
    gen = torch.Generator().manual_seed(3)
    v_mem = 1.3 * torch.rand(T, B, N, generator=gen)
    v_mem[:, :, 0] = 0.5  # never
    v_mem[:, :, 1] = 0.9
    v_mem[0, :, 1] = 1.2  # at t = 0
    v_mem[3, :, 1] = 1.1  # crosses again later: silent
    v_mem[:, :, 2] = 0.8
    v_mem[-1, :, 2] = 1.05  # at t = T-1 only
    v_mem[:, :, 3] = 0.4
    v_mem[2, :, 3] = 1.0  # exactly at threshold: fires (H(0) = 1)
    return v_mem.to(DEVICE)


def test_first_spike_kernel_equals_first_spike_function():
    v_mem, weights = first_spike_cases(), spike_weights()
    spikes, grad = first_spike_grads(fused_first_spike, v_mem, weights)
    spikes_ref, grad_ref = first_spike_grads(_FirstSpike.apply, v_mem, weights)
    assert spikes_ref[:, :, 0].sum() == 0
    assert spikes_ref[0, :, 1].eq(1).all() and spikes_ref[1:, :, 1].sum() == 0
    assert spikes_ref[-1, :, 2].eq(1).all() and spikes_ref[:-1, :, 2].sum() == 0
    assert spikes_ref[2, :, 3].eq(1).all()
    assert torch.equal(spikes, spikes_ref)
    assert (grad_ref != 0).all()
    torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-6)


def first_spike_grads(fn, v_mem: torch.Tensor, weights: torch.Tensor):
    """Spikes of fn(v_mem, threshold 1, scale 10) and d sum(spikes * weights) / d v_mem."""
    leaf = v_mem.clone().requires_grad_(True)
    spikes = fn(leaf, 1.0, 10.0)
    (spikes * weights).sum().backward()
    return spikes.detach(), leaf.grad


def test_first_spike_kernel_blocks_split_the_neurons(monkeypatch):
    monkeypatch.setattr(first_spike_kernels, "BLOCK", 64)  # four programs, the last holding 8 neurons
    v_mem, weights = first_spike_cases(), spike_weights()
    spikes, grad = first_spike_grads(fused_first_spike, v_mem, weights)
    spikes_ref, grad_ref = first_spike_grads(_FirstSpike.apply, v_mem, weights)
    assert torch.equal(spikes, spikes_ref)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_first_spike_kernel_low_precision_accumulates_in_float32(dtype):
    v_mem, weights = first_spike_cases().to(dtype), spike_weights(dtype)
    spikes, grad = first_spike_grads(fused_first_spike, v_mem, weights)
    spikes_ref, grad_ref = first_spike_grads(_FirstSpike.apply, v_mem.float(), weights.float())
    assert spikes.dtype == grad.dtype == dtype
    assert torch.equal(spikes.float(), spikes_ref)
    torch.testing.assert_close(grad.float(), grad_ref, rtol=1e-2, atol=1e-2)


def test_single_spike_layer_through_the_kernel_equals_sequential(kernels_everywhere):
    gen = torch.Generator().manual_seed(4)
    current = (0.5 * torch.rand(T, B, N, generator=gen) - 0.05).to(DEVICE)
    current[:, :, 0] = -0.1  # never fires
    current[0, :, 1] = 1.5  # fires at t = 0
    weights = [spike_weights(), spike_weights().flip(0)]
    results = []
    for layer in (single_spike_lif, sequential_single_spike):
        leaf = current.clone().requires_grad_(True)
        spikes, v_mem = layer(leaf, 0.8, 1.0, 10.0)
        ((spikes * weights[0]).sum() + (v_mem * weights[1]).sum()).backward()
        results.append([spikes.detach(), v_mem.detach(), leaf.grad])
    assert 0 < results[1][0].sum() < B * N
    assert torch.equal(results[0][0], results[1][0])
    for got, want in zip(results[0][1:], results[1][1:]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# --- SAF's neuron steps (kernels/saf.py) ---------------------------------------------------

@pytest.mark.parametrize("model", ["mlp", "conv"])
@pytest.mark.parametrize("settings", [dict(), dict(reset="subtract_late", strict=True), dict(decay_input=True),
                                      dict(reset="none", tau=math.inf)], ids=str)
def test_saf_kernel_equals_the_step_by_step_reference(model, settings, kernels_everywhere, monkeypatch):
    """The whole trajectory of the MLP's site, the per-step updates of the ConvNet's sites,
    and currents at and one ulp either side of the threshold: sums and counts bit for bit."""
    from spikeacc.kernels import saf as saf_kernels
    from tests.test_saf_fused import Direct, assert_same_trajectory, currents_at_threshold, scaled
    launches = []
    real = saf_kernels.saf_steps
    monkeypatch.setattr(saf_kernels, "saf_steps", lambda *a, **k: launches.append(1) or real(*a, **k))
    torch.manual_seed(0)
    neuron = LIF(**settings)
    net = MLP(12, [9], 4, neuron=neuron) if model == "mlp" else ConvNet((1, 8, 8), (3, 4), 4, neuron=neuron)
    net = scaled(net, 4.0 if neuron.decay_input else 3.0).to(DEVICE)
    assert_same_trajectory(net, torch.rand(5, *net.sample_shape, device=DEVICE), 7, fused_mode="all")
    u = currents_at_threshold(neuron.v_th, 1.0 - neuron.lam if neuron.decay_input else 1.0, torch.float32)
    direct = Direct(LIF(**settings), u.numel()).to(DEVICE)
    assert_same_trajectory(direct, torch.stack([u, 1.5 * u]).to(DEVICE), 6, fused_mode="all")
    assert launches  # the Triton kernel ran


def test_saf_f_through_the_saf_kernel_equals_the_reference(kernels_everywhere):
    from tests.test_saf_fused import gradients, scaled
    torch.manual_seed(0)
    net = scaled(MLP(12, [9], 4, neuron=LIF(surrogate="atan")), 2.0).to(DEVICE)
    x, y = torch.rand(6, 12, device=DEVICE), torch.randint(0, 4, (6,), device=DEVICE)
    fused, reference = (gradients(net, methods.get("saf-f", T=6), x, y, mode) for mode in ("all", "off"))
    assert torch.equal(fused[0], reference[0]) and torch.equal(fused[1], reference[1])
    for grad, grad_ref in zip(fused[2], reference[2], strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-6)

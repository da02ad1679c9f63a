"""Every method gives the same loss and gradients on CUDA as on the CPU (float64,
atol 1e-8: different reduction orders). Skipped on machines without a GPU."""
import copy

import pytest
import torch

from spikeacc import MLP, ConvNet, methods

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("name", methods.names())
@pytest.mark.parametrize("model", ["mlp", "conv"])
def test_cuda_matches_cpu(name, model):
    torch.manual_seed(0)
    net = MLP(64, [32], 10) if model == "mlp" else ConvNet((1, 8, 8), (4, 8), 10)
    net = net.double()
    x = torch.rand(8, *net.sample_shape, dtype=torch.float64)
    y = torch.randint(0, 10, (8,))
    net_gpu = copy.deepcopy(net).cuda()
    method = methods.get(name, T=4)
    loss_cpu, logits_cpu = method.loss_and_grad(net, x, y)
    loss_gpu, logits_gpu = method.loss_and_grad(net_gpu, x.cuda(), y.cuda())
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, rtol=0, atol=1e-8)
    torch.testing.assert_close(logits_gpu.cpu(), logits_cpu, rtol=0, atol=1e-8)
    for p_cpu, p_gpu in zip(net.parameters(), net_gpu.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=0, atol=1e-8)


@pytest.mark.parametrize("T", [16, 130])  # matmul forms; chunked form in sample groups
def test_single_spike_layer_on_cuda_equals_sequential_on_cpu(T, monkeypatch):
    from spikeacc.neurons import single_spike
    monkeypatch.setattr(single_spike, "GROUP_ELEMENTS", 2 * T * 5)  # groups of two samples
    gen = torch.Generator().manual_seed(T)
    current = 0.3 * torch.rand(T, 5, 5, generator=gen, dtype=torch.float64)  # [T, B, N]
    weights = torch.randn(2, T, 5, 5, generator=gen, dtype=torch.float64)
    results = []
    for device, layer in (("cuda", single_spike.single_spike_lif), ("cpu", single_spike.sequential_single_spike)):
        x = current.to(device).requires_grad_(True)
        spikes, v_mem = layer(x, 0.9, 1.0, 10.0)
        ((spikes * weights[0].to(device)).sum() + (v_mem * weights[1].to(device)).sum()).backward()
        results.append([spikes.detach().cpu(), v_mem.detach().cpu(), x.grad.cpu()])
    assert results[1][0].sum() > 0
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-8)


def test_blocks_on_cuda_equal_sequential_on_cpu():
    from spikeacc.neurons.blocks import blocks_lif, sequential_refractory_lif
    gen = torch.Generator().manual_seed(0)
    current = 0.8 * torch.rand(40, 3, 6, generator=gen, dtype=torch.float64)
    results = []
    for device, neuron in (("cuda", blocks_lif), ("cpu", sequential_refractory_lif)):
        x = current.to(device).requires_grad_(True)
        spikes, v_mem = neuron(x, 0.9, 1.0, 4)
        (spikes.sum() + v_mem.sum()).backward()
        results.append([spikes.detach().cpu(), v_mem.detach().cpu(), x.grad.cpu()])
    assert results[1][0].sum(0).max() > 1
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-8)


# The fused Triton kernels (spikeacc.kernels): compiled on the GPU (tests/conftest.py sets
# TRITON_INTERPRET only without one), against the reference loops on the CPU, float32.
# Multiples of 1/32 with lam = 0.5 keep every membrane exact in float32, so spikes match
# bit for bit whatever the GPU's rounding order (fused multiply-add); 3000 neurons span
# three programs of 1024.
KERNEL_SHAPE = (8, 6, 500)  # [T, B, N]


def _dyadic_current(expanded: bool) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    T, B, N = KERNEL_SHAPE
    drive = torch.round(32 * (1.6 * torch.rand(1 if expanded else T, B, N, generator=gen) - 0.2)) / 32
    return drive.expand(T, B, N)


def _spikes_and_grad(run, current: torch.Tensor, weights: torch.Tensor, device: str):
    """run(current) on ``device`` and the gradient of sum(spikes * weights) w.r.t. the
    current, or its one step when the current is expanded over T (stride 0)."""
    expanded = current.stride(0) == 0
    leaf = (current[0] if expanded else current).to(device).requires_grad_(True)
    spikes = run(leaf.expand(current.shape) if expanded else leaf)
    (spikes * weights.to(device)).sum().backward()
    return spikes, leaf.grad


def test_kernels_compile_for_the_gpu():
    import triton
    from spikeacc.kernels import first_spike, lif
    for kernel in (lif._lif_forward, lif._lif_backward, first_spike._first_spike_forward,
                   first_spike._first_spike_backward):
        assert isinstance(kernel, triton.runtime.JITFunction), "TRITON_INTERPRET is set: unset it for the GPU"


@pytest.mark.parametrize("surrogate", ["sigmoid", "atan", "fast_sigmoid", "rect"])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("expanded", [False, True])
def test_lif_kernel_on_cuda_equals_reference_on_cpu(surrogate, detach_reset, expanded):
    from spikeacc import LIF
    lif = LIF(surrogate=surrogate, detach_reset=detach_reset)
    current = _dyadic_current(expanded)
    weights = torch.randn(KERNEL_SHAPE, generator=torch.Generator().manual_seed(6))
    spikes_gpu, grad_gpu = _spikes_and_grad(lif.run, current, weights, "cuda")
    spikes_cpu, grad_cpu = _spikes_and_grad(lif.run, current, weights, "cpu")
    assert type(spikes_gpu.grad_fn).__name__ == "_FusedLIFBackward"  # the kernel ran
    assert 0 < spikes_cpu.mean() < 0.7
    assert torch.equal(spikes_gpu.detach().cpu(), spikes_cpu.detach())
    assert (grad_cpu != 0).any()
    torch.testing.assert_close(grad_gpu.cpu(), grad_cpu, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lif_kernel_low_precision_on_cuda_equals_float32_on_cpu(dtype):
    from spikeacc import LIF
    lif = LIF()
    current = _dyadic_current(False)  # exact in both dtypes
    weights = torch.randn(KERNEL_SHAPE, generator=torch.Generator().manual_seed(7)).to(dtype)
    spikes_gpu, grad_gpu = _spikes_and_grad(lif.run, current.to(dtype), weights, "cuda")
    spikes_cpu, grad_cpu = _spikes_and_grad(lif.run, current, weights.float(), "cpu")
    assert spikes_gpu.dtype == grad_gpu.dtype == dtype
    assert torch.equal(spikes_gpu.detach().float().cpu(), spikes_cpu.detach())
    torch.testing.assert_close(grad_gpu.float().cpu(), grad_cpu, rtol=1e-2, atol=1e-2)


def test_first_spike_kernel_on_cuda_equals_reference_on_cpu():
    from spikeacc.neurons.single_spike import sequential_single_spike, single_spike_lif
    gen = torch.Generator().manual_seed(8)
    T, B, N = KERNEL_SHAPE
    current = 0.5 * torch.rand(T, B, N, generator=gen) - 0.05
    current[:, :, 0] = -0.1  # never fires
    current[0, :, 1] = 1.5  # fires at t = 0
    weights = torch.randn(2, T, B, N, generator=gen)
    results = []
    for device, layer in (("cuda", single_spike_lif), ("cpu", sequential_single_spike)):
        x = current.to(device).requires_grad_(True)
        spikes, v_mem = layer(x, 0.8, 1.0, 10.0)
        ((spikes * weights[0].to(device)).sum() + (v_mem * weights[1].to(device)).sum()).backward()
        results.append([spikes.detach().cpu(), v_mem.detach().cpu(), x.grad.cpu()])
    assert 0 < results[1][0].sum() < B * N
    assert torch.equal(results[0][0], results[1][0])
    for got, want in zip(results[0][1:], results[1][1:]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_bptt_float32_through_the_kernel_on_cuda_equals_cpu():
    torch.manual_seed(0)
    net = MLP(64, [32], 10)
    x = 3 * torch.rand(8, 64)
    y = torch.randint(0, 10, (8,))
    net_gpu = copy.deepcopy(net).cuda()
    method = methods.get("bptt", T=4)
    loss_cpu, logits_cpu = method.loss_and_grad(net, x, y)
    loss_gpu, logits_gpu = method.loss_and_grad(net_gpu, x.cuda(), y.cuda())
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits_gpu.cpu(), logits_cpu, rtol=1e-5, atol=1e-5)
    for p_cpu, p_gpu in zip(net.parameters(), net_gpu.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-5, atol=1e-5)


# The fused paths of issue 19 on CUDA: SAF's neuron steps in Triton (kernels/saf.py) and the
# spikes kept as bits by tensor operations (graph/spike_products.py), against the CPU.

@pytest.mark.parametrize("model", ["mlp", "conv"])
@pytest.mark.parametrize("settings", [dict(), dict(reset="subtract_late", strict=True), dict(decay_input=True)],
                         ids=str)
def test_saf_kernel_on_cuda_equals_the_reference_on_cpu(model, settings):
    """Sums and spike counts of SAF's trajectory bit for bit (float32, random currents and
    currents at and one ulp either side of the threshold): the kernel is compiled without
    fused multiply-add."""
    from spikeacc import LIF, graph, kernels
    from spikeacc.graph import CallContext
    from spikeacc.methods.base import Inputs
    from spikeacc.methods.online import Leaks
    from spikeacc.methods.saf import accumulated_trajectory
    from tests.test_saf_fused import Direct, currents_at_threshold, scaled
    torch.manual_seed(0)
    neuron = LIF(**settings)
    net = MLP(12, [9], 4, neuron=neuron) if model == "mlp" else ConvNet((1, 8, 8), (3, 4), 4, neuron=neuron)
    net = scaled(net, 4.0 if neuron.decay_input else 3.0)
    u = currents_at_threshold(neuron.v_th, 1.0 - neuron.lam if neuron.decay_input else 1.0, torch.float32)
    at_threshold = (Direct(LIF(**settings), u.numel()), torch.stack([u, 1.5 * u]))
    for network, x in ((net, torch.rand(5, *net.sample_shape)), at_threshold):
        results = []
        for device, mode in (("cuda", "auto"), ("cpu", "off")):
            on_device = copy.deepcopy(network).to(device)
            program, batch = graph.of(on_device), x.to(device)
            previous, kernels.mode = kernels.mode, mode
            try:
                results.append(accumulated_trajectory(program, CallContext(len(batch), batch), Leaks(program, own=True),
                                                      Inputs(batch, 7, on_device, program), 7))
            finally:
                kernels.mode = previous
        (sums_gpu, counts_gpu), (sums_cpu, counts_cpu) = results
        for key, value in sums_cpu.items():
            if key[0] != graph.of(network).input:  # the input's sums: to rounding (test_saf_fused.py)
                assert torch.equal(sums_gpu[key].cpu(), value), key
        for counts, counts_ref in zip(counts_gpu, counts_cpu, strict=True):
            assert torch.equal(counts.cpu(), counts_ref)


def test_bptt_keeps_spikes_as_bits_on_cuda():
    from tests.test_spike_products import SpikingVGG
    torch.manual_seed(0)
    net = SpikingVGG().double()
    x, y = torch.rand(6, 1, 6, 6, dtype=torch.float64), torch.randint(0, 5, (6,))
    results = []
    for bits in (True, False):
        copy_ = copy.deepcopy(net).cuda()
        loss, _ = methods.get("bptt", T=5, spike_bits=bits).loss_and_grad(copy_, x.cuda(), y.cuda())
        results.append((loss.cpu(), [p.grad.cpu() for p in copy_.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-12)
    for grad, grad_ref in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)

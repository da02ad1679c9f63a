"""The LIF family (neurons/lif.py). ``lif_window`` (the window without a graph per step,
what BPTT and spiking inference run) against ``neuron_steps``, the step-by-step autograd
reference, for every setting it runs and both of its paths on a CPU: the C kernels
(``kernels.cpu``, the default) and ``_Window``'s PyTorch loops (``kernels.mode = "off"``):
spikes bit for bit, gradients within 1e-12 relative in float64 (1e-5 in float32), also
with membranes exactly at, one ulp below and one ulp above the threshold. The reference
itself against the equations written out for each reset, and the settings' checks."""
import math

import pytest
import torch

from spikeacc import IF, LIF, kernels
from spikeacc.neurons.lif import RESETS, Dynamics, lif_window, neuron_step, neuron_steps, windowed
from spikeacc.neurons.surrogate import SURROGATES

LAM, V_TH, ALPHA = 0.6, 0.8, 3.0
TAU = 1.0 / (1.0 - LAM)
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}  # relative
WINDOWS = {"c": "_LIFWindowBackward", "torch": "_WindowBackward"}  # path -> the grad_fn it leaves


@pytest.fixture(params=list(WINDOWS))
def window(request, monkeypatch):
    """Each test runs on both paths of ``lif_window``; yields the path's grad_fn name."""
    monkeypatch.setattr(kernels, "mode", "auto" if request.param == "c" else "off")
    return WINDOWS[request.param]


def currents(steps: int, shape=(5, 6)) -> torch.Tensor:
    """[steps, *shape] currents around the threshold: some neurons fire, some twice in a row."""
    generator = torch.Generator().manual_seed(steps)
    return (torch.randn(steps, *shape, generator=generator, dtype=torch.float64) * 1.5 + 0.6).requires_grad_()


def relative_error(value: torch.Tensor, expected: torch.Tensor) -> float:
    return ((value - expected).abs().max() / expected.abs().max()).item()


def window_against_reference(neuron: LIF, current: torch.Tensor, T: int, window: str) -> None:
    """lif_window on ``current`` [1 or T, ...] (a leaf) equals neuron_steps: spikes exactly,
    gradients of a random weighting of the spikes to TOLERANCE."""
    upstream = torch.randn(T, *current.shape[1:], generator=torch.Generator().manual_seed(1), dtype=current.dtype)
    dyn = neuron.dynamics()
    expected = neuron_steps(current.expand(T, *current.shape[1:]), dyn)
    (expected_grad,) = torch.autograd.grad((expected * upstream).sum(), current)
    spikes = lif_window(current, T, dyn)
    assert type(spikes.grad_fn).__name__ == window
    (grad,) = torch.autograd.grad((spikes * upstream).sum(), current)
    assert 0 < expected.mean() < 1  # the check sees both outcomes
    assert torch.equal(spikes, expected)
    assert relative_error(grad, expected_grad) <= TOLERANCE[current.dtype]


# (current steps, T): per-step currents; one current for every step, below T = 8 (every
# membrane saved by the PyTorch loop), from T = 8 on (segments recomputed), T not a
# multiple of the segment
SHAPES = [(7, 7), (1, 1), (1, 7), (1, 8), (1, 17), (1, 32)]


@pytest.mark.parametrize("current_steps, T", SHAPES)
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_window_equals_the_step_by_step_reference(current_steps, T, detach_reset, surrogate, window):
    window_against_reference(LIF(TAU, V_TH, surrogate, ALPHA, detach_reset), currents(current_steps), T, window)


SETTINGS = [dict(reset=reset) for reset in RESETS if reset != "subtract_snntorch"] + [
    dict(reset="hard", v_reset=-0.3), dict(reset="hard", v_reset=0.2, decay_input=True),
    dict(decay_input=True), dict(strict=True), dict(reset="subtract_late", strict=True),
    dict(reset="none", decay_input=True)]


def settings_id(settings: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in settings.items())


@pytest.mark.parametrize("current_steps, T", [(7, 7), (1, 7), (1, 17)])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("settings", SETTINGS, ids=settings_id)
def test_window_equals_the_reference_for_every_setting(settings, detach_reset, current_steps, T, window):
    neuron = LIF(TAU, V_TH, "sigmoid", ALPHA, detach_reset, **settings)
    window_against_reference(neuron, currents(current_steps), T, window)


@pytest.mark.parametrize("reset", ["subtract", "hard", "subtract_late"])
def test_window_of_an_if_neuron_equals_the_reference(reset, window):
    window_against_reference(IF(V_TH, "atan", ALPHA, reset=reset), currents(7), 7, window)


def at_threshold(dyn: Dynamics, T: int, dtype: torch.dtype, shape=(3, 40)) -> torch.Tensor:
    """Currents [T, *shape] that put every membrane h[t] (T = 1: h[0] only, the same current
    then repeats) exactly at V_th, one ulp below or one ulp above (by neuron, at random;
    two ulps where no current reaches one), found by nudging each current one ulp at a time
    through the reference's own step."""
    generator = torch.Generator().manual_seed(T)
    target = torch.tensor(dyn.v_th, dtype=dtype).expand(shape)
    ulps = torch.randint(-1, 2, shape, generator=generator)  # -1, 0, +1
    target = torch.where(ulps < 0, target.nextafter(torch.tensor(-math.inf, dtype=dtype)),
                         torch.where(ulps > 0, target.nextafter(torch.tensor(math.inf, dtype=dtype)), target))
    v_post, spike = torch.full(shape, dyn.v_init, dtype=dtype), torch.zeros(shape, dtype=dtype)
    up, down = torch.tensor(math.inf, dtype=dtype), torch.tensor(-math.inf, dtype=dtype)
    steps = []
    for _ in range(T):
        current = (target - neuron_step(v_post, spike, torch.zeros(shape, dtype=dtype), dyn)[0]) / dyn.gain
        for _ in range(8):
            h = neuron_step(v_post, spike, current, dyn)[0]
            current = torch.where(h < target, current.nextafter(up), torch.where(h > target, current.nextafter(down),
                                                                                 current))
        h = neuron_step(v_post, spike, current, dyn)[0]  # where h steps by 2 ulps (after a late
        current = torch.where((ulps > 0) & (h < target), current.nextafter(up),  # subtraction), stay on
                              torch.where((ulps < 0) & (h > target), current.nextafter(down), current))  # the side
        h, spike, v_post = neuron_step(v_post, spike, current, dyn)
        assert (h < dyn.v_th)[ulps < 0].all() and (h > dyn.v_th)[ulps > 0].all()
        assert (h == dyn.v_th)[ulps == 0].float().mean() > 0.5
        steps.append(current)
    return torch.stack(steps).requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("current_steps, T", [(6, 6), (1, 9)])
@pytest.mark.parametrize("settings", SETTINGS + [dict(surrogate="rect")], ids=settings_id)
def test_window_at_just_below_and_just_above_the_threshold(settings, current_steps, T, dtype, window):
    """Membranes one rounding away from the opposite spike: any other rounding of h (a fused
    multiply-add, another order) would change a spike here."""
    neuron = LIF(TAU, V_TH, **{"alpha": ALPHA, **settings})
    current = at_threshold(neuron.dynamics(), current_steps, dtype)
    window_against_reference(neuron, current, T, window)


@pytest.mark.parametrize("current_steps", [7, 1])
@pytest.mark.parametrize("loss", ["sum", "per-neuron weights"])
def test_a_gradient_that_is_the_same_at_every_step_is_read_once(loss, current_steps, window):
    """spikes.sum() or (spikes * w).sum() with w [1, ...] hand the window a gradient expanded
    over t (stride 0): the same gradient as the reference's."""
    current, dyn = currents(current_steps), LIF(TAU, V_TH, "atan", ALPHA).dynamics()
    weights = torch.randn(1, 5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = []
    for run in (lambda c: neuron_steps(c.expand(7, 5, 6), dyn), lambda c: lif_window(c, 7, dyn)):
        spikes = run(current)
        (grad,) = torch.autograd.grad(spikes.sum() if loss == "sum" else (spikes * weights).sum(), current)
        grads.append(grad)
    assert relative_error(grads[1], grads[0]) <= TOLERANCE[torch.float64]


def test_float32_windows_equal_the_reference(window):
    window_against_reference(LIF(TAU, V_TH, "atan", ALPHA), currents(9).detach().float().requires_grad_(), 9, window)


def written_out(current: torch.Tensor, reset: str, lam: float, gain: float, v_th: float, v_reset: float,
                strict: bool) -> torch.Tensor:
    """The module docstring's equations per neuron, in Python floats, for one neuron's currents [T]."""
    fires = (lambda h: h > v_th) if strict else (lambda h: h >= v_th)
    v_rest = v_reset if reset == "hard" else 0.0
    v, s_prev, r_prev, spikes = v_rest, 0.0, 0.0, []
    for i in current.tolist():
        h = lam * v + (1 - lam) * v_rest + gain * i
        if reset == "subtract_late":
            h -= v_th * s_prev
        r = float(v > v_th) if reset == "subtract_snntorch" else 0.0
        h -= v_th * r
        s = float(fires(h))
        v = {"subtract": h - v_th * s, "subtract_snntorch": h - v_th * (s - r), "hard": v_reset if s else h}.get(
            reset, h)
        spikes.append(s)
        s_prev = s
    return torch.tensor(spikes, dtype=torch.float64)


@pytest.mark.parametrize("settings", [dict(reset=r) for r in RESETS] + [
    dict(reset="hard", v_reset=-0.5, decay_input=True), dict(strict=True, reset="subtract_snntorch")])
def test_the_reference_follows_the_equations(settings):
    neuron = LIF(TAU, V_TH, **settings)
    current = torch.randn(40, 1, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.2 + 0.9
    spikes = neuron_steps(current, neuron.dynamics())
    gain = 1 - LAM if neuron.decay_input else 1.0
    for k in range(3):
        expected = written_out(current[:, 0, k], neuron.reset, LAM, gain, V_TH, neuron.v_reset, neuron.strict)
        assert torch.equal(spikes[:, 0, k], expected), k
    assert spikes.sum() > 5


def test_snntorch_recheck_differs_from_subtraction_only_above_twice_the_threshold():
    """Below 2 V_th both resets fire alike; a membrane of 2.5 V_th is reset twice by snnTorch's rule."""
    low = torch.full((6, 1, 1), 0.7, dtype=torch.float64)
    spikes = {reset: neuron_steps(low, LIF(2.0, 1.0, reset=reset).dynamics()) for reset in ("subtract", "subtract_snntorch")}
    assert torch.equal(spikes["subtract"], spikes["subtract_snntorch"]) and spikes["subtract"].sum() > 0
    burst = torch.tensor([2.6, 0.0, 0.0, 0.0], dtype=torch.float64).view(4, 1, 1)
    late = neuron_steps(burst, LIF(2.0, 1.0, reset="subtract_snntorch").dynamics())
    plain = neuron_steps(burst, LIF(2.0, 1.0, reset="subtract").dynamics())
    assert plain.flatten().tolist() == [1, 0, 0, 0] and late.flatten().tolist() == [1, 0, 0, 0]
    surge = torch.tensor([3.5, 0.0, 0.0], dtype=torch.float64).view(3, 1, 1)
    assert neuron_steps(surge, LIF(2.0, 1.0, reset="subtract").dynamics()).flatten().tolist() == [1, 1, 0]
    assert neuron_steps(surge, LIF(2.0, 1.0, reset="subtract_snntorch").dynamics()).flatten().tolist() == [1, 0, 0]


def test_learnable_settings_get_gradients_through_the_reference():
    neuron = LIF(3.0, learn_tau=True, decay_input=True, reset="hard").double()
    snn = LIF(beta=torch.tensor([0.5, 0.9, 0.7]), learn_beta=True, v_th=0.9, learn_v_th=True,
              reset="subtract_late", strict=True).double()
    assert not windowed(neuron.dynamics()) and not windowed(snn.dynamics())
    for module, names in ((neuron, {"w"}), (snn, {"beta", "threshold"})):
        current = currents(9, (4, 3))
        spikes = module.run(current)
        (spikes * torch.arange(9.0, dtype=torch.float64).view(9, 1, 1)).sum().backward()
        assert set(module.learnable) == names
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_a_shared_current_saves_nothing_over_time(window):
    """A one-step current saves nothing [T, B, ...]: the C kernels only the current (the
    backward recomputes every membrane), the PyTorch loop from T = 8 on h every ~sqrt(T)
    steps; the spikes the next layer holds are freed once it has read them. A current per
    step saves its membranes [T, B, ...] (the C kernels; as large as the current)."""
    T, current = 32, currents(1)
    spikes = lif_window(current, T, LIF(TAU, V_TH).dynamics())
    saved = [tuple(t.shape) for t in spikes.grad_fn.saved_tensors if t is not None]
    # the PyTorch loop: h at t = 5, 11, ..., 29 (segments of 6), and the current
    assert saved == ([(1, 5, 6)] if window == WINDOWS["c"] else [(5, 5, 6), (1, 5, 6)])
    per_step = lif_window(currents(T), T, LIF(TAU, V_TH).dynamics())
    assert [tuple(t.shape) for t in per_step.grad_fn.saved_tensors if t is not None][0] == (T, 5, 6)


def test_a_second_backward_with_retain_graph_gives_the_same_gradient(window):
    current = currents(1)
    spikes = lif_window(current, 16, LIF(TAU, V_TH, "atan", ALPHA).dynamics())
    loss = (spikes * torch.arange(16.0, dtype=torch.float64).view(16, 1, 1)).sum()
    (first,) = torch.autograd.grad(loss, current, retain_graph=True)
    (second,) = torch.autograd.grad(loss, current)
    assert torch.equal(first, second)


def test_without_a_gradient_nothing_is_saved(window):
    current = currents(9)
    dyn = LIF(TAU, V_TH).dynamics()
    with torch.no_grad():
        spikes = lif_window(current, 9, dyn)
    assert spikes.grad_fn is None
    assert torch.equal(spikes, neuron_steps(current, dyn).detach())


def test_settings_rebuild_an_equal_neuron():
    for neuron in (LIF(), IF(reset="hard"), LIF(3.0, reset="hard", v_reset=-0.2, decay_input=True, strict=True),
                   LIF(beta=0.8, reset="subtract_late"), LIF(4.0, learn_tau=True), LIF(learn_v_th=True, v_th=0.7)):
        twin = type(neuron)(**neuron.settings())
        assert twin.settings().keys() == neuron.settings().keys()
        assert twin.dynamics()._replace(lam=0, gain=0, v_th=0) == neuron.dynamics()._replace(lam=0, gain=0, v_th=0)
        torch.testing.assert_close(torch.as_tensor(twin.lam), torch.as_tensor(neuron.lam))
    assert IF().lam == 1.0 and IF().tau == math.inf


@pytest.mark.parametrize("kwargs, message", [
    (dict(reset="soft"), "unknown reset"), (dict(v_reset=0.5), "needs reset='hard'"),
    (dict(tau=math.inf, decay_input=True), "IF neuron"), (dict(beta=1.5), "beta"),
    (dict(learn_tau=True, learn_beta=True), "not both"), (dict(tau=math.inf, learn_tau=True), "finite"),
    (dict(v_th=torch.tensor([1.0, -1.0])), "v_th must be > 0")])
def test_impossible_settings_are_refused_with_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LIF(**kwargs)

"""Building and loading the C kernels (kernels/cpu.py): built once into the cache and reused;
without a compiler one warning and the PyTorch loops, with the same results; the results
do not depend on the number of threads. What the kernels compute is tested against the
references in test_lif.py, test_saf_fused.py and test_spike_products.py."""
from __future__ import annotations

import subprocess

import pytest
import torch

from spikeacc import LIF, kernels
from spikeacc.kernels import cpu
from spikeacc.neurons.lif import lif_window


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """An empty cache directory, the library loaded afresh (and again after the test)."""
    monkeypatch.setenv("SPIKEACC_CACHE", str(tmp_path))
    cpu.library.cache_clear()
    yield tmp_path
    cpu.library.cache_clear()


def test_the_library_is_built_once_and_then_read_from_the_cache(fresh_library, monkeypatch):
    assert cpu.library() is not None
    (built,) = fresh_library.glob("spikeacc-cpu-*.so")
    cpu.library.cache_clear()
    real_run = subprocess.run

    def no_compiling(command, *args, **kwargs):
        assert "-o" not in command, "rebuilt although the cache holds the library"
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", no_compiling)
    assert cpu.library() is not None and list(fresh_library.glob("spikeacc-cpu-*.so")) == [built]


def test_without_a_compiler_one_warning_and_the_same_results(fresh_library, monkeypatch):
    current = (torch.rand(1, 4, 9, dtype=torch.float64) * 1.5).requires_grad_()
    dyn = LIF().dynamics()
    expected = lif_window(current, 6, dyn)
    assert type(expected.grad_fn).__name__ == "_LIFWindowBackward"
    cpu.library.cache_clear()
    monkeypatch.setenv("CC", str(fresh_library / "no-such-compiler"))
    monkeypatch.setenv("SPIKEACC_CACHE", str(fresh_library / "empty"))
    with pytest.warns(RuntimeWarning, match="the CPU kernels are not available"):
        assert not kernels.native(current)
    spikes = lif_window(current, 6, dyn)  # no second warning: the library is None from now on
    assert type(spikes.grad_fn).__name__ == "_WindowBackward" and torch.equal(spikes, expected)


@pytest.mark.parametrize("steps", [1, 5])
def test_threads_do_not_change_a_result(steps):
    current = (torch.rand(steps, 3, 2000) * 1.5).requires_grad_()
    weights = torch.randn(5, 3, 2000)
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            spikes = lif_window(current, 5, LIF().dynamics())
            results.append((spikes, torch.autograd.grad((spikes * weights).sum(), current)[0]))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])

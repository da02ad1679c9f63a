"""Shared test fixtures.

Without a GPU, Triton kernels run under Triton's interpreter (tests/test_triton_kernels.py).
Triton reads ``TRITON_INTERPRET`` when it is imported and when a kernel is defined, so it
is set here, before any test module imports spikeacc.kernels; with a GPU the kernels compile.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype (restored afterwards)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)

"""``--model``: a user's builder found as ``python -m`` finds a module (the current directory
first), called with the sample shape and the number of classes or with its own literal
arguments, converted when it holds SpikingJelly or snnTorch modules; every failure one line."""
from __future__ import annotations

import json

import pytest
import torch

from spikeacc import LIF
from spikeacc.model_spec import build_network

from tests.peers import require
from tests.test_cli import TINY, in_process, one_error_line

BUILDERS = '''
from torch import nn
from spikeacc import LIF


def build(sample_shape, n_classes):
    return wide(n_classes=n_classes)


def wide(width=12, n_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), LIF(tau=3.0), nn.Linear(width, n_classes))


def broken(sample_shape, n_classes):
    return 1 / 0


NOT_A_FUNCTION = 3
'''

SPIKINGJELLY = '''
from torch import nn
from spikingjelly.activation_based import layer, neuron


def build(sample_shape, n_classes):
    return nn.Sequential(layer.Flatten(), layer.Linear(64, 24), neuron.LIFNode(tau=2.0),
                         layer.Linear(24, n_classes))
'''


@pytest.fixture
def in_cwd(tmp_path, monkeypatch):
    """A directory with the users' modules, made the current directory (nothing on sys.path)."""
    (tmp_path / "spec_nets.py").write_text(BUILDERS)
    (tmp_path / "spec_typo.py").write_text("def build(sample_shape, n_classes)\n    return None\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_module_in_the_current_directory_trains_and_exports(in_cwd, capsys):
    out = in_cwd / "run"
    assert in_process("train", *TINY[:-2], "--epochs", "1", "--model", "spec_nets:build", "--out", str(out)) == 0
    assert json.loads((out / "metrics.json").read_text())["n_parameters"] == 64 * 12 + 12 + 12 * 10 + 10
    assert in_process("export", "--format", "nir", str(out / "checkpoint.pt"), str(in_cwd / "m.nir"),
                      "--allow-lossy") == 0
    assert "wrote" in capsys.readouterr().out


def test_a_builder_called_with_its_own_arguments(in_cwd):
    net = build_network("spec_nets:wide(width=5, n_classes=3)", (1, 8, 8), 10)
    assert net[1].out_features == 5 and net[3].out_features == 3 and net.sample_shape == (1, 8, 8)


@pytest.mark.parametrize("spec, message", [
    ("spec_typo:build", "'spec_typo' has a syntax error at"),
    ("spec_nets:broken", "calling it with ((1, 8, 8), 10) raised ZeroDivisionError: division by zero (at "),
    ("spec_nets:NOT_A_FUNCTION", "'NOT_A_FUNCTION' is a int, not a function that builds a network"),
    ("spec_nets:wide(width=", "is neither a name nor a call"),
    ("spec_nets:wide(width=len)", "the arguments must be Python literals"),
    ("spec_nets:wide(depth=3)", "raised TypeError: wide() got an unexpected keyword argument 'depth'"),
    ("spec_nets:nope", "module 'spec_nets' has no 'nope'"),
])
def test_a_model_that_cannot_be_built_is_one_line(in_cwd, capsys, spec, message):
    assert in_process("train", *TINY[:-2], "--model", spec, "--out", str(in_cwd / "bad")) == 2
    assert message in one_error_line(capsys.readouterr().err)


def test_a_spikingjelly_network_trains_from_the_command_line(in_cwd):
    require("spikingjelly.activation_based.neuron")
    (in_cwd / "spec_sj.py").write_text(SPIKINGJELLY)
    out = in_cwd / "sj"
    assert in_process("train", *TINY[:-2], "--epochs", "1", "--method", "bptt", "--model", "spec_sj:build",
                      "--out", str(out)) == 0
    assert json.loads((out / "metrics.json").read_text())["n_parameters"] == 64 * 24 + 24 + 24 * 10 + 10


def test_spikingjellys_ottt_vggws_by_its_own_arguments():
    require("spikingjelly.activation_based.model.spiking_vggws_ottt")
    spec = "spikingjelly.activation_based.model.spiking_vggws_ottt:ottt_spiking_vggws(num_classes=10)"
    net = build_network(spec, (3, 32, 32), 10)
    assert sum(isinstance(m, LIF) for m in net.modules()) == 8 and net.classifier[2].out_features == 10
    assert torch.isfinite(next(iter(net.parameters()))).all()

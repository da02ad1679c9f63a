"""The peer libraries (SpikingJelly, snnTorch, Norse) for the tests that run their own code.

CI installs them without their dependencies (``.ci/run``) and sets SPIKEACC_REQUIRE_PEERS=1,
so a peer that fails to import fails the run there instead of skipping its tests; a
checkout without them skips those tests.

SpikingJelly's model modules import torchvision for ``load_state_dict_from_url`` (pretrained
weights, never used here). torchvision's wheels on PyPI are built for the CUDA torch and do
not load with the CPU build, so where torchvision does not import, that one function is
provided from torch.hub (the same function torchvision re-exports).
"""
from __future__ import annotations

import importlib
import os
import sys
import types

import pytest
import torch


def require(module: str):
    """Import a peer's module, or skip (fail under SPIKEACC_REQUIRE_PEERS=1) if it is missing."""
    if module.startswith("spikingjelly"):
        _torchvision_for_spikingjelly()
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if os.environ.get("SPIKEACC_REQUIRE_PEERS") == "1":
            raise
        pytest.skip(f"{module} is not installed ({err}); pip install --no-deps spikingjelly snntorch norse")


def _torchvision_for_spikingjelly() -> None:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001  (missing, or a CUDA build that does not load)
        utils = types.ModuleType("torchvision._internally_replaced_utils")
        utils.load_state_dict_from_url = torch.hub.load_state_dict_from_url
        package = types.ModuleType("torchvision")
        package._internally_replaced_utils = utils
        sys.modules["torchvision"], sys.modules["torchvision._internally_replaced_utils"] = package, utils

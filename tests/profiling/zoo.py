"""spikingjelly's model zoo for the peer suite, importable without torchvision.

spikingjelly's ResNet modules import ``load_state_dict_from_url`` from torchvision (only for pretrained
weights, which the tests never load). Where torchvision is not installed, a stand-in module gives them
torch's own ``torch.hub.load_state_dict_from_url`` (the function torchvision re-exports).
"""

from __future__ import annotations

import importlib
import sys
import types

import torch


def zoo(name: str) -> types.ModuleType:
    """``spikingjelly.activation_based.model.<name>``, with the torchvision stand-in if needed."""
    try:
        importlib.import_module("torchvision")
    except ImportError:
        if "torchvision._internally_replaced_utils" not in sys.modules:
            utils = types.ModuleType("torchvision._internally_replaced_utils")
            utils.load_state_dict_from_url = torch.hub.load_state_dict_from_url
            sys.modules["torchvision._internally_replaced_utils"] = utils
            # a package in name only: the zoo imports nothing else of it
            sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
    return importlib.import_module(f"spikingjelly.activation_based.model.{name}")

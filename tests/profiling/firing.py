"""A sdit-tiny that fires: its Linear weights scaled up (untrained weights barely cross the threshold)."""

from __future__ import annotations

import torch
from torch import nn

from profiling.records import Profile
from profiling.workloads import profile_forward
from sdit.models import build_model


def firing_sdit_tiny(batch_size: int) -> Profile:
    """One forward of sdit-tiny (seed 0 weights, Linear weights x 8; input seed 1) at ``batch_size``."""
    torch.manual_seed(0)
    model = build_model("sdit-tiny")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(8.0)
    return profile_forward(model, name="sdit-tiny", batch_size=batch_size, seed=1)

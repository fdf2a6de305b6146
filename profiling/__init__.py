"""Per-layer op counting, energy models and power meters.

The public entry points are :func:`profile` (count MACs, ACs and spikes per layer of any PyTorch
model, or of a preset / checkpoint) and :func:`estimate` (its energy under a cost preset and a
counting convention); see :mod:`profiling.api`. Importing :mod:`profiling` does not import torch.

The submodule :mod:`profiling.profile` (assembling profiles from raw counts) is loaded first, so
that the package attribute ``profile`` is the function: ``from profiling.profile import build_profile``
keeps working, while ``from profiling import profile`` gives :func:`profiling.api.profile`.
"""

from profiling import profile as _assembly  # noqa: F401  (the submodule, bound before the function below)
from profiling.api import estimate, profile

__all__ = ["estimate", "profile"]

"""sdit: the Spiking Diffusion Transformer, its DiT baseline, and DDPM/DDIM diffusion.

The profiler's public API is :func:`profiling.profile` and :func:`profiling.estimate` (the package
above this one); ``sdit.profile`` and ``sdit.estimate`` say so.
"""

from typing import Any as _Any

__version__ = "0.3.0"
__all__ = ["__version__"]
_MOVED = {"profile": "profiling.profile", "estimate": "profiling.estimate"}


def __getattr__(name: str) -> _Any:
    if name in _MOVED:
        raise AttributeError(f"sdit.{name} is {_MOVED[name]}: use `from profiling import {name}`")
    raise AttributeError(f"module 'sdit' has no attribute {name!r}")

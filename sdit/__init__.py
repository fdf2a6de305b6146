"""sdit: the Spiking Diffusion Transformer, its DiT baseline, and DDPM/DDIM diffusion.

``sdit.profile(model, x)`` and ``sdit.estimate(profile, ...)`` are the profiler's public API
(:mod:`profiling.api`), loaded on first use so that ``import sdit`` stays cheap.
"""

from typing import Any as _Any

__version__ = "0.1.0"
__all__ = ["__version__", "estimate", "profile"]
_API = ("estimate", "profile")


def __getattr__(name: str) -> _Any:
    if name in _API:
        from profiling import api

        return getattr(api, name)
    raise AttributeError(f"module 'sdit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})

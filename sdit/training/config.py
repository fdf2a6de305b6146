"""What determines a training run (:class:`TrainConfig`), and what a resume may change.

A run's config is saved in its ``run.json`` (:func:`load_run_config` reads it back, checking every
field's type); a resume must equal it outside :data:`RESUME_MUTABLE` (:func:`resume_config`), so
that it continues the run exactly.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from sdit.config import get_preset
from sdit.rundir import RUN_FILE

SEED_MAX = 2**63 - 1


class TrainError(ValueError):
    """A run cannot start or resume as asked (one-line message)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run.

    Attributes:
        preset: Model preset (:data:`sdit.config.PRESETS`).
        dataset: Dataset name (:data:`sdit.data.DATASETS`).
        data_dir: Folder of the dataset files; ``None`` for the default place.
        batch_size: Global batch, split evenly over ranks.
        steps: Optimizer steps to reach (total, counting steps before a resume).
        epochs: Alternative to ``steps``: whole passes over the data (last partial batch dropped).
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: Steps of linear learning-rate warm-up.
        grad_clip: Max global gradient norm.
        ema_decay: EMA decay (with warm-up, see :class:`sdit.ema.EMA`).
        seed: Seeds the initialisation, data order, timesteps and noise.
        log_every: Steps between metrics records.
        sample_every: Steps between sample grids (0: only at the end).
        ckpt_every: Steps between checkpoints (0: only at the end).
        keep: Checkpoints kept.
        sample_num: Images in a sample grid.
        sample_steps: DDIM steps for a sample grid.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        compile: Run the training forward and backward through ``torch.compile``
            (same model and loss; float rounding may differ from eager in the last bits).
            Sample grids and the EMA model stay eager.
        rate_penalty: Weight lambda of the firing-rate penalty: the loss becomes eps-MSE + lambda x the pooled
            mean firing rate of the LIF layers over the step's forward (spikes / neuron-steps, differentiable
            through the surrogate gradient). 0 turns it off. It trades sample quality for sparser spikes.
        init_from: Start from these weights instead of a fresh initialisation: a checkpoint of ours
            (its EMA weights) or an authors' ``.pt`` (their raw weights; their optimiser state is not
            carried over). Its config must equal the preset's.

    The objective follows the model: a learned-sigma model (the authors' layout) trains with their
    MSE + vb loss (:func:`sdit.iddpm.training_loss`), a class-conditional one on the dataset's labels
    (dropped to the null class inside the model), grey images are repeated to the model's channels.
    """

    preset: str = "sdit-small"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    batch_size: int = 64
    steps: int | None = None
    epochs: int | None = None
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    seed: int = 0
    log_every: int = 50
    sample_every: int = 1000
    ckpt_every: int = 1000
    keep: int = 3
    sample_num: int = 16
    sample_steps: int = 50
    device: str | None = None
    compile: bool = False
    rate_penalty: float = 0.0
    init_from: str | None = None

    def __post_init__(self) -> None:
        if getattr(get_preset(self.preset), "quantized", False):  # get_preset: UnknownPresetError early
            raise ValueError(f"{self.preset} is a quantized preset: it is made from trained weights by "
                             "`sdit quantize`, not trained")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps and epochs")
        for name in ("batch_size", "log_every", "keep", "sample_num", "sample_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps", "epochs", "warmup_steps", "sample_every", "ckpt_every"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name in ("lr", "weight_decay", "grad_clip", "ema_decay", "rate_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError("lr and grad_clip must be positive")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.rate_penalty < 0:
            raise ValueError(f"rate_penalty must be >= 0, got {self.rate_penalty}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be in [0, 2**63 - 1], got {self.seed}")


# Fields a resumed run may change: they decide how long to run, where the data lie and
# what to write, not the arithmetic of a step (the data themselves are checked by hash).
# Any other field must equal the run's saved value.
RESUME_MUTABLE = frozenset(
    {"steps", "epochs", "data_dir", "log_every", "sample_every", "ckpt_every", "keep", "sample_num",
     "sample_steps", "device", "compile"}
)


def resume_config(saved: TrainConfig, **changes: Any) -> TrainConfig:
    """``saved`` with ``changes`` applied, refusing changes that would break exact resume.

    Raises:
        TrainError: a change to a field outside :data:`RESUME_MUTABLE`.
    """
    clash = sorted(k for k, v in changes.items() if k not in RESUME_MUTABLE and v != getattr(saved, k))
    if clash:
        detail = ", ".join(f"{k}={changes[k]!r} (run has {getattr(saved, k)!r})" for k in clash)
        raise TrainError(f"cannot resume with a different {detail}; resume continues the run as configured")
    if "steps" in changes and changes["steps"] is not None:
        changes.setdefault("epochs", None)
    if "epochs" in changes and changes["epochs"] is not None:
        changes.setdefault("steps", None)
    return replace(saved, **changes)


def load_run_config(run_dir: Path | str) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run directory.

    Raises:
        TrainError: no run there, or an unreadable ``run.json``.
    """
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise TrainError(f"no training run at {run_dir} (missing {RUN_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["train"]
        unknown = sorted(set(data) - {f.name for f in fields(TrainConfig)})
        if unknown:
            raise TrainError(f"{path}: unknown train config keys: {', '.join(unknown)}")
        _check_field_types(data, path)
        return TrainConfig(**data)
    except TrainError:
        raise
    except (OSError, KeyError, TypeError, ValueError, RecursionError) as err:
        raise TrainError(f"{path} is unreadable: {' '.join(str(err).split())}") from None


def _check_field_types(data: dict[str, Any], path: Path) -> None:
    """Each value of a saved train config has its field's type (``int`` is not ``bool``; ``float`` takes ints)."""
    hints = typing.get_type_hints(TrainConfig)
    for key, value in data.items():
        allowed = typing.get_args(hints[key]) or (hints[key],)
        ok = any(
            (kind is type(None) and value is None)
            or (kind is bool and isinstance(value, bool))
            or (kind is int and isinstance(value, int) and not isinstance(value, bool))
            or (kind is float and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (kind is str and isinstance(value, str))
            for kind in allowed
        )
        if not ok:
            names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
            raise TrainError(f"{path}: train config {key} must be {names}, got {type(value).__name__}")

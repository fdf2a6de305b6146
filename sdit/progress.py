"""Progress of long loops: the library reports steps, a front end (the CLI, a notebook) renders them.

The library never prints. A loop opens a :func:`task` and calls its ``on_step(done, total)`` callback
after each step; the task goes to the *reporter* of the current context, which :func:`reporting`
installs. The default reporter does nothing, so library use stays silent and costs one call per step.

    with reporting(my_reporter):          # the CLI passes its rich renderer (cli.common)
        sample(model, workload)            # each sampling step reaches my_reporter.update

Loops that report: every sampling run (:func:`sdit.diffusion.run_steps`, hence ``sample``,
profiling a sampling run and measuring one) and the batches and feature passes of
:func:`sdit.quality.evaluate.evaluate`. Tasks nest (a comparison profiles targets, each a
sampling run); a reporter sees them as separate tasks, started and ended in order. In a notebook,
``reporting(TqdmReporter())`` shows them as tqdm bars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

StepCallback = Callable[[int, int | None], None]
"""``on_step(done, total)``: ``done`` steps of ``total`` (``None``: unknown) are finished."""


class Reporter(Protocol):
    """What renders progress: one call when a task starts, one per step, one when it ends."""

    def start(self, label: str, total: int | None) -> Any:
        """A task named ``label`` of ``total`` steps (``None``: unknown) begins; returns its handle."""

    def update(self, handle: Any, done: int) -> None:
        """``done`` steps of the task are finished."""

    def end(self, handle: Any) -> None:
        """The task is over (finished, failed or abandoned)."""


class NullReporter:
    """The default: renders nothing."""

    def start(self, label: str, total: int | None) -> None:
        return None

    def update(self, handle: Any, done: int) -> None:
        return None

    def end(self, handle: Any) -> None:
        return None


class RecordingReporter:
    """Keeps every call as a tuple, for tests: ``("start", label, total)``, ``("update", label, done)``,
    ``("end", label)``."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def start(self, label: str, total: int | None) -> str:
        self.events.append(("start", label, total))
        return label

    def update(self, handle: Any, done: int) -> None:
        self.events.append(("update", handle, done))

    def end(self, handle: Any) -> None:
        self.events.append(("end", handle))


class TqdmReporter:
    """tqdm bars (``tqdm.auto``: widgets in a notebook, text on a terminal), for library users who want
    progress: ``with reporting(TqdmReporter()): sdit_profile(...)``. Nothing is drawn until a task starts."""

    def __init__(self, leave: bool = False, **tqdm_options: Any) -> None:
        self._options = {"leave": leave, "dynamic_ncols": True, **tqdm_options}

    def start(self, label: str, total: int | None) -> Any:
        from tqdm.auto import tqdm  # a dependency already (the training loop's bar)

        return tqdm(total=total, desc=label, **self._options)

    def update(self, handle: Any, done: int) -> None:
        handle.update(done - handle.n)

    def end(self, handle: Any) -> None:
        handle.close()


_NULL = NullReporter()
_CURRENT: ContextVar[Reporter | None] = ContextVar("sdit_progress_reporter", default=None)


def current() -> Reporter:
    """The reporter of the current context (a :class:`NullReporter` unless :func:`reporting` set one)."""
    return _CURRENT.get() or _NULL


@contextmanager
def reporting(reporter: Reporter | None) -> Iterator[Reporter]:
    """Send the progress of the loops run inside this block to ``reporter`` (``None``: nowhere)."""
    token = _CURRENT.set(reporter)
    try:
        yield current()
    finally:
        _CURRENT.reset(token)


@contextmanager
def task(label: str, total: int | None, on_step: StepCallback | None = None) -> Iterator[StepCallback]:
    """One task of the current reporter, for a loop of ``total`` steps; yields ``on_step(done, total)``.

    Args:
        label: What the loop does, e.g. ``"ddim sampling, 50 steps"``.
        total: Number of steps, ``None`` when unknown.
        on_step: Also called with every step (a caller's own callback), after the reporter.
    """
    reporter = current()
    handle = reporter.start(label, total)

    def step(done: int, total_: int | None = total) -> None:
        reporter.update(handle, done)
        if on_step is not None:
            on_step(done, total_)

    try:
        yield step
    finally:
        reporter.end(handle)

"""sdit.progress: the sampling loops report their steps to the context's reporter and a caller's
on_step callback; the library stays silent and free of rich."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import torch

from sdit import progress
from sdit.diffusion import sample
from sdit.workload import Workload


class Zero(torch.nn.Module):
    """eps = 0 for every input: a model that costs nothing."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(in_channels=1, image_size=size)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_sample_reports_each_step_to_the_reporter_and_the_callback() -> None:
    seen: list[tuple[int, int | None]] = []
    recorder = progress.RecordingReporter()
    with progress.reporting(recorder):
        sample(Zero(4), Workload.ddim(3), on_step=lambda d, n: seen.append((d, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    label = "ddim sampling, 3 steps"
    assert recorder.events == [("start", label, 3), ("update", label, 1), ("update", label, 2),
                               ("update", label, 3), ("end", label)]


def test_ddpm_reports_all_training_steps_and_nothing_outside_a_reporting_block() -> None:
    recorder = progress.RecordingReporter()
    with progress.reporting(recorder):
        sample(Zero(2), Workload.ddpm())
    assert recorder.events[0] == ("start", "ddpm sampling, 1000 steps", 1000)
    assert len(recorder.events) == 1002 and recorder.events[-1] == ("end", "ddpm sampling, 1000 steps")
    sample(Zero(2), Workload.ddim(2))  # after the block: back to silence
    assert len(recorder.events) == 1002
    assert isinstance(progress.current(), progress.NullReporter)


def test_a_task_ends_when_its_loop_fails() -> None:
    recorder = progress.RecordingReporter()
    try:
        with progress.reporting(recorder), progress.task("work", 2) as step:
            step(1)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert recorder.events == [("start", "work", 2), ("update", "work", 1), ("end", "work")]


def test_the_library_imports_no_rich() -> None:
    code = "import sys, sdit.progress, sdit.diffusion, sdit.quality.evaluate; print('rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tqdm_reporter_draws_the_steps_on_the_stream_it_is_given() -> None:
    import io

    stream = io.StringIO()
    with progress.reporting(progress.TqdmReporter(file=stream, leave=True, ascii=True)):
        sample(Zero(2), Workload.ddim(4))
    assert "ddim sampling, 4 steps" in stream.getvalue() and "4/4" in stream.getvalue()

"""Training step of the spike-driven SDiT: Eq. SD-3's two forms, ratio measured in one run, interleaved.

``shift_linears`` trains through the left-hand side of Eq. SD-3 (the real token-shift mix of spikes
against the (out, D) weight) and counts, samples and profiles through the right-hand side (binary
[s_n; s_{n-1}] against the folded (out, 2D) weight, twice the multiply-adds of those five GEMMs).
This bench alternates full training steps (forward, backward, fused AdamW) of the two forms on the
same model and batch and prints each form's median step time and their ratio.

    OMP_NUM_THREADS=2 .venv/bin/python bench/sd_train_forms.py [--preset sdit-small-sd] [--batch-size 64]

Measured step times, with date and machine, are in docs/speed.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sdit.models.spike_driven as sdit_module  # noqa: E402
from sdit.config import get_preset  # noqa: E402
from sdit.diffusion import Diffusion  # noqa: E402
from sdit.heap import heap_status, retain_freed_memory  # noqa: E402
from sdit.models import build_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sdit-small-sd")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6, help="pairs of steps timed (the first pair is warm-up)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    retain_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = get_preset(args.preset)
    if not getattr(config, "spike_driven", False):
        parser.error(f"{args.preset} is not a spike-driven preset")
    model = build_model(args.preset).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    diffusion = Diffusion()
    x = torch.randn(args.batch_size, config.in_channels, config.image_size, config.image_size)
    hooked = sdit_module._hooked

    def step(mix_form: bool) -> float:
        # True forces the pair form
        sdit_module._hooked = hooked if mix_form else (lambda *modules, backward=False: True)
        try:
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            diffusion.loss(model, x, torch.Generator().manual_seed(0)).backward()
            optimizer.step()
            return time.perf_counter() - start
        finally:
            sdit_module._hooked = hooked

    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds + 1):
        for mix_form in (True, False):
            times[mix_form].append(step(mix_form))
    mix, pair = (statistics.median(times[form][1:]) for form in (True, False))
    print(f"{args.preset}, batch {args.batch_size}, {torch.get_num_threads()} threads, heap: {heap_status()}")
    print(f"mix form (training)  {mix:.3f} s/step")
    print(f"pair form (counted)  {pair:.3f} s/step")
    print(f"pair / mix           {pair / mix:.2f}x")


if __name__ == "__main__":
    main()

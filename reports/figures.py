"""Plotly figures from the tidy tables of :mod:`reports.tables`: DataFrame in, Figure out.

Plotly reads a subset of HTML in every piece of text (trace names, category labels, titles),
so all text that reaches a figure goes through :func:`_e` (HTML-escaped: a layer named
``<b>`` shows as ``<b>``). Every axis says its unit; every title its convention and preset.
Trace counts are part of the contract (the browser test checks them): each function's
docstring says how many traces it draws.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from reports.tables import ROLES

PALETTE = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a", "#e16f24", "#0a3069")
MARK = "#8c959f"  # reference lines and markers: a grey that reads on the light and the dark page alike
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=False)


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, **extra: Any) -> go.Figure:
    layout = {"title": {"text": _e(title), "x": 0.0, "xanchor": "left", "font": {"size": 14}},
              "template": "plotly_white", "font": {"family": "system-ui, sans-serif", "size": 12},
              "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",  # the page's colour shows
              "margin": {"l": 70, "r": 20, "t": 50, "b": 60}, "legend": {"orientation": "h", "y": -0.25},
              "xaxis_title": _e(x_title), "yaxis_title": _e(y_title)}
    fig.update_layout(**{**layout, **extra})
    return fig


def _legend_rows(names: list[str], width_px: float = 1060.0, char_px: float = 6.2, entry_px: float = 40.0) -> int:
    """Rows a horizontal Plotly legend takes on the report's plot width: entries (swatch, gap and text, about
    ``entry_px + char_px`` per character at the page's 12 px font) fill a row left to right and wrap."""
    rows, used = 1, 0.0
    for name in names:
        w = entry_px + char_px * len(name)
        if used and used + w > width_px:
            rows, used = rows + 1, 0.0
        used += w
    return rows


def _legend_on_top(fig: go.Figure) -> dict[str, Any]:
    """A horizontal legend above the plot with a top margin that holds all its rows under the title (a fixed
    margin let the second row of a three-model report cover the title)."""
    rows = _legend_rows([html.unescape(t.name or "") for t in fig.data if t.showlegend is not False])
    return {"legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom"},
            "margin": {"l": 70, "r": 20, "t": 68 + 22 * rows}}


def _f(value: Any) -> float | None:
    """A plottable number, or ``None`` (a gap) for a missing or undefined value."""
    if value is None or pd.isna(value):
        return None
    return float(value)


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _headroom(fig: go.Figure, log: bool = False) -> go.Figure:
    """A y range that holds the tallest bar with room above it (Plotly's bar autorange ends at the top bar,
    which then looks cut by the plot's edge); log axes label powers of ten only."""
    values = [v for trace in fig.data for v in (trace.y or ()) if v is not None and v > 0]
    if not values:
        return fig
    top = max(values)
    if log:
        low = math.floor(math.log10(min(values))) - 0.05
        fig.update_yaxes(type="log", range=[low, math.log10(top) + 0.25], dtick=1, exponentformat="SI")
    else:
        fig.update_yaxes(range=[0, top * 1.12])
    return fig


def role_bars(roles: pd.DataFrame, value: str, title: str, y_title: str, models: list[str]) -> go.Figure:
    """Grouped bars, x = role (in :data:`ROLES` order), one trace per model."""
    fig = go.Figure()
    present = [r for r in ROLES if r in set(roles["role"])]
    for i, model in enumerate(models):
        sel = roles[roles.model == model].set_index("role")
        fig.add_trace(go.Bar(name=_e(model), x=[_e(r) for r in present],
                             y=[_f(sel[value].get(r)) if r in sel.index else 0.0 for r in present],
                             marker_color=_colour(i)))
    return _headroom(_layout(fig, title, "role", y_title, barmode="group", height=460,
                             **_legend_on_top(fig)))


def layer_bars(layers: pd.DataFrame, value: str, title: str, y_title: str, models: list[str],
               log: bool = False) -> go.Figure:
    """Bars per layer on a two-level axis (role, layer), one trace per model; zero layers left out."""
    fig = go.Figure()
    for i, model in enumerate(models):
        sel = layers[(layers.model == model) & (layers[value].fillna(0) != 0)].copy()
        sel["role_order"] = sel["role"].map(ROLES.index)
        sel = sel.sort_values(["role_order", "order"], kind="stable")
        fig.add_trace(go.Bar(name=_e(model), x=[[_e(r) for r in sel["role"]], [_e(n) for n in sel["layer"]]],
                             y=[_f(v) for v in sel[value]], marker_color=_colour(i),
                             hovertemplate="%{x}<br>%{y:.4g}<extra>" + _e(model) + "</extra>"))
    fig = _layout(fig, title, "role / layer", y_title, barmode="group", height=900, **_legend_on_top(fig))
    return _headroom(fig, log)


def ops_bars(layers: pd.DataFrame, convention: str, models: list[str]) -> go.Figure:
    """MACs and ACs per layer (log scale) in ``convention``: two traces per model (MACs, ACs)."""
    fig = go.Figure()
    for i, model in enumerate(models):
        sel = layers[layers.model == model].copy()
        sel["role_order"] = sel["role"].map(ROLES.index)
        sel = sel[(sel[f"macs_{convention}"] != 0) | (sel[f"acs_{convention}"] != 0)]
        sel = sel.sort_values(["role_order", "order"], kind="stable")
        x = [[_e(r) for r in sel["role"]], [_e(n) for n in sel["layer"]]]
        for j, op in enumerate(("macs", "acs")):
            fig.add_trace(go.Bar(name=_e(f"{model}: {op.upper()[:-1]}s"), x=x,
                                 y=[_f(v) for v in sel[f"{op}_{convention}"]], marker_color=_colour(i),
                                 opacity=1.0 if j == 0 else 0.55,
                                 marker_pattern_shape="" if j == 0 else "/"))
    fig = _layout(fig, f"MACs and ACs per layer per image ({convention} convention)", "role / layer",
                  "operations per image (log scale)", barmode="group", height=900,
                  **_legend_on_top(fig))
    return _headroom(fig, log=True)


def firing_heatmap(frame: pd.DataFrame, model: str, x: str, x_title: str, title: str) -> go.Figure:
    """LIF layer x step firing rate (%): one heatmap trace plus one trace marking dead/saturated cells."""
    sel = frame[frame.model == model]
    layers = list(dict.fromkeys(sel["layer"]))
    steps = sorted(set(sel[x]))
    grid = sel.pivot_table(index="layer", columns=x, values="firing_rate_pct", aggfunc="first").reindex(
        index=layers, columns=steps)
    fig = go.Figure(go.Heatmap(z=grid.values.tolist(), x=steps, y=[_e(n) for n in layers], colorscale="Viridis",
                               zmin=0, zmax=100, colorbar={"title": {"text": "firing rate (%)"}},
                               hovertemplate="%{y}<br>" + _e(x_title) + " %{x}<br>%{z:.2f} %<extra></extra>"))
    flagged = sel[sel["dead"] | sel["saturated"]]
    fig.add_trace(go.Scatter(
        x=list(flagged[x]), y=[_e(n) for n in flagged["layer"]], mode="markers+text",
        text=["dead" if d else "saturated" for d in flagged["dead"]], textposition="middle center",
        marker={"symbol": "x", "size": 12, "color": "#cf222e"}, name="dead (0 %) / saturated (100 %)",
        showlegend=True))
    return _layout(fig, title, x_title, "LIF layer", height=max(320, 40 + 28 * len(layers)),
                   yaxis={"autorange": "reversed"})


def _key(fig: go.Figure, models: list[str], conventions: list[str]) -> None:
    """Legend entries that say what colour (model) and line style (convention) mean: one per model and one per
    convention (drawn nowhere), so that a legend never lists every (model, convention) line."""
    for i, model in enumerate(models):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=_e(model), hoverinfo="skip",
                                 line={"color": _colour(i), "width": 3}))
    for j, conv in enumerate(conventions):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=_e(conv), hoverinfo="skip",
                                 line={"color": MARK, "dash": DASHES[j % len(DASHES)]}))


def step_energy_lines(steps: pd.DataFrame, models: list[str], conventions: list[str], preset: str,
                      note: str = "") -> go.Figure:
    """Energy per diffusion step: one line per (model, convention), colour the model and style the convention,
    none in the legend; then one legend entry per model and one per convention (:func:`_key`)."""
    fig = go.Figure()
    for i, model in enumerate(models):
        for j, conv in enumerate(conventions):
            sel = steps[(steps.model == model) & (steps.convention == conv)].sort_values("step")
            fig.add_trace(go.Scatter(x=list(sel["step"]), y=[_f(v) for v in sel["energy_uJ_per_image"]],
                                     mode="lines+markers", name=_e(f"{model} ({conv})"), showlegend=False,
                                     line={"color": _colour(i), "dash": DASHES[j % len(DASHES)]},
                                     customdata=list(sel["t"]),
                                     hovertemplate="step %{x} (t=%{customdata})<br>%{y:.4g} uJ<extra>"
                                     + _e(f"{model} ({conv})") + "</extra>"))
    _key(fig, models, conventions)
    return _layout(fig, f"Energy per diffusion step ({preset}){note}", "diffusion step (sampling order)",
                   "uJ per image per step", **_legend_on_top(fig))


def sweep_lines(sweep: pd.DataFrame, baselines: list[tuple[str, float]], break_even: pd.DataFrame,
                actual: list[tuple[str, float]], preset: str, models: list[str] | None = None,
                headline: str | None = None, note: str = "") -> go.Figure:
    """Energy against firing rate: one line per (spiking model, convention) in ``sweep`` (colour: the model, in
    the order of ``models``; style: the convention; none in the legend), one flat line per baseline, one trace
    of break-even points (labelled with the models' names in the ``headline`` convention, the others on hover),
    then the legend's key (:func:`_key`); the models' actual mean firing rates are vertical marks."""
    fig = go.Figure()
    keys = list(dict.fromkeys(zip(sweep["model"], sweep["convention"])))
    models = models or list(dict.fromkeys(sweep["model"]))
    convs = list(dict.fromkeys(sweep["convention"]))
    colour = {m: _colour(i) for i, m in enumerate(models)}
    for model, conv in keys:
        sel = sweep[(sweep.model == model) & (sweep.convention == conv)].sort_values("firing_rate_pct")
        fig.add_trace(go.Scatter(x=list(sel["firing_rate_pct"]), y=[_f(v) for v in sel["energy_uJ_per_image"]],
                                 mode="lines", name=_e(f"{model} ({conv})"), showlegend=False,
                                 line={"color": colour.get(model, MARK),
                                       "dash": DASHES[convs.index(conv) % len(DASHES)]},
                                 hovertemplate="%{x:.1f} %<br>%{y:.4g} uJ<extra>" + _e(f"{model} ({conv})")
                                 + "</extra>"))
    for name, uj in baselines:
        fig.add_trace(go.Scatter(x=[0, 100], y=[uj, uj], mode="lines", name=_e(f"{name} (flat)"),
                                 line={"color": colour.get(name, MARK), "width": 2.5}, opacity=0.6))
    pts = break_even[break_even["break_even_firing_rate_pct"].notna()]
    inside = pts[(pts["break_even_firing_rate_pct"] >= 0) & (pts["break_even_firing_rate_pct"] <= 100)]
    inside = inside.sort_values(["baseline_uJ_per_image", "break_even_firing_rate_pct"], kind="stable")
    headline = headline or (convs[0] if convs else None)
    fig.add_trace(go.Scatter(
        x=[_f(v) for v in inside["break_even_firing_rate_pct"]],
        y=[_f(v) for v in inside["baseline_uJ_per_image"]],
        mode="markers+text", marker={"size": 10, "symbol": "diamond", "color": MARK,
                                     "line": {"width": 1, "color": "#57606a"}},
        text=[_e(f"{r.model} = {r.baseline} at {r.break_even_firing_rate_pct:.1f} %")
              if r.convention == headline else "" for r in inside.itertuples()],
        hovertext=[_e(f"{r.model} = {r.baseline}, {r.convention}: {r.break_even_firing_rate_pct:.1f} %")
                   for r in inside.itertuples()], hoverinfo="text",
        textposition=_name_positions(inside, headline),
        name="break-even"))
    _key(fig, [m for m in models if any(k[0] == m for k in keys)], convs)
    for model, rate in actual:
        fig.add_vline(x=rate, line={"color": colour.get(model, MARK), "dash": "dot"},
                      annotation={"text": _e(f"fires {rate:.1f} %"), "textangle": -90,
                                  "font": {"color": colour.get(model, MARK)}},
                      annotation_position="bottom right")  # the top holds the break-even labels
    return _layout(fig, f"Energy per image against firing rate ({preset}){note}",
                   "firing rate of every LIF layer (%)", "uJ per image over the workload", height=520,
                   **_legend_on_top(fig))


def _name_positions(points: pd.DataFrame, headline: str | None) -> list[str]:
    """Where each break-even label goes: towards the middle of the x axis (a label near 0 % reads to the right,
    one near 100 % to the left), above the point, or below it when the labelled point before it is close by
    (same baseline, within 12 points of firing rate)."""
    out, prev, above = [], None, True
    for r in points.itertuples():
        x, y = r.break_even_firing_rate_pct, r.baseline_uJ_per_image
        if r.convention != headline:
            out.append("top center")
            continue
        above = not above if prev is not None and prev[1] == y and abs(x - prev[0]) < 12 else True
        out.append(("top" if above else "bottom") + (" right" if x < 50 else " left"))
        prev = (x, y)
    return out


def sensitivity_bars(sens: pd.DataFrame, preset: str | None = None, compact: bool = False,
                     note: str = "") -> go.Figure:
    """Ratio model / baseline per convention: one trace per model pair; 1.0 marked. ``compact``: the short
    figure of the verdict (340 px; no legend for a single pair, whose name the title gives)."""
    fig = go.Figure()
    pair_keys = list(dict.fromkeys(zip(sens["model"], sens["baseline"])))
    for i, (model, base) in enumerate(pair_keys):
        sel = sens[(sens.model == model) & (sens.baseline == base)]
        fig.add_trace(go.Bar(name=_e(f"{model} / {base}"), x=[_e(c) for c in sel["convention"]],
                             y=[_f(v) for v in sel["ratio_model_to_baseline"]], marker_color=_colour(i),
                             text=["undefined" if _f(v) is None else f"{float(v):.2f}x"
                                   for v in sel["ratio_model_to_baseline"]],
                             textposition="outside", cliponaxis=False))
    fig.add_hline(y=1.0, line={"color": MARK, "dash": "dash"})  # equal energy; the title says which side is which
    where = f", {preset}" if preset else ""
    one = len(pair_keys) == 1
    if compact:
        title = (f"{pair_keys[0][0]} / {pair_keys[0][1]}" if one else "Model / baseline") + \
            f": energy ratio per convention{where}{note}"
        extra: dict[str, Any] = {"height": 340, "showlegend": not one, "margin": {"l": 60, "r": 10, "t": 40, "b": 40}}
        if not one:
            extra.update(_legend_on_top(fig))
    else:
        title = f"Energy ratio model / baseline per image under each convention{where}{note}"
        extra = {}
    fig = _layout(fig, title, "convention", "model / baseline (log scale)", barmode="group", **extra)
    values = [v for trace in fig.data for v in (trace.y or ()) if v is not None and v > 0]
    if values:  # bars grow from the axis floor; 1.0 sits inside the range so both sides show
        low, high = math.log10(min(min(values), 1.0)) - 0.3, math.log10(max(max(values), 1.0)) + 0.3
        ticks = [m * 10.0**e for e in range(math.floor(low), math.ceil(high) + 1) for m in (1, 2, 5)]
        fig.update_yaxes(type="log", range=[low, high], tickvals=[t for t in ticks if low <= math.log10(t) <= high])
    return fig


def preset_bars(energy: pd.DataFrame, models: list[str], convention: str, note: str = "") -> go.Figure:
    """Energy per image under each cost preset (log scale): one trace per model."""
    fig = go.Figure()
    presets = list(dict.fromkeys(energy["preset"]))
    for i, model in enumerate(models):
        sel = energy[energy.model == model].set_index("preset")
        values = [_f(sel.loc[p, "energy_uJ_per_image"]) for p in presets]
        fig.add_trace(go.Bar(name=_e(model), x=[_e(p) for p in presets], y=values, marker_color=_colour(i),
                             text=["not defined" if v is None else "" for v in values], textposition="outside"))
    fig = _layout(fig, f"Energy per image under each cost preset ({convention}){note}",
                  "cost preset ('not defined': no figure for a term the model needs)", "uJ per image (log scale)",
                  barmode="group", **_legend_on_top(fig))
    for p in presets:
        missing = [m for m in models if _f(energy[(energy.model == m) & (energy.preset == p)]
                                           ["energy_uJ_per_image"].iloc[0]) is None]
        if missing:
            fig.add_annotation(x=_e(p), y=0.02, yref="paper", showarrow=False, textangle=-90, yanchor="bottom",
                               text=_e("not defined" if len(missing) == len(models) else
                                       "not defined for " + ", ".join(missing)))
    return _headroom(fig, log=True)


def power_trace(trace: pd.DataFrame, measured: pd.DataFrame, models: list[str]) -> go.Figure:
    """Measured power against time since each model's window opened: per model with a trace, one power line
    and (where idle power was read) one dashed idle-baseline line; the window's opening and each model's
    closing are vertical marks."""
    fig = go.Figure()
    info = measured.set_index("model")
    closes: dict[float, list[tuple[int, str]]] = {}
    fig.add_vline(x=0.0, line={"color": MARK, "dash": "dot"},
                  annotation={"text": "window opens", "textangle": -90, "xanchor": "right"})
    for i, model in enumerate(models):
        sel = trace[trace.model == model].sort_values("time_s", kind="stable")
        if not len(sel):
            continue
        row = info.loc[model]
        method, window_s, idle = row["method"], _f(row["window_s"]), _f(row["idle_power_W"])
        fig.add_trace(go.Scatter(x=[float(v) for v in sel["time_s"]], y=[float(v) for v in sel["power_W"]],
                                 mode="lines+markers", marker={"size": 3}, line={"color": _colour(i)},
                                 name=_e(f"{model}: power ({method}, {len(sel)} samples)"),
                                 hovertemplate="%{x:.3f} s<br>%{y:.1f} W<extra>" + _e(model) + "</extra>"))
        end = window_s if window_s is not None else float(sel["time_s"].max())
        if idle is not None:
            fig.add_trace(go.Scatter(x=[0.0, end], y=[idle, idle], mode="lines",
                                     line={"color": _colour(i), "dash": "dash", "width": 1.5},
                                     name=_e(f"{model}: idle baseline {idle:.1f} W")))
        closes.setdefault(end, []).append((i, model))
    for end, who in closes.items():  # one mark per closing time, naming every window that closed then
        fig.add_vline(x=end, line={"color": _colour(who[0][0]) if len(who) == 1 else MARK, "dash": "dot"},
                      annotation={"text": _e(f"{', '.join(m for _, m in who)}: window closes ({end:.2f} s)"),
                                  "textangle": -90, "xanchor": "left"})
    methods = ", ".join(dict.fromkeys(str(m) for m in trace["method"])) or "none"
    scopes = [info.loc[m, "scope"] for m in dict.fromkeys(trace["model"]) if "scope" in info.columns]
    scope = "; ".join(dict.fromkeys(str(s) for s in scopes if isinstance(s, str))) or "whole GPU, NVML"
    fig = _layout(fig, f"Measured power in each measured window ({scope}, method: {methods}); "
                  "dashed: idle baseline", "time since the window opened (s)", f"power (W, {scope})")
    fig.update_yaxes(rangemode="tozero")
    return fig


def frontier_plot(frame: pd.DataFrame, preset: str, convention: str, memory: str, protocol: str,
                  note: str = "") -> go.Figure:
    """Domain FID against energy per image (log x), the rows of :func:`reports.tables.frontier_table` of one FID
    protocol with a FID and an energy: three traces, the Pareto front as a step line (``hv``: from each model on
    the front across to the next cheaper-to-dearer one, then down to its FID), the models on the front and the
    dominated ones (possibly empty), each point labelled with its model and its x error bar spanning the lowest
    to the highest energy over every convention x memory model."""
    fig = go.Figure()
    front = frame[frame.on_front == "yes"].sort_values(["energy_uJ_per_image", "domain_fid"], kind="stable")
    fig.add_trace(go.Scatter(x=[_f(v) for v in front["energy_uJ_per_image"]], y=[_f(v) for v in front["domain_fid"]],
                             mode="lines", line={"color": PALETTE[2], "shape": "hv", "width": 2},
                             name="Pareto front", hoverinfo="skip"))
    for name, sel, colour, symbol in (("on the front", front, PALETTE[2], "circle"),
                                      ("dominated", frame[frame.on_front == "no"], MARK, "circle-open")):
        x = [_f(v) for v in sel["energy_uJ_per_image"]]
        low = [_f(v) for v in sel["energy_min_uJ_per_image"]]
        high = [_f(v) for v in sel["energy_max_uJ_per_image"]]
        fig.add_trace(go.Scatter(
            x=x, y=[_f(v) for v in sel["domain_fid"]], mode="markers+text", name=name,
            marker={"size": 11, "color": colour, "symbol": symbol, "line": {"width": 2, "color": colour}},
            text=[_e(m) for m in sel["model"]], textposition="top center",
            error_x={"type": "data", "symmetric": False, "color": colour, "thickness": 1.2, "width": 4,
                     "array": [None if h is None or v is None else h - v for h, v in zip(high, x, strict=True)],
                     "arrayminus": [None if lo is None or v is None else v - lo for lo, v in zip(low, x, strict=True)]},
            customdata=[[_f(a), _f(b)] for a, b in zip(low, high, strict=True)],
            hovertemplate="%{text}<br>%{x:.4g} uJ per image (%{customdata[0]:.4g} to %{customdata[1]:.4g} over "
                          "the other accountings)<br>FID %{y:.4g}<extra></extra>"))
    fig = _layout(fig, f"Energy per image against domain FID ({preset}, {convention} convention, memory: {memory}; "
                       f"FID: {protocol}){note}", f"uJ per image, log ({convention}, memory {memory})",
                  "domain FID (lower is better)", height=500, **_legend_on_top(fig))
    fig.update_xaxes(type="log")
    values = [v for t in fig.data[1:] for v in (t.x or ()) if v]
    lows = [_f(v) for v in frame["energy_min_uJ_per_image"] if _f(v)] + values
    highs = [_f(v) for v in frame["energy_max_uJ_per_image"] if _f(v)] + values
    if lows:  # room for the error bars and the labels on both sides
        low, high = math.log10(min(lows)) - 0.15, math.log10(max(highs)) + 0.15
        fig.update_xaxes(type="log", range=[low, high])
        for trace in fig.data[1:]:  # a label reads towards the middle of the axis, never off its edge
            trace.textposition = ["top right" if v is None or math.log10(v) <= (low + high) / 2 else "top left"
                                  for v in (trace.x or ())]
    fids = [v for t in fig.data[1:] for v in (t.y or ()) if v is not None]
    if fids:
        span = max(fids) - min(fids) or max(fids) or 1.0
        fig.update_yaxes(range=[max(0.0, min(fids) - 0.15 * span), max(fids) + 0.2 * span])
        _labels_apart(fig.data[1:], 0.08 * span)
    return fig


def _labels_apart(traces: Sequence[go.Scatter], close: float) -> None:
    """Move a point's label below it where a point just above it (FID within ``close``, energy within a decade)
    has its label: two models of near-equal FID and energy otherwise print their names over each other. The
    space between two such points is left to the upper one's label, whichever side it is on."""
    points = sorted(((y, x, t, i) for t, trace in enumerate(traces) for i, (x, y) in enumerate(
        zip(trace.x or (), trace.y or (), strict=True)) if x and y is not None), key=lambda p: -p[0])
    positions = [list(trace.textposition) if isinstance(trace.textposition, (list, tuple))
                 else [trace.textposition or "top center"] * len(trace.x or ()) for trace in traces]
    above: list[tuple[float, float]] = []  # (fid, log energy) of the points labelled so far, higher FID first
    for y, x, t, i in points:
        if any(fid - y < close and abs(math.log10(x) - lx) < 1.0 for fid, lx in above):
            positions[t][i] = positions[t][i].replace("top", "bottom")
        above.append((y, math.log10(x)))
    for trace, where in zip(traces, positions, strict=True):
        trace.textposition = where

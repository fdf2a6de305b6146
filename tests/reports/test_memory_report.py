"""The memory-aware verdict in the report: the matrix on the first screen, the headline's memory model and
range, per-layer memory beside compute, and break-evens that are missing said in words."""

from __future__ import annotations

import pandas as pd
import pytest

from profiling.compare import Comparison, verdict_matrix
from profiling.energy import COST_PRESETS, estimate, with_memory
from profiling.memory import MEMORY_MODELS
from reports import tables
from reports.page import headline_cards
from reports.page import verdict_matrix as page_matrix
from reports.study import Study, study_from_comparison


def test_the_summary_matrix_is_every_convention_by_every_memory_model(tiny_study: Study,
                                                                      tiny_comparison: Comparison) -> None:
    rows = verdict_matrix(tiny_comparison, COST_PRESETS["45nm-fp32"])
    matrix = page_matrix(tiny_study)
    assert list(matrix["convention"]) == [c + (" (headline)" if c == "paper" else "") for c in
                                          tiny_study.conventions]
    assert list(matrix.columns) == ["convention", "none (compute only)", *list(MEMORY_MODELS)[1:]]
    for r in rows:
        column = "none (compute only)" if r.memory == "none" else r.memory.split(":")[0]
        cell = matrix.set_index("convention").filter(like=r.convention, axis=0)[column].iloc[0]
        assert cell.startswith(f"{r.ratio:.2f}x, ")
        if r.break_even is not None:
            assert cell.endswith(f"{100 * r.break_even:.1f} %")
        else:
            assert cell.split(", ", 1)[1].startswith(("none: ", "n/a: "))  # words, never a negative rate


def test_the_headline_names_its_memory_model_and_the_range_over_all(tiny_study: Study) -> None:
    card = next(c for c in headline_cards(tiny_study) if c.title.startswith("verdict"))
    assert card.title == "verdict (paper convention, 45nm-fp32, memory: none)"
    ratios = [r["ratio"] for r in tiny_study.verdict_rows if r["convention"] == "paper"]
    assert f"runs from {min(ratios):.2f}x" in card.detail and f"to {max(ratios):.2f}x" in card.detail
    assert f"over the {len(MEMORY_MODELS)} memory models" in card.detail


def test_a_memory_headline_is_named_and_its_break_even_reason_shown(tiny_comparison: Comparison) -> None:
    study = study_from_comparison(tiny_comparison, headline_convention="paper")
    sens = tables.sensitivity_table(study)
    for r in sens.itertuples():  # the reason where a break-even is missing, the rate where there is one
        be = next(b for b in tiny_comparison.break_even if (b.costs, b.convention) == ("45nm-fp32", r.convention))
        assert r.break_even == (f"{100 * be.firing_rate:.1f} %" if be.firing_rate is not None
                                else tables.BREAK_EVEN_WORDS.get(be.reason, be.reason))
    assert "none: dearer when silent" in set(sens["break_even"])  # untrained sdit-tiny under paper


def test_per_layer_memory_sits_beside_compute(tiny_study: Study, tiny_comparison: Comparison) -> None:
    layers = tables.layers_table(tiny_study)
    sdit = tiny_comparison.target("sdit-tiny").profile
    est = estimate(sdit, with_memory(COST_PRESETS["45nm-fp32"], "no-reuse"), "paper")
    sel = layers[layers.model == "sdit-tiny"].set_index("layer")
    for name, e in est.layers.items():
        assert sel.loc[name, "memory_uJ_no-reuse"] == pytest.approx(e["memory_j"] * 1e6, rel=1e-12, abs=0)
        assert sel.loc[name, "compute_uJ_paper_45nm-fp32"] == pytest.approx(e["compute_j"] * 1e6, rel=1e-12, abs=0)
    once = estimate(sdit, with_memory(COST_PRESETS["45nm-fp32"], "operand-once"), "paper")
    empty = [name for name in once.unassigned if not once.layers[name]["memory_j"]]
    assert empty and all(pd.isna(sel.loc[name, "memory_uJ_operand-once"]) for name in empty)  # never a 0

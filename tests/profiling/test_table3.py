"""Table III under every counting convention (profiling.table3), with closed-form counts."""

from __future__ import annotations

import pytest

from profiling.table3 import table3
from sdit.config import get_preset


def authors_macs(name: str) -> tuple[int, int]:
    """(non-block MACs, block MACs) per image of one forward of an authors'-layout SDiT, written out.

    Patch conv N D C p^2; time MLP 256 D + D^2; per block 13 D^2 L (time mixing 4 D^2, channel mixing 9 D^2
    per token, L = 2S tokens with the reconstruction tokens) + 2 S^2 D (W_D, W_N); each output block's skip
    S 2D D; final Linear over all S tokens S D p^2 2C; the 3x3 conv H W (2C)^2 9. The label lookup is free.
    """
    c = get_preset(name)
    d, p, ch, n = c.hidden_size, c.patch_size, c.in_channels, c.num_patches
    s = n + 1
    blocks = (c.depth_in + c.depth_mid + c.depth_out) * (13 * d * d * 2 * s + 2 * s * s * d)
    blocks += c.depth_out * s * 2 * d * d
    outside = n * d * ch * p * p + 256 * d + d * d + s * d * p * p * 2 * ch + c.image_size**2 * (2 * ch) ** 2 * 9
    return outside, blocks


@pytest.fixture(scope="module")
def tiny():
    return table3({"dit": "dit-tiny", "sdit": "sdit-tiny", "sdit_authors": "sdit-tiny-authors"})


@pytest.fixture(scope="module")
def mnist():
    return table3({"dit": "dit-mnist", "sdit_authors": "sdit-mnist-authors"})


def test_authors_strict_macs_equal_the_closed_form_and_no_acs(mnist, tiny) -> None:
    for table, name in ((mnist, "sdit-mnist-authors"), (tiny, "sdit-tiny-authors")):
        row = table.model("sdit_authors")
        outside, blocks = authors_macs(name)
        assert row.strict_macs == outside + blocks  # the blocks run once: T does not multiply MACs
        assert row.strict_acs == 0  # no synaptic layer reads spikes
        assert row.counts["dense_one_t"] == row.counts["linconv_one_t"] == outside + blocks
        assert row.counts["dense_all_t"] == outside + 4 * blocks
        assert row.counts["flops_dense_one_t"] == 2 * (outside + blocks)
    assert authors_macs("sdit-mnist-authors") == (3_218_496, 4_041_570_048)  # 4.045 G (docs/authors-layout.md)


def test_stream_sdit_counts_its_blocks_t_times(tiny) -> None:
    row = tiny.model("sdit")
    assert row.time_encoding == "stream" and row.strict_macs == row.counts["dense_all_t"] == 5_860_528
    non_block = 25_088 + 8_192 + 1_024 + 17 * 32 * 49 + 784 * 9  # patch, time MLP, final Linear, 1-channel conv
    assert row.counts["dense_one_t"] == non_block + (5_860_528 - non_block) // 4


def test_dit_linear_conv_leaves_out_attention_matmuls(tiny) -> None:
    row = tiny.model("dit")
    attention = 2 * (2 * 16 * 16 * 32)  # q k^T and A v: 2 N^2 D per block, two blocks
    assert row.counts["dense_all_t"] == row.counts["dense_one_t"] == 499_712
    assert row.counts["linconv_one_t"] == row.counts["linconv_all_t"] == 499_712 - attention
    assert row.needed_rates["fr_all_t"] is None


def test_dit_figure_is_flops_of_linear_and_conv_and_sdit_matches_none(mnist) -> None:
    findings = {(f.figure, f.role): f for f in mnist.findings}
    dit = findings[("DiT MACs", "dit")]
    assert {m.convention for m in dit.matches if m.reproduces} == {"flops_linconv_all_t", "flops_linconv_one_t"}
    assert "reproduced by FLOPs (2x) Linear/Conv" in dit.summary
    sdit = findings[("SDiT MACs", "sdit_authors")]
    assert not any(m.reproduces for m in sdit.matches) and "no counting convention reproduces it" in sdit.summary
    params = findings[("SDiT params", "sdit_authors")]
    assert [m.convention for m in params.matches if m.reproduces] == ["trainable", "total"]
    row = mnist.model("sdit_authors")
    rate = row.needed_rates["fr_one_t"]
    assert row.nonspiking_macs_one_t + rate * row.spiking_macs_one_t == pytest.approx(1.32e9)

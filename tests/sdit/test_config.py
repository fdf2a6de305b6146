from __future__ import annotations

import pytest

from sdit.config import (
    PRESETS,
    DiTConfig,
    SDiTConfig,
    UnknownPresetError,
    config_from_dict,
    config_to_dict,
    get_preset,
)
from sdit.models import build_model, count_params

PAPER_SDIT_PARAMS = 11.67e6  # Table III
PAPER_DIT_PARAMS = 13.86e6  # Table III


def test_sdit_mnist_matches_table_iii() -> None:
    counts = count_params(build_model("sdit-mnist"))
    assert counts.trainable_params == 11_657_486
    assert abs(counts.trainable_params / PAPER_SDIT_PARAMS - 1) < 0.005


def test_dit_mnist_matches_table_iii() -> None:
    counts = count_params(build_model("dit-mnist"))
    assert counts.trainable_params == 13_845_508
    assert abs(counts.trainable_params / PAPER_DIT_PARAMS - 1) < 0.005
    # the frozen sin-cos table (196 x 384) is a parameter but not a trainable one
    assert counts.params - counts.trainable_params == 196 * 384


def test_reconstruction_flag_removes_exactly_z_wd_wn() -> None:
    on = count_params(build_model("sdit-tiny")).trainable_params
    off = count_params(build_model("sdit-tiny-norecon")).trainable_params
    cfg = get_preset("sdit-tiny")
    blocks = cfg.depth_in + cfg.depth_mid + cfg.depth_out
    n, d = cfg.num_tokens, cfg.hidden_size
    assert on - off == blocks * 3 * n * d  # z (N x D), W_D (D x N), W_N (N x D) per block


def test_unknown_preset_lists_valid_ones() -> None:
    with pytest.raises(UnknownPresetError) as info:
        get_preset("sdit-huge")
    assert "sdit-mnist" in str(info.value) and "dit-small" in str(info.value)


def test_configs_round_trip_and_reject_unknown_keys() -> None:
    for config in PRESETS.values():
        assert config_from_dict(config_to_dict(config)) == config
    with pytest.raises(ValueError, match="unknown sdit config keys: heads"):
        config_from_dict({**config_to_dict(SDiTConfig()), "heads": 3})


def test_invalid_configs_raise() -> None:
    with pytest.raises(ValueError, match="does not divide"):
        SDiTConfig(patch_size=5)
    with pytest.raises(ValueError, match="depth_in"):
        SDiTConfig(depth_in=2, depth_out=1)
    with pytest.raises(ValueError, match="num_heads"):
        DiTConfig(num_heads=5)


def test_every_preset_has_notes() -> None:
    from sdit.config import PRESET_NOTES

    assert set(PRESET_NOTES) == set(PRESETS)
    assert "11,657,486" in PRESET_NOTES["sdit-mnist"] and "13,845,508" in PRESET_NOTES["dit-mnist"]


def test_a_whole_number_in_a_float_field_reads_as_that_float() -> None:
    from sdit.config import config_from_dict, config_to_dict, get_preset
    from sdit.models import build_model

    data = config_to_dict(get_preset("sdit-tiny"))
    data.update(v_threshold=1, tau=2)  # as a JSON writer that drops ".0" would save them
    config = config_from_dict(data)
    assert config == get_preset("sdit-tiny")
    assert isinstance(config.v_threshold, float) and isinstance(config.tau, float)
    build_model(config)  # spikingjelly's LIF asserts a float threshold

"""Post-training quantized DiT: integer Linears, calibration, the checkpoint format and ``sdit quantize``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cli.main import app
from sdit.checkpoint import CheckpointError, CheckpointMeta, load_model, write_weights
from sdit.config import PRESETS, DiTConfig
from sdit.models import build_model
from sdit.models.quant import QuantLinear, calibrate, precision_of, qmax, quantize_to_int, weight_scales
from sdit.training.config import TrainConfig

runner = CliRunner()


def random_dit(preset: str = "dit-tiny", seed: int = 0) -> nn.Module:
    """A DiT whose every tensor is random (adaLN-Zero's zeros would make the output 0)."""
    torch.manual_seed(seed)
    model = build_model(preset).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    return model


def _batches(n: int = 2, size: int = 8, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 28, 28, generator=g), torch.randint(1000, (size,), generator=g)) for _ in range(n)]


def test_quant_linear_is_the_integer_product_rescaled() -> None:
    layer = QuantLinear(5, 3, bias=True, weight_bits=8, activation_bits=8)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1, -2, 3, 127, -127], [0, 0, 0, 0, 1], [5, 5, 5, 5, 5]], dtype=torch.int8))
        layer.weight_scale.copy_(torch.tensor([0.5, 2.0, 0.25]))
        layer.input_scale.fill_(0.1)
        layer.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
    x = torch.tensor([[0.1, 0.2, -0.3, 100.0, 0.04]])  # 100 clips to 127 steps, 0.04 rounds to 0
    xq = torch.tensor([[1, 2, -3, 127, 0]])
    expected = (xq @ layer.weight.long().t()).float() * 0.1 * layer.weight_scale + layer.bias
    assert torch.equal(layer(x), expected)
    assert layer(torch.zeros(2, 4, 5)).shape == (2, 4, 3)
    assert precision_of(layer) == "int8" and precision_of(nn.Linear(2, 2)) == "fp32"
    assert precision_of(QuantLinear(2, 2, True, 4, 3)) == "w4a3"


def test_low_bit_values_stay_in_their_range() -> None:
    assert (qmax(8), qmax(4), qmax(3)) == (127, 7, 3)
    q = quantize_to_int(torch.tensor([-10.0, -0.4, 0.6, 10.0]), torch.tensor(1.0), 3)
    assert q.tolist() == [-3, 0, 1, 3] and q.dtype == torch.int8
    w = torch.randn(6, 40, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(weight_scales(w, 8), w.abs().amax(1) / 127)
    assert (weight_scales(w, 4) <= w.abs().amax(1) / 7 + 1e-7).all()  # 4 bits clip the largest weights


def test_calibrated_int8_dit_tracks_the_float_model_and_w4a3_less_so() -> None:
    model = random_dit()
    x, t = _batches(1, 4, seed=9)[0]
    with torch.no_grad():
        want = model(x, t)
        errors = {}
        for wb, ab in ((8, 8), (4, 3)):
            quant = build_model(DiTConfig(**{**PRESETS["dit-tiny"].__dict__, "weight_bits": wb,
                                             "activation_bits": ab})).eval()
            assert calibrate(model, quant, _batches()) == 16
            got = quant(x, t)
            errors[wb] = ((got - want).norm() / want.norm()).item()
    assert errors[8] < 0.02 and 0.1 < errors[4] < 1.0, errors  # measured: 0.008 and 0.195
    assert sum(isinstance(m, QuantLinear) for m in quant.modules()) == sum(
        isinstance(m, nn.Linear) for m in model.modules())
    # Parameter counts are the float model's: int8 weights are frozen parameters.
    assert sum(p.numel() for p in quant.parameters()) == sum(p.numel() for p in model.parameters())


def test_a_quantized_checkpoint_round_trips_and_its_integers_are_checked(tmp_path: Path) -> None:
    config = DiTConfig(**{**PRESETS["dit-tiny"].__dict__, "weight_bits": 8, "activation_bits": 8})
    quant = build_model(config).eval()
    calibrate(random_dit(), quant, _batches(1))
    meta = CheckpointMeta(preset="custom-dit", config=config, step=7, dataset="fashion-mnist", seed=0)
    path = write_weights(tmp_path / "model.safetensors", meta, quant.state_dict())
    loaded, got = load_model(path)
    assert got.config == config and got.step == 7
    x, t = _batches(1, 2)[0]
    with torch.no_grad():
        assert torch.equal(loaded(x, t), quant(x, t))
    with pytest.raises(FileExistsError):
        write_weights(path, meta, quant.state_dict())
    # The same file with a float weight where the config declares int8: refused before reading.
    floats = {k: (v.float() if v.dtype == torch.int8 else v) for k, v in quant.state_dict().items()}
    bad = write_weights(tmp_path / "bad.safetensors", meta, floats)
    with pytest.raises(CheckpointError, match="the config needs I8"):
        load_model(bad)


def test_quantized_presets_are_made_not_trained() -> None:
    assert PRESETS["dit-small-int8"].quantized and not PRESETS["dit-small"].quantized
    with pytest.raises(ValueError, match="made from trained weights by `sdit quantize`"):
        TrainConfig(preset="dit-small-int8", steps=1)
    with pytest.raises(ValueError, match="both be 32"):
        DiTConfig(weight_bits=8)


def test_sdit_quantize_writes_a_loadable_checkpoint_and_refuses_an_sdit(tmp_path: Path) -> None:
    meta = CheckpointMeta(preset="dit-tiny", config=PRESETS["dit-tiny"], step=3, dataset="fashion-mnist", seed=0)
    src = write_weights(tmp_path / "dit.safetensors", meta, random_dit().state_dict())
    out = tmp_path / "int8"
    result = runner.invoke(app, ["quantize", str(src), "--out", str(out), "--calibration", "16"])
    assert result.exit_code == 0, result.output
    assert "held-out eps-MSE" in result.stdout
    record = json.loads((out / "provenance.json").read_text())
    assert record["quantization"]["calibration"]["images"] == 16 and record["steps"] == 3
    assert record["command"].startswith("sdit quantize ") and record["preset"] == "custom-dit"
    model, got = load_model(out)
    assert got.config.weight_bits == 8 and got.step == 3 and precision_of(model.blocks[0].attn.qkv) == "int8"
    again = runner.invoke(app, ["quantize", str(src), "--out", str(out)])
    assert again.exit_code == 2 and len(again.stderr.strip().splitlines()) == 1
    smeta = CheckpointMeta(preset="sdit-tiny", config=PRESETS["sdit-tiny"], step=1, dataset="fashion-mnist", seed=0)
    sdit = write_weights(tmp_path / "sdit.safetensors", smeta, build_model("sdit-tiny").state_dict())
    refused = runner.invoke(app, ["quantize", str(sdit), "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "quantization applies to the DiT baseline" in refused.stderr

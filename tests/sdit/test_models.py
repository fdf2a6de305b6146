from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import neuron

from sdit.config import PRESETS, SDiTConfig
from sdit.models import SDiT, build_model

SDIT_PRESETS = [n for n, c in PRESETS.items() if isinstance(c, SDiTConfig)]


def _batch(config, batch: int = 2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, config.in_channels, config.image_size, config.image_size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return x, t


@pytest.mark.parametrize("name", list(PRESETS))
def test_output_has_input_shape(name: str) -> None:
    model = build_model(name).eval()
    x, t = _batch(model.config, batch=1)
    with torch.no_grad():
        y = model(x, t)
    channels = 2 * x.shape[1] if getattr(model.config, "learn_sigma", False) else x.shape[1]  # noise + variance
    assert y.shape == (1, channels, *x.shape[2:])
    assert torch.isfinite(y).all()


def _spiking_model() -> SDiT:
    """A tiny SDiT whose LIF layers actually fire (untrained ones barely do)."""
    model = build_model("sdit-tiny")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(8.0)
    return model


def test_lif_outputs_are_binary_and_fire() -> None:
    model = _spiking_model()
    outputs: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
        for m in model.modules()
        if isinstance(m, neuron.LIFNode)
    ]
    x, t = _batch(model.config)
    model(x, t)
    for h in hooks:
        h.remove()
    cfg = model.config
    assert len(outputs) == 2 * (cfg.depth_in + cfg.depth_mid + cfg.depth_out)
    spikes = torch.cat([o.flatten() for o in outputs])
    assert set(spikes.unique().tolist()) == {0.0, 1.0}
    assert outputs[0].shape[0] == cfg.time_steps  # multi-step: (T, B, 2N, D)


def test_lif_neurons_follow_the_design() -> None:
    lifs = [m for m in build_model("sdit-tiny").modules() if isinstance(m, neuron.LIFNode)]
    assert all(m.tau == 2.0 and m.v_threshold == 1.0 and m.v_reset == 0.0 for m in lifs)
    assert all(m.step_mode == "m" for m in lifs)
    surrogates = [id(m.surrogate_function) for m in lifs]
    assert len(set(surrogates)) == len(lifs)  # a fresh surrogate per neuron


def test_state_is_reset_between_forwards() -> None:
    model = _spiking_model()
    x, t = _batch(model.config)
    y1 = model(x, t)
    y2 = model(x, t)
    assert torch.equal(y1, y2)
    lifs = [m for m in model.modules() if isinstance(m, neuron.LIFNode)]
    assert all(isinstance(m.v, float) and m.v == 0.0 for m in lifs)


def test_reconstruction_module_changes_the_output() -> None:
    torch.manual_seed(0)
    on = build_model("sdit-tiny")
    torch.manual_seed(0)
    off = build_model("sdit-tiny-norecon")
    x, t = _batch(on.config)
    assert not torch.allclose(on(x, t), off(x, t))


def test_wrong_image_size_is_a_clear_error() -> None:
    model = build_model("dit-tiny")
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 28, 28\), got \(2, 1, 32, 32\)"):
        model(torch.zeros(2, 1, 32, 32), torch.zeros(2, dtype=torch.long))


def test_dit_starts_as_zero_predictor() -> None:
    # adaLN-Zero: the final layer is zero-initialised, so an untrained DiT predicts 0.
    model = build_model("dit-tiny")
    x, t = _batch(model.config)
    assert torch.count_nonzero(model(x, t)) == 0

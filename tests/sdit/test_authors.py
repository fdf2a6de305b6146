"""The authors' layout (sdit-*-authors) against the fixtures made by running the authors' code.

Fixtures: tests/data/authors-sdit (see its README.md): key lists of their MNIST and CIFAR models, a tiny
model's weights with inputs, outputs and per-LIF spike counts, and its deterministic initial tensors.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from spikingjelly.activation_based import neuron

from sdit.authors import (
    AuthorsCheckpointError,
    convert_authors_checkpoint,
    from_authors_state_dict,
    infer_config,
    key_map,
    load_authors_checkpoint,
    load_authors_model,
    to_authors_state_dict,
)
from sdit.checkpoint import load_model
from sdit.config import get_preset
from sdit.models import build_model, count_params

DATA = Path(__file__).resolve().parents[1] / "data" / "authors-sdit"


@pytest.fixture(scope="module")
def tiny_weights() -> dict[str, torch.Tensor]:
    return load_file(DATA / "tiny.safetensors")


@pytest.fixture(scope="module")
def tiny_io() -> dict[str, torch.Tensor]:
    return load_file(DATA / "tiny-io.safetensors")


def _tiny_model(weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = build_model("sdit-tiny-authors")
    model.load_state_dict(from_authors_state_dict(weights, model, "tiny.safetensors"))
    return model.eval()


def _lif_name(ours: str) -> str:
    """``in_blocks.0.attn_lif`` -> the fixture's ``in_blocks.0.lif1``."""
    block, lif = ours.rsplit(".", 1)
    return block.replace("mid_blocks.0", "mid_block") + {"attn_lif": ".lif1", "ffn_lif": ".lif2"}[lif]


def _run_counting_spikes(model, x, t, y, reset: bool) -> tuple[torch.Tensor, dict[str, int]]:
    spikes: dict[str, int] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, n=name: spikes.__setitem__(_lif_name(n), int(out.sum())))
        for name, m in model.named_modules() if isinstance(m, neuron.LIFNode)
    ]
    with torch.no_grad():
        out = model(x, t, y, reset=reset)
    for h in hooks:
        h.remove()
    return out, spikes


@pytest.mark.parametrize(("preset", "fixture", "trainable"), [
    ("sdit-mnist-authors", "state-keys-mnist.json", 11_667_259),
    ("sdit-cifar-authors", "state-keys-cifar.json", 36_052_047),
])
def test_keys_shapes_and_counts_equal_the_authors_models(preset: str, fixture: str, trainable: int) -> None:
    model = build_model(preset)
    listed = json.loads((DATA / fixture).read_text())["state_dict"]
    ours = to_authors_state_dict(model)
    assert [(k, list(v.shape)) for k, v in ours.items()] == [(e["key"], e["shape"]) for e in listed]
    assert count_params(model).trainable_params == trainable == count_params(model).params


def test_tiny_fixture_config_is_the_preset(tiny_weights) -> None:
    assert infer_config(tiny_weights) == get_preset("sdit-tiny-authors")
    assert count_params(build_model("sdit-tiny-authors")).trainable_params == 72_675


def test_tiny_outputs_and_spikes_fresh_then_carried_float32(tiny_weights, tiny_io) -> None:
    model = _tiny_model(tiny_weights)
    fresh, spikes_fresh = _run_counting_spikes(model, tiny_io["x"], tiny_io["t"], tiny_io["y"], reset=False)
    carry, spikes_carry = _run_counting_spikes(model, tiny_io["x2"], tiny_io["t2"], tiny_io["y2"], reset=True)
    assert fresh.shape == (2, 6, 28, 28)
    assert (fresh - tiny_io["out_fresh"]).abs().max() < 1e-4
    assert (carry - tiny_io["out_carry"]).abs().max() < 1e-4
    for name, count in spikes_fresh.items():
        assert count == int(tiny_io[f"spikes_fresh.{name}"]), name
    for name, count in spikes_carry.items():
        assert count == int(tiny_io[f"spikes_carry.{name}"]), name
    assert len(spikes_fresh) == len(spikes_carry) == 6
    # reset=True (the default) left fresh neurons: the first call again gives out_fresh exactly
    again, _ = _run_counting_spikes(model, tiny_io["x"], tiny_io["t"], tiny_io["y"], reset=True)
    assert torch.equal(again, fresh)


def test_tiny_outputs_float64(tiny_weights, tiny_io) -> None:
    model = _tiny_model(tiny_weights).double()
    with torch.no_grad():
        fresh = model(tiny_io["x"].double(), tiny_io["t"], tiny_io["y"], reset=False)
        carry = model(tiny_io["x2"].double(), tiny_io["t2"], tiny_io["y2"])
    assert (fresh - tiny_io["out_fresh_f64"]).abs().max() < 1e-10
    assert (carry - tiny_io["out_carry_f64"]).abs().max() < 1e-10


def test_tiny_intermediate_activations(tiny_weights, tiny_io) -> None:
    model = _tiny_model(tiny_weights)
    seen: dict[str, torch.Tensor] = {}
    model.in_blocks[0].register_forward_hook(lambda _m, _i, out: seen.__setitem__("in_blocks.0", out))
    model.final_conv.register_forward_pre_hook(lambda _m, args: seen.__setitem__("conv_in", args[0]))
    with torch.no_grad():
        model(tiny_io["x"], tiny_io["t"], tiny_io["y"])
    for ours, theirs in (("in_blocks.0", "act.in_blocks.0.out"), ("conv_in", "act.conv_in")):
        ref = tiny_io[theirs]
        assert (seen[ours] - ref).abs().max() <= 2e-5 * ref.abs().max(), ours  # float32, magnitudes ~50


def test_authors_init_matches_the_deterministic_tensors() -> None:
    torch.manual_seed(0)
    ours = to_authors_state_dict(build_model("sdit-tiny-authors"))
    expected = load_file(DATA / "tiny-init-deterministic.safetensors")
    assert len(expected) == 37
    for key, value in expected.items():
        assert ours[key].shape == value.shape, key
        assert torch.allclose(ours[key], value, atol=1e-6, rtol=0), key


def test_null_class_default_and_label_dropout_in_training(tiny_weights, tiny_io) -> None:
    model = _tiny_model(tiny_weights)
    x, t = tiny_io["x"], tiny_io["t"]
    with torch.no_grad():
        null = model(x, t)
        explicit = model(x, t, torch.tensor([10, 10]))
    assert torch.equal(null, explicit)
    table = model.label_embed.train()
    torch.manual_seed(3)
    drawn = [table(torch.zeros(1000, dtype=torch.long), batch=1000) for _ in range(2)]
    dropped = sum(int((d == table.table.weight[10]).all(-1).sum()) for d in drawn)
    assert 120 < dropped < 290  # 2000 draws at p = 0.1: 200 expected, +-6 sigma


def _write_authors_file(path: Path, weights: dict[str, torch.Tensor]) -> Path:
    args = argparse.Namespace(dataset="MNIST", epochs=1600, global_batch_size=256, global_seed=0, model="SDiT")
    torch.save({"model": dict(weights), "opt": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
                "args": args}, path)
    return path


def test_authors_file_loads_without_running_code(tmp_path, tiny_weights, tiny_io) -> None:
    path = _write_authors_file(tmp_path / "00099.pt", tiny_weights)
    ckpt = load_authors_checkpoint(path)
    assert ckpt.args["dataset"] == "MNIST" and ckpt.has_optimizer
    model, description = load_authors_model(path)
    assert "sdit-tiny-authors" in description and "00099.pt" in description
    with torch.no_grad():
        out = model(tiny_io["x"], tiny_io["t"], tiny_io["y"])
    assert (out - tiny_io["out_fresh"]).abs().max() < 1e-4


class _Payload:
    """Unpickling this calls open(target, "w"), which would create the file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_code_payload_is_refused_and_nothing_runs(tmp_path, tiny_weights) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": dict(tiny_weights), "opt": {}, "args": _Payload(target)}, path)
    with pytest.raises(AuthorsCheckpointError, match="refused"):
        load_authors_model(path)
    assert not target.exists()
    with pytest.raises(pickle.UnpicklingError):  # the file really carries a payload a plain load would run
        torch.load(path, weights_only=True)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda w: w.pop("mid_block.ffn.key.weight"), "missing key 'mid_block.ffn.key.weight'"),
    (lambda w: w.__setitem__("in_blocks.0.att.key.weight", torch.zeros(32, 31)),
     r"key 'in_blocks.0.att.key.weight' has shape \(32, 31\), expected \(32, 32\)"),
    (lambda w: w.__setitem__("in_blocks.0.extra", torch.zeros(1)), "unexpected key 'in_blocks.0.extra'"),
    (lambda w: w.pop("pos_embed"), "missing key 'pos_embed'"),
])
def test_a_wrong_state_dict_names_the_first_bad_key(tmp_path, tiny_weights, edit, message) -> None:
    weights = dict(tiny_weights)
    edit(weights)
    path = _write_authors_file(tmp_path / "bad.pt", weights)
    with pytest.raises(AuthorsCheckpointError, match=message) as info:
        load_authors_model(path)
    assert "\n" not in str(info.value)


def test_a_file_that_is_not_the_authors_dict_is_refused(tmp_path, tiny_weights) -> None:
    path = tmp_path / "bare.pt"
    torch.save([1, 2], path)
    with pytest.raises(AuthorsCheckpointError, match="expected the authors' dict with 'model'"):
        load_authors_model(path)


def test_convert_to_our_format_round_trips(tmp_path, tiny_weights, tiny_io) -> None:
    src = _write_authors_file(tmp_path / "00099.pt", tiny_weights)
    dst = convert_authors_checkpoint(src, tmp_path / "tiny.safetensors")
    model, meta = load_model(dst)
    assert meta.preset == "sdit-tiny-authors" and meta.dataset == "MNIST"
    with torch.no_grad():
        out = model(tiny_io["x"], tiny_io["t"], tiny_io["y"])
    assert (out - tiny_io["out_fresh"]).abs().max() < 1e-4
    assert list(to_authors_state_dict(model)) == [theirs for _, theirs in key_map(model.config)]
    with pytest.raises(FileExistsError):
        convert_authors_checkpoint(src, dst)


def test_file_detection_zip_legacy_and_safetensors(tmp_path, tiny_weights) -> None:
    from safetensors.torch import save_file

    from sdit.authors import is_authors_file

    zipped = _write_authors_file(tmp_path / "a.pt", tiny_weights)
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": dict(tiny_weights), "opt": {}, "args": argparse.Namespace()}, legacy,
               _use_new_zipfile_serialization=False)
    ours = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, ours, metadata={"pad": "p" * 44})  # header of 128 bytes
    assert ours.read_bytes()[0] == 0x80  # a header length whose low byte looks like a pickle opcode
    assert is_authors_file(zipped) and is_authors_file(legacy) and not is_authors_file(ours)
    model, _ = load_authors_model(legacy)
    assert infer_config(to_authors_state_dict(model)) == model.config


def test_a_stride_zero_expansion_is_refused_before_anything_is_sized(tmp_path, tiny_weights) -> None:
    """A small file whose tensors are expansions claiming hidden size 65,536 allocates nothing."""
    weights = dict(tiny_weights)
    weights["pos_embed"] = torch.zeros(1, 1, 1).expand(1, 17, 65_536)  # (1, N, D), one stored element
    path = _write_authors_file(tmp_path / "huge-D.pt", weights)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(AuthorsCheckpointError, match="'pos_embed' of shape \\(1, 17, 65536\\) is not a dense"):
        load_authors_checkpoint(path)


def test_a_claimed_size_past_the_bound_is_refused_from_the_config(tiny_weights) -> None:
    """Shapes alone (no tensor of that size exists) that describe a model past the parameter bound."""
    state = {k: torch.zeros(1).expand(*v.shape) for k, v in tiny_weights.items()}
    state["pos_embed"] = torch.zeros(1).expand(1, 17, 65_536)
    with pytest.raises(AuthorsCheckpointError, match="more than the 2,000,000,000 a checkpoint may hold"):
        infer_config(state, "huge.pt")


@pytest.mark.parametrize(("value", "message"), [
    (torch.zeros(32, 32, dtype=torch.int32), "is int32; the authors' weights are floating point"),
    (torch.zeros(32, 32, dtype=torch.bool), "is bool"),
    (torch.zeros(32, 32, dtype=torch.complex64), "is complex64"),
    (torch.full((32, 32), float("nan")), "holds NaN or infinite values"),
    (torch.full((32, 32), float("inf")), "holds NaN or infinite values"),
])
def test_non_float_or_non_finite_weights_are_refused(tmp_path, tiny_weights, value, message) -> None:
    weights = dict(tiny_weights)
    weights["in_blocks.0.att.key.weight"] = value
    with pytest.raises(AuthorsCheckpointError, match=message):
        load_authors_checkpoint(_write_authors_file(tmp_path / "bad.pt", weights))


def test_a_compressed_record_is_refused_before_loading(tmp_path, tiny_weights) -> None:
    import zipfile

    plain = _write_authors_file(tmp_path / "plain.pt", tiny_weights)
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for entry in src.infolist():
            dst.writestr(entry.filename, src.read(entry))
    with pytest.raises(AuthorsCheckpointError, match="is compressed or larger than the file"):
        load_authors_checkpoint(packed)


def test_convert_refuses_bad_weights_before_touching_the_destination(tmp_path, tiny_weights) -> None:
    src = _write_authors_file(tmp_path / "good.pt", tiny_weights)
    dst = convert_authors_checkpoint(src, tmp_path / "tiny.safetensors")
    before = dst.read_bytes()
    weights = dict(tiny_weights)
    weights["in_blocks.0.att.key.weight"] = torch.full((32, 32), float("nan"))
    bad = _write_authors_file(tmp_path / "nan.pt", weights)
    with pytest.raises(AuthorsCheckpointError, match="NaN"):
        convert_authors_checkpoint(bad, dst, overwrite=True)
    assert dst.read_bytes() == before

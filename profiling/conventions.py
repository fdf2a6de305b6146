"""Counting conventions: named rules that say which synaptic ops cost a MAC and which an AC.

A convention is a small pure function over the records of one model call (one diffusion
step): for every layer it returns an :class:`OpSplit`, the synaptic ops it charges at MAC
cost, those it charges at AC cost (at the firing rates measured in that call), and the
dense MACs it charges at a firing rate, which the firing-rate sweep scales. Totals are
sums over calls, so every convention gives energy per layer, per step and per image alike.
Nothing here imports torch.

The conventions differ only for a spiking model; for an ANN (no neuron updates) every one
of them is the strict count. Each reads the spike graph the counter builds, never the order in which
code runs or how modules nest: the **nearest upstream neuron** of an op (the ``upstream`` records) is
the latest-called neuron whose spikes reach its inputs through any ops within the model call, so a net
run multi-step, single-step in a user's time loop or wrapped in ``nn.Sequential`` gives one energy under
every convention. A **spiking block** is a layer's outermost ancestor below the model that holds a
neuron, is not a ModuleList / ModuleDict and does not hold every neuron of the model (that is the model
or a wrapper of it). Registered conventions (:data:`COUNTING_CONVENTIONS`):

- ``strict``: op by op, what the computation does: synaptic ops with a real-valued input
  are MACs, those with a spike input ACs (nnz x fan-out, exact).
- ``paper``: what most SNN papers report: every spike-fed synaptic op (:func:`spike_fed`: inside
  a spiking block, with an upstream neuron) costs fr x dense MACs as ACs, fr the firing rate of its
  nearest upstream neuron; ops that no neuron's spikes reach (in SDiT, the first block's time mixing)
  and ops outside blocks keep their strict counts.
- ``block``: every synaptic op inside a spiking block costs fr_block x dense MACs as ACs,
  fr_block that block's own firing rate in the same model call (its spikes over its neuron
  updates), whether or not a neuron's spikes reach the op; ops outside blocks are strict.
- ``spikformer``: the published formula of Zhou et al. (Spikformer, ICLR 2023, energy section; also
  Yao et al., NeurIPS 2023): the first encoding layer (the first synaptic layer in execution order)
  costs its MACs at E_MAC; every other synaptic op costs SOPs = fr x T x FLOPs at E_AC, fr the firing
  rate of its actual input: the non-zero share of that input where it is spikes or counts of spikes
  (sums, pools of spike trains: a residual stream of summed spikes), measured per op. The formula
  presumes every such input is spikes; an op whose input is real-valued (SDiT's normalised residual
  stream) is charged at the rate of its nearest upstream neuron, or, where none reaches it, of its
  spiking block, or outside any block the model's mean rate in the call (our reading).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from profiling.records import NO_UPSTREAM, LayerStepRecord, Number, Profile


class ConventionError(KeyError):
    """An unknown convention name."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class OpSplit:
    """How a convention charges one layer in one model call, per image.

    Attributes:
        macs: Synaptic ops charged at MAC cost.
        acs: Synaptic ops charged at AC cost, at the firing rates measured in the call.
        convertible: Dense MACs charged at a firing rate; the sweep charges ``fr x convertible``
            ACs in place of ``acs`` (``acs`` is the value at the measured rates).
    """

    macs: Number = 0
    acs: Number = 0
    convertible: Number = 0


@dataclass(frozen=True)
class StepContext:
    """What a convention needs beside one call's layer records.

    Attributes:
        blocks: Layer name -> the spiking block holding it (layers outside blocks absent).
        encoder: The first synaptic layer in execution order (the encoding layer), if any.
        spiking: Whether the model has spiking layers at all.
    """

    blocks: dict[str, str]
    encoder: str | None
    spiking: bool


Rule = Callable[[list[LayerStepRecord], StepContext], dict[str, OpSplit]]


@dataclass(frozen=True)
class Convention:
    """A named counting rule with its one-paragraph definition."""

    name: str
    summary: str
    rule: Rule


def _strict(r: LayerStepRecord) -> OpSplit:
    return OpSplit(macs=r.macs, acs=r.acs, convertible=r.dense_macs - r.macs)


def _rates(records: list[LayerStepRecord]) -> dict[str, float]:
    return {r.layer: r.spikes / r.neuron_updates for r in records if r.neuron_updates}


def _block_rates(records: list[LayerStepRecord], blocks: dict[str, str]) -> dict[str, float]:
    spikes: dict[str, Number] = {}
    updates: dict[str, Number] = {}
    for r in records:
        block = blocks.get(r.layer)
        if block is not None and r.neuron_updates:
            spikes[block] = spikes.get(block, 0) + r.spikes
            updates[block] = updates.get(block, 0) + r.neuron_updates
    return {b: spikes[b] / updates[b] for b in updates}


def strict_rule(records: list[LayerStepRecord], ctx: StepContext) -> dict[str, OpSplit]:
    """Op by op: the ``macs`` and ``acs`` columns."""
    return {r.layer: _strict(r) for r in records if r.dense_macs}


def spike_fed(record: LayerStepRecord, blocks: dict[str, str]) -> dict[str, Number]:
    """The dense MACs of ``record`` that are spike-fed: inside a spiking block and reached by a neuron's
    spikes, by that nearest upstream neuron of the spike graph (empty outside blocks). The one definition of
    which synaptic ops the paper convention (and Table III's firing-rate reading) charges at a firing rate."""
    if record.layer not in blocks:
        return {}
    return {u: d for u, d in record.upstream.items() if u != NO_UPSTREAM and d}


def spike_fed_macs(profile: Profile) -> dict[str, Number]:
    """Layer -> its spike-fed dense MACs (:func:`spike_fed`) per image, summed over model calls."""
    blocks = context_of(profile).blocks
    out: dict[str, Number] = {}
    for r in profile.layer_steps:
        out[r.layer] = out.get(r.layer, 0) + sum(spike_fed(r, blocks).values())
    return out


def paper_rule(records: list[LayerStepRecord], ctx: StepContext) -> dict[str, OpSplit]:
    """Spike-fed ops (:func:`spike_fed`) cost fr(nearest upstream neuron) x dense MACs as ACs, the rest of such
    a layer (ops no neuron reaches) its MACs; every other layer its strict counts."""
    rates = {r.layer: r.firing_rate for r in records if r.firing_rate is not None}
    out = {}
    for r in records:
        if not r.dense_macs:
            continue
        fed = spike_fed(r, ctx.blocks)
        if fed:
            out[r.layer] = OpSplit(macs=r.upstream.get(NO_UPSTREAM, 0),
                                   acs=sum(rates.get(u, 0.0) * d for u, d in fed.items()),
                                   convertible=sum(fed.values()))
        else:
            out[r.layer] = _strict(r)
    return out


def block_rule(records: list[LayerStepRecord], ctx: StepContext) -> dict[str, OpSplit]:
    """Every synaptic op in a spiking block at that block's firing rate in the call."""
    rates = _block_rates(records, ctx.blocks)
    out = {}
    for r in records:
        if not r.dense_macs:
            continue
        rate = rates.get(ctx.blocks.get(r.layer, ""))
        out[r.layer] = _strict(r) if rate is None else OpSplit(acs=rate * r.dense_macs, convertible=r.dense_macs)
    return out


def spikformer_rule(records: list[LayerStepRecord], ctx: StepContext) -> dict[str, OpSplit]:
    """The published formula (Zhou et al., ICLR 2023, energy section): the encoding layer at MAC cost; every
    other synaptic op fr x T x FLOPs as ACs, fr the firing rate of its actual input (its non-zero share: the
    ``input_rated_acs`` column, dense MACs already summing over T). Ops whose input is real-valued (neither
    spikes nor counts of spikes) have no firing rate: :func:`_assumed_rate` says which one they are charged at."""
    if not ctx.spiking:
        return strict_rule(records, ctx)
    assumed = _assumed_rate(records, ctx)
    out = {}
    for r in records:
        if not r.dense_macs:
            continue
        if r.layer == ctx.encoder:
            out[r.layer] = _strict(r)
            continue
        rest = r.dense_macs - r.input_rated_dense  # ops with a real-valued input
        acs = r.input_rated_acs
        if rest:
            acs += assumed(r) * rest
        out[r.layer] = OpSplit(acs=acs, convertible=r.dense_macs)
    return out


def _assumed_rate(records: list[LayerStepRecord], ctx: StepContext) -> Callable[[LayerStepRecord], float]:
    """The rate the spikformer convention assumes for a layer's ops with a real-valued input (the formula
    presumes every layer after the encoder reads spikes): the dense-MAC-weighted rate of their nearest upstream
    neurons in the spike graph; where no neuron reaches them, the rate of the layer's spiking block, or outside
    any block the model's mean rate in the call."""
    rates = _rates(records)
    blocks = _block_rates(records, ctx.blocks)
    spikes = sum(r.spikes for r in records)
    updates = sum(r.neuron_updates for r in records)
    mean = spikes / updates if updates else 0.0

    def assumed(r: LayerStepRecord) -> float:
        fallback = blocks.get(ctx.blocks.get(r.layer, ""), mean)
        total = sum(r.upstream.values())
        if not total:
            return fallback
        return sum(rates.get(u, fallback) * d for u, d in r.upstream.items()) / total

    return assumed


COUNTING_CONVENTIONS: dict[str, Convention] = {
    "strict": Convention("strict", "op by op: real-valued inputs are MACs, spike inputs ACs (nnz x fan-out)",
                         strict_rule),
    "paper": Convention("paper", "synaptic ops in a spiking block that a neuron's spikes reach cost "
                                 "fr(nearest upstream neuron in the spike graph) x dense MACs as ACs; the rest strict",
                        paper_rule),
    "block": Convention("block", "every synaptic op in a spiking block costs fr(block) x dense MACs as ACs; "
                                 "ops outside blocks strict", block_rule),
    "spikformer": Convention("spikformer", "the first encoding layer at MAC cost; every other synaptic op "
                                           "fr(its actual input) x T x FLOPs as ACs (Zhou et al., ICLR 2023)",
                             spikformer_rule),
}
DEFAULT_CONVENTIONS = ("strict", "paper", "block", "spikformer")


def get_convention(name: str) -> Convention:
    """The registered convention ``name``.

    Raises:
        ConventionError: no such convention (the message lists the known ones).
    """
    if name not in COUNTING_CONVENTIONS:
        raise ConventionError(f"unknown convention {name!r}; known: {', '.join(COUNTING_CONVENTIONS)}")
    return COUNTING_CONVENTIONS[name]


def context_of(profile: Profile) -> StepContext:
    """The static facts about ``profile``'s model that the rules need."""
    encoder = next((r.name for r in profile.layers if r.dense_macs), None)
    blocks = {r.name: r.block for r in profile.layers if r.block is not None}
    return StepContext(blocks=blocks, encoder=encoder, spiking=profile.is_spiking)


def split_steps(profile: Profile, convention: str) -> list[dict[str, OpSplit]]:
    """Per model call, layer -> :class:`OpSplit` under ``convention``.

    Raises:
        ConventionError: unknown convention.
        ValueError: a profile with layers but without per-step layer records.
    """
    rule = get_convention(convention).rule
    if profile.layers and not profile.layer_steps:
        raise ValueError("this profile has layers but no per-step layer records; profile the model again")
    ctx = context_of(profile)
    by_step: dict[int, list[LayerStepRecord]] = {}
    for r in profile.layer_steps:
        by_step.setdefault(r.step, []).append(r)
    return [rule(by_step.get(s.index, []), ctx) for s in profile.steps]

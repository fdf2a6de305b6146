"""The peer table of docs/peers.md: sdit's strict counts beside a count by value, spikingjelly's and NeuroBench's.

    PYTHONPATH=. .venv/bin/python scripts/peers_table.py                      # every model of the peer suite
    PYTHONPATH=. .venv/bin/python scripts/peers_table.py conv-if-maxpool-conv # some of them, by name

The models, their inputs and the independent count are the peer suite's own (``tests/profiling``:
``MODELS``, ``calibrated``, ``value_count``), so the table and the tests describe the same runs: random
weights (seed 0), BatchNorm calibrated on the input, IF neurons, multi-step, T = 2, one image. Prints one
Markdown row per model, MACs and ACs per image (each one synaptic operation); NeuroBench's columns read
"n/a" where NeuroBench is not installed.
"""

from __future__ import annotations

import argparse
import sys

HEADER = ("| model | dense MACs | sdit strict MACs | sdit strict ACs | by value MACs | by value ACs | "
          "spikingjelly MACCounter | spikingjelly SynOpCounter | NeuroBench effective MACs | NeuroBench ACs |")
# The names docs/peers.md gives the suite's models.
LABELS = {"conv-if-maxpool-conv": "Conv-IF-MaxPool-Conv", "spikformer": "spikformer (small)",
          "spike_driven_transformer": "spike_driven_transformer (small)"}


def row(name: str) -> str:
    """The Markdown row of peer-suite model ``name``."""
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, MACCounter, SynOpCounter

    import profiling
    from tests.profiling.test_peer_suite import MODELS, REPEATS, _neurobench_ops, calibrated
    from tests.profiling.value_count import value_count

    net, x = calibrated(*MODELS[name], repeats=name in REPEATS)
    p = profiling.profile(net, x, strict=True)
    mac, synop = MACCounter(), SynOpCounter()
    by_value = value_count(net, x, also=DispatchCounterMode([mac, synop]))
    try:
        neurobench = tuple(f"{v:,}" for v in _neurobench_ops(net, x))
    except ImportError:
        neurobench = ("n/a", "n/a")
    cells = (LABELS.get(name, name), f"{p.per_image['dense_macs']:,}", f"{p.per_image['macs']:,}",
             f"{p.per_image['acs']:,}", f"{by_value[0]:,}", f"{by_value[1]:,}", f"{int(mac.get_total()):,}",
             f"{int(synop.get_total()):,}", *neurobench)
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    from tests.profiling.test_peer_suite import MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"peer-suite models (default: all): {', '.join(MODELS)}")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        print(f"error: unknown model {unknown[0]!r}; known: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for name in args.models or MODELS:
        print(row(name), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Command-line entry point: ``python -m mmkit <command>``.

Commands that later issues fill in (build-data, train, evaluate, reproduce) are listed so that
``--help`` shows the intended interface; those not built yet say so and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

_PENDING = {
    "build-data": "building the embedded music21 dataset",
    "train": "training Proposed / Baseline / PCME / MPC",
    "evaluate": "evaluating runs on the nine retrieval tasks",
    "reproduce": "the full pipeline (dataset, training, evaluation, reports/)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, what in _PENDING.items():
        sub.add_parser(name, help=f"{what} (not yet available)")
    args, _ = parser.parse_known_args(argv)
    print(f"mmkit {args.command}: not yet available — {_PENDING[args.command]} lands with a later issue.",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

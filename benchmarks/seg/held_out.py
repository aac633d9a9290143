"""What the segmentation benchmarks share: their command-line arguments and the held-out cases."""

from __future__ import annotations

import argparse
from pathlib import Path

from segqc.io.datasets import Dataset
from segqc.io.split import Split


def held_out_parser(description: str) -> argparse.ArgumentParser:
    """A parser with ``--dataset``, ``--split``, ``--model NAME=MODEL_DIR`` (repeatable), ``--out``
    and ``--limit``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, help="NAME=MODEL_DIR (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="only the first N held-out cases")
    return parser


def held_out_cases(args: argparse.Namespace) -> tuple[Dataset, list[str]]:
    """The dataset and its ``holdout`` cases of the split (the first ``--limit`` when given)."""
    dataset = Dataset.open(args.dataset)
    cases = [c for c in Split.load(args.split).holdout if c in set(dataset.cases)]
    return dataset, cases[:args.limit] if args.limit else cases

"""Lay out BU-BIL as one segqc multi-rater folder: ``OUT/<dataset>_<case>/image.png`` (grey) and
``rater_PersonK_<Tool>.png`` (the 10 expert masks, linked). Palette images of the source are
converted to grey (segqc reads single-channel images only); nothing else changes.

    python benchmarks/seg/prepare_bubil.py ../shared/data/bubil OUT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="../shared/data/bubil")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    n = 0
    for case in sorted(p for p in args.source.glob("BU-BIL_Dataset*/*") if (p / "image.png").exists()):
        target = args.out / f"{case.parent.name}_{case.name}"
        target.mkdir(parents=True, exist_ok=True)
        image = Image.open(case / "image.png")
        grey = np.asarray(image if image.mode in ("L", "I;16", "I") else image.convert("L"))
        Image.fromarray(grey).save(target / "image.png")
        for rater in sorted(case.glob("rater_*.png")):
            link = target / rater.name
            if not link.exists():
                link.symlink_to(rater.resolve())
        n += 1
    print(f"wrote {n} cases to {args.out}")


if __name__ == "__main__":
    main()

"""Put the networks of several QCResUNet model folders into one ensemble model folder.

    python benchmarks/qc_acdc/merge_members.py --model RUN_SEED0/model --model RUN_SEED1/model --out ENSEMBLE

Each input is a model folder written by ``segqc qc train qcresunet`` (every member with its own
read-out, error-map thresholds and beyond-the-window marks). The output holds all their members,
renumbered ``member0 ... memberN-1``, and the first input's config, fingerprint and metrics, with
``members`` set to their number; ``segqc qc predict`` then reports the mean of the members'
estimates (their standard deviation as the spread) and thresholds the mean error probability at
the members' mean threshold — what ``--set members=N`` trains in one run, except that separately
trained runs drew their own training data from their own seeds. The inputs must agree on
everything but the seed (config, labels, classes, preprocessing plan, strides, kernels); otherwise
the script stops with one line naming the folder and the field.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

MODEL_FILES = ("fingerprint.json", "metrics.json")
"""Files of the first input copied as they are (the members' own numbers stay in their weights)."""


def _meta(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise SystemExit(f"{folder}: not a model folder (no config.json)")
    meta = json.loads(path.read_text())
    if meta.get("method") != "qcresunet":
        raise SystemExit(f"{folder}: a {meta.get('method')!r} model, not a QCResUNet one")
    return meta


def _comparable(config: dict) -> dict:
    """The config, the recipe's fields as ``qcresunet.FIELD``, without what may differ between the
    runs of one recipe (the seed and the number of members)."""
    flat = {key: value for key, value in config.items() if key != "qcresunet"}
    flat.update({f"qcresunet.{key}": value for key, value in config["qcresunet"].items()
                 if key not in ("seed", "members")})
    return flat


def merge(folders: list[Path], out: Path) -> int:
    """Write the merged model folder; return its number of members."""
    metas = [_meta(folder) for folder in folders]
    first = _comparable(metas[0]["config"])
    for folder, meta in zip(folders[1:], metas[1:]):
        other = _comparable(meta["config"])
        for key in sorted(set(first) | set(other)):
            if first.get(key) != other.get(key):
                raise SystemExit(f"{folder}: its config differs from {folders[0]}'s in {key!r}")
    out.mkdir(parents=True, exist_ok=True)
    components: list[str] = []
    for folder, meta in zip(folders, metas):
        for name in meta["components"]:
            target = f"member{len(components)}"
            shutil.copyfile(folder / f"{name}.safetensors", out / f"{target}.safetensors")
            components.append(target)
    for name in MODEL_FILES:
        if (folders[0] / name).is_file():
            shutil.copyfile(folders[0] / name, out / name)
    merged = dict(metas[0])
    merged["components"] = components
    merged["config"] = json.loads(json.dumps(metas[0]["config"]))
    merged["config"]["qcresunet"]["members"] = len(components)
    merged["merged_from"] = [{"folder": str(folder), "seed": meta.get("seed")} for folder, meta in zip(folders, metas)]
    (out / "config.json").write_text(json.dumps(merged, indent=2) + "\n")
    return len(components)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", required=True, help="a model folder (repeat)")
    parser.add_argument("--out", type=Path, required=True, help="the ensemble model folder to write")
    args = parser.parse_args()
    if len(args.model) < 2:
        raise SystemExit("give at least two --model folders")
    print(f"wrote {args.out} with {merge(args.model, args.out)} members")


if __name__ == "__main__":
    main()

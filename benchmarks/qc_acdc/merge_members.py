"""Put the networks of several QCResUNet model folders into one ensemble model folder.

    python benchmarks/qc_acdc/merge_members.py --model RUN_SEED0/model --model RUN_SEED1/model --out ENSEMBLE

Each input is a model folder written by ``segqc qc train qcresunet`` (every member with its own
read-out, error-map thresholds and beyond-the-window marks). The output holds all their members,
renumbered ``member0 ... memberN-1``, and the first input's config, fingerprint and metrics, with
``members`` set to their number; ``segqc qc predict`` then reports the mean of the members'
estimates (their standard deviation as the spread) and fuses their error maps as the config's
``ensemble_errors`` says (the paper's majority vote, each member at its own thresholds; ``mean``:
the mean probability at the mean threshold) — what ``--set members=N`` trains in one run, except that separately
trained runs drew their own training data from their own seeds. The inputs must agree on
everything but the seed (config, labels, classes, preprocessing plan, strides, kernels); otherwise
the script stops with one line naming the folder and the field.

``--keep K`` keeps only the K members whose read-out estimates its own fresh samples of the training
volumes best (``segqc.qc.qcresunet.train.best_members``, the rule of ``--set keep_members``): the
read-out's cross-validated error, computed during training, ranks separately trained networks as
held-out data do, so a weak seed is left out without looking at held-out data.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from segqc.execution.cache import file_digest

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
    """The config, the recipe's fields as ``qcresunet.FIELD`` (read as segqc reads them, so a field
    an older run did not save counts with the value it had), without what may differ between the
    runs of one recipe (the seed and the number of members)."""
    from segqc.qc.qcresunet.config import QcResUNetConfig

    flat = {key: value for key, value in config.items() if key != "qcresunet"}
    recipe = QcResUNetConfig.from_dict(config["qcresunet"]).to_dict()
    flat.update({f"qcresunet.{key}": value for key, value in recipe.items()
                 if key not in ("seed", "members", "keep_members")})
    return flat


def _member_records(folder: Path, meta: dict) -> list[dict]:
    """Each member's read-out record, in the order of its ``components``."""
    path = folder / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    numbers = metrics.get("kept_members") or list(range(len(meta["components"])))
    names = [f"member{number}_readout" for number in numbers]
    if len(names) != len(meta["components"]) or any(name not in metrics for name in names):
        raise SystemExit(f"{folder}: metrics.json lacks its members' read-out records, needed by --keep")
    return [metrics[name] for name in names]


def merge(folders: list[Path], out: Path, keep: int = 0) -> int:
    """Write the merged model folder (with ``keep`` > 0 only that many members, the best by
    their read-out's error); return its number of members."""
    metas = [_meta(folder) for folder in folders]
    first = _comparable(metas[0]["config"])
    for folder, meta in zip(folders[1:], metas[1:]):
        other = _comparable(meta["config"])
        for key in sorted(set(first) | set(other)):
            if first.get(key) != other.get(key):
                raise SystemExit(f"{folder}: its config differs from {folders[0]}'s in {key!r}")
    sources = [(folder, name) for folder, meta in zip(folders, metas) for name in meta["components"]]
    chosen = list(range(len(sources)))
    errors: list[float | None] = [None] * len(sources)
    if keep:
        from segqc.qc.qcresunet.train import best_members, readout_error

        records = [record for folder, meta in zip(folders, metas) for record in _member_records(folder, meta)]
        errors = [readout_error(record) for record in records]
        chosen = best_members(records, keep)
    out.mkdir(parents=True, exist_ok=True)
    components: list[str] = []
    kept: list[dict] = []
    for index in chosen:
        folder, name = sources[index]
        target = f"member{len(components)}"
        shutil.copyfile(folder / f"{name}.safetensors", out / f"{target}.safetensors")
        components.append(target)
        kept.append({"folder": str(folder), "member": name, "readout_error": errors[index]})
    for name in MODEL_FILES:
        if (folders[0] / name).is_file():
            shutil.copyfile(folders[0] / name, out / name)
    merged = dict(metas[0])
    merged["components"] = components
    merged["sha256"] = {name: file_digest(out / f"{name}.safetensors") for name in components}  # checked at load
    merged["config"] = json.loads(json.dumps(metas[0]["config"]))
    merged["config"]["qcresunet"]["members"] = len(components)
    merged["config"]["qcresunet"]["keep_members"] = 0
    merged["merged_from"] = [{"folder": str(folder), "seed": meta.get("seed")} for folder, meta in zip(folders, metas)]
    merged["merged_members"] = kept
    (out / "config.json").write_text(json.dumps(merged, indent=2) + "\n")
    return len(components)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", required=True, help="a model folder (repeat)")
    parser.add_argument("--out", type=Path, required=True, help="the ensemble model folder to write")
    parser.add_argument("--keep", type=int, default=0,
                        help="keep only this many members, those with the lowest read-out error (default: all)")
    args = parser.parse_args()
    if len(args.model) < 2:
        raise SystemExit("give at least two --model folders")
    if args.keep < 0:
        raise SystemExit(f"--keep must be 0 (all) or more, got {args.keep}")
    print(f"wrote {args.out} with {merge(args.model, args.out, args.keep)} members")


if __name__ == "__main__":
    main()

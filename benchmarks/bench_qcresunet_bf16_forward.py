"""QCResUNet's forward pass in float32 and in bfloat16 autocast on ACDC volumes: seconds per
volume and how far the bfloat16 read-out features and estimates are from the float32 ones.

Run from the repository root::

    python benchmarks/bench_qcresunet_bf16_forward.py [--model models/acdc-qcresunet-small]
        [--data ../shared/data/acdc] [--cases 16] [--threads 2] [--out benchmarks/results/qcresunet_bf16_forward.json]

What it does: preprocesses the first ``--cases`` ACDC volumes with the model's plan, with each
volume's ground truth eroded by one voxel per class as the segmentation to check (so the error
maps have something to find), builds the network's inputs as ``segqc qc predict`` does
(:func:`segqc.qc.qcresunet.predict.network_inputs`) and times one forward pass (estimates with
the read-out, error maps) in float32 and one under bfloat16 autocast (the model loaded for its
``precision=auto``: the 3D convolutions PyTorch's CPU kernels get wrong are shielded), after one
warm-up pass each. Reports the median seconds per volume, the relative difference of the
read-out features (``|bf16 - fp32| / (|fp32| + 0.01)``, median and max), the largest difference
of the Dice / NSD estimates and the share of error-map voxels whose thresholded value differs.
On a CPU without native bfloat16 the model resolves to float32 and both columns are float32.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from segqc.fingerprint.preprocessing import preprocess_files
from segqc.qc.qcresunet.predict import load, network_inputs
from segqc.training.precision import autocast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/acdc-qcresunet-small"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/acdc"))
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/qcresunet_bf16_forward.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load(args.model)  # shielded for bfloat16 where precision=auto resolves to it
    network = model.members[0]
    precisions = {"fp32": dataclasses.replace(model, precision="fp32"), model.precision: model}
    labels = sorted((args.data / "labelsTr").glob("*.nii.gz"))[: args.cases]
    times: dict[str, list[float]] = {name: [] for name in precisions}
    feature_diff, estimate_diff, flipped = [], [], []
    for label in labels:
        case = label.name[: -len(".nii.gz")]
        prepared = preprocess_files([args.data / "imagesTr" / f"{case}_0000.nii.gz"], model.plan, label_path=label)
        seg = np.moveaxis(prepared.required_label(), -1, 0).astype(np.int64)
        for value in (1, 2, 3):  # a segmentation with a one-voxel rim missing per class
            mask = seg == value
            seg[mask & ~ndimage.binary_erosion(mask, iterations=1)] = 0
        image, query = network_inputs(model, np.moveaxis(prepared.image, -1, 0), seg)
        outputs = {}
        for name, variant in precisions.items():
            with torch.no_grad(), autocast(image.device, variant.precision):
                network(image, query)  # warm-up
                start = time.perf_counter()
                out = network(image, query)
                times[name].append(time.perf_counter() - start)
                features, probs = network.readout_inputs(image, query)
            outputs[name] = (features.float(), probs.float(), torch.cat([out.dice, out.nsd], 1).float())
        (f32, p32, e32), (f16, p16, e16) = outputs["fp32"], outputs[model.precision]
        rel = ((f16 - f32).abs() / (f32.abs() + 0.01)).flatten()
        feature_diff.append((float(rel.median()), float(rel.max())))
        estimate_diff.append(float((e16 - e32).abs().max()))
        threshold = network.sem_threshold.view(1, -1, 1, 1, 1)
        flipped.append(float(((p16 >= threshold) != (p32 >= threshold)).float().mean()))
    result = {
        "machine": {"cpus": torch.get_num_threads(), "python": platform.python_version(),
                    "precision": model.precision},
        "model": str(args.model), "volumes": len(labels),
        "seconds_per_volume": {k: round(statistics.median(v), 4) for k, v in times.items()},
        "feature_relative_difference": {"median": round(statistics.median(d[0] for d in feature_diff), 5),
                                        "max": round(max(d[1] for d in feature_diff), 5)},
        "estimate_max_abs_difference": round(max(estimate_diff), 5),
        "error_map_voxels_flipped": round(statistics.mean(flipped), 7),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The zoo on real data (ACDC in ../shared/data): slow, excluded by default (`pytest -m slow`)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from segqc.zoo import ZooConfig, predict_zoo, train_zoo


@pytest.mark.slow
def test_a_short_acdc_zoo_improves_with_training_and_predicts_on_the_original_grid(shared_data, tmp_path):
    shared_data("acdc/dataset.json")
    acdc = shared_data("acdc")
    config = ZooConfig.preset("small", size=96, epochs=6, steps_per_epoch=10, snapshot_epochs=(1, 6))
    train_zoo(acdc, tmp_path / "zoo", config, jobs=2)
    result = predict_zoo(tmp_path / "zoo", acdc, tmp_path / "out", cases=None, variants="clean", jobs=2)
    assert not result.failed and len(result.manifest) == 2 * 44
    means = result.manifest.groupby("epoch")["dice"].mean()
    assert means[6] > means[1]
    for row in result.manifest.head(4).itertuples():
        pred = sitk.ReadImage(str(tmp_path / "out" / row.file))
        gt = sitk.ReadImage(row.gt_file)
        assert pred.GetSize() == gt.GetSize() and np.allclose(pred.GetSpacing(), gt.GetSpacing())
        assert np.allclose(pred.GetOrigin(), gt.GetOrigin()) and np.allclose(pred.GetDirection(), gt.GetDirection())

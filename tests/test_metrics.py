"""ConfusionMatrix and the derived metrics against hand-computed cases."""
import json
import math

import numpy as np
import pytest

from evaluation.metrics import ConfusionMatrix, format_table, to_json


def test_hand_computed_3x3():
    # gt:   0 0 1 1 2 2 255      pred: 0 1 1 1 2 0 2
    target = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    cm = ConfusionMatrix(3)
    cm.update(target, pred)
    cm.update(np.array([255]), np.array([2]))  # ignored
    expected = np.array([[1, 1, 0],
                         [0, 2, 0],
                         [1, 0, 1]])
    np.testing.assert_array_equal(cm.mat, expected)
    r = cm.compute()
    # IoU_c = tp / (row + col - tp): class0 1/(2+2-1)=1/3, class1 2/(2+3-2)=2/3, class2 1/(2+1-1)=1/2
    np.testing.assert_allclose(r["IoU"], [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(r["Acc"], [1 / 2, 1.0, 1 / 2])
    assert r["aAcc"] == pytest.approx(4 / 6)
    assert r["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert r["mAcc"] == pytest.approx(2 / 3)
    assert r["pixels"] == 6


def test_accumulates_over_images_not_per_image_mean():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1]))  # per image IoU0 = 3/4
    cm.update(np.array([1, 1]), np.array([1, 0]))              # per image IoU1 = 1/2
    r = cm.compute()
    # dataset-level: class 0 tp 3, row 4, col 4 -> 3/5; class 1 tp 1, row 2, col 2 -> 1/3
    np.testing.assert_allclose(r["IoU"], [3 / 5, 1 / 3])


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 1, 1]), np.array([0, 1, 0]))
    r = cm.compute()
    assert math.isnan(r["IoU"][2]) and math.isnan(r["IoU"][3])
    assert r["mIoU"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    # a class predicted but absent from gt has IoU 0 (counted), accuracy NaN
    cm.update(np.array([0]), np.array([3]))
    r = cm.compute()
    assert r["IoU"][3] == 0.0 and math.isnan(r["Acc"][3])


def test_miou_over_all_counts_absent_classes_as_zero():
    """The official CCNet evaluate.py's convention, written from its formula: IoU = tp / max(1, gt + pred - tp),
    mean over every class; and 'present' (cityscapesScripts, mmsegmentation) on the same matrix."""
    gt = np.array([0, 0, 1, 1, 1, 3, 3])   # class 2 absent from both
    pred = np.array([0, 1, 1, 1, 0, 3, 1])
    cm = ConfusionMatrix(4)
    cm.update(gt, pred)
    tp = np.array([1, 2, 0, 1.0])
    union = np.array([2 + 2 - 1, 3 + 4 - 2, 0, 2 + 1 - 1.0])
    official = (tp / np.maximum(1.0, union)).mean()
    acc_all = (tp / np.maximum(1.0, np.array([2, 3, 0, 2.0]))).mean()
    everything, present = cm.compute("all"), cm.compute("present")
    assert everything["mIoU"] == pytest.approx(official) and everything["mAcc"] == pytest.approx(acc_all)
    assert present["mIoU"] == pytest.approx((tp / np.maximum(1.0, union))[[0, 1, 3]].mean())
    assert everything["miou_over"] == "all" and present["miou_over"] == "present"
    assert math.isnan(everything["IoU"][2])  # the per-class entry stays nan under both conventions
    np.testing.assert_array_equal(everything["IoU"], present["IoU"])
    assert everything["mIoU"] < present["mIoU"]
    assert "means over all classes, absent ones 0" in format_table(everything)
    with pytest.raises(ValueError, match="miou_over"):
        cm.compute("some")


def test_all_ignored_gives_nan_not_an_error():
    cm = ConfusionMatrix(3)
    cm.update(np.full((2, 2), 255), np.zeros((2, 2), int))
    r = cm.compute()
    assert r["pixels"] == 0 and math.isnan(r["mIoU"]) and math.isnan(r["aAcc"])


def test_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="prediction values"):
        cm.update(np.zeros(2, int), np.array([0, 3]))
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)


def test_reduce_without_mpi_is_identity():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 1]), np.array([0, 0]))
    before = cm.mat.copy()
    cm.reduce()
    np.testing.assert_array_equal(cm.mat, before)


def test_table_and_json():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1]), np.array([0, 1]))
    r = cm.compute()
    table = format_table(r, ["road", "sky", "car"])
    assert "road" in table and "100.00" in table and "nan" in table and "mIoU 100.00" in table
    data = json.loads(to_json(r, ["road", "sky", "car"], split="val"))
    assert data["per_class"]["car"]["IoU"] is None and data["mIoU"] == 1.0 and data["split"] == "val"

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from medtransfer.errors import ConfigError, DataError
from medtransfer.evaluate import (
    binary_metrics,
    choose_threshold,
    compute_metrics,
    confidence_bins,
    confusion,
    expected_calibration_error,
    full_metrics,
    mean_sd,
    multiclass_metrics,
)

# Worked example: predictions at 0.5 are [0,1,0,1,0,1,1,0] -> tp 3, tn 3, fp 1, fn 1.
Y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
P = np.array([0.1, 0.6, 0.2, 0.9, 0.4, 0.8, 0.7, 0.3])


def test_binary_metrics_match_hand_computed_values():
    m = binary_metrics(Y, P)
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (3.0, 3.0, 1.0, 1.0)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    # 16 positive/negative pairs; only (0.4 vs 0.6) is ranked wrongly.
    assert m["auc"] == pytest.approx(15 / 16)
    assert all(isinstance(v, float) for v in m.values())


def test_binary_threshold_moves_the_decision():
    m = binary_metrics(Y, P, threshold=0.35)  # 0.4 and 0.6 now positive
    assert (m["tp"], m["fp"], m["fn"]) == (4.0, 1.0, 0.0)
    assert m["recall"] == 1.0
    assert m["auc"] == pytest.approx(15 / 16)  # threshold-free


def test_binary_metrics_agree_with_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1)
    m = binary_metrics(y, p)
    pred = (p >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    tn, fp, _, _ = skm.confusion_matrix(y, pred).ravel()
    assert m["specificity"] == pytest.approx(tn / (tn + fp))


def test_auc_is_nan_with_one_class_and_undefined_ratios_are_zero():
    m = binary_metrics([1, 1, 1], [0.2, 0.3, 0.4])
    assert math.isnan(m["auc"])
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["specificity"] == 0.0
    assert math.isnan(compute_metrics([0, 0], np.array([[0.9, 0.1], [0.4, 0.6]]))["auc"])


def test_multiclass_metrics_hand_computed_and_sklearn():
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array(
        [
            [0.8, 0.1, 0.1],  # 0 ok
            [0.3, 0.6, 0.1],  # 0 -> 1
            [0.2, 0.7, 0.1],  # 1 ok
            [0.1, 0.8, 0.1],  # 1 ok
            [0.1, 0.2, 0.7],  # 2 ok
            [0.5, 0.1, 0.4],  # 2 -> 0
        ]
    )
    m = multiclass_metrics(y, proba)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert (m["recall_0"], m["recall_1"], m["recall_2"]) == pytest.approx((0.5, 1.0, 0.5))
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    # precision: class 0 1/2, class 1 2/3, class 2 1/1
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    pred = proba.argmax(1)
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"))


def test_multiclass_auc_nan_when_a_class_is_absent():
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    m = multiclass_metrics([0, 1, 0], proba)
    assert math.isnan(m["auc"])
    assert m["recall_2"] == 0.0
    assert m["accuracy"] == 1.0


def test_compute_metrics_dispatches_on_columns():
    proba2 = np.stack([1 - P, P], axis=1)
    m2 = compute_metrics(Y, proba2)
    assert {k: v for k, v in m2.items() if not k.startswith("f1_")} == binary_metrics(Y, P)
    proba3 = np.full((3, 3), 1 / 3)
    assert "balanced_accuracy" in compute_metrics([0, 1, 2], proba3)
    with pytest.raises(DataError, match="K >= 2"):
        compute_metrics(Y, P[:, None])


def test_compute_metrics_per_class_and_macro_f1():
    """Seed 001's per-class F1 (covid / normal) and macro F1, by class index, in every set's metrics."""
    m = compute_metrics(Y, np.stack([1 - P, P], axis=1), threshold=0.65)
    pred = (P >= 0.65).astype(int)
    per = skm.f1_score(Y, pred, average=None)
    assert (m["f1_0"], m["f1_1"]) == pytest.approx(tuple(per))
    assert m["f1_1"] == m["f1"] and m["f1_macro"] == pytest.approx(per.mean())
    y3 = np.array([0, 0, 1, 1, 2, 2])
    p3 = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1],
                   [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    m3 = compute_metrics(y3, p3)
    per3 = skm.f1_score(y3, p3.argmax(axis=1), average=None)
    assert [m3[f"f1_{c}"] for c in range(3)] == pytest.approx(list(per3))
    assert m3["f1_macro"] == m3["f1"] == pytest.approx(per3.mean())
    # A class never true nor predicted: its F1 is 0 and the macro mean leaves it out (as f1).
    m4 = compute_metrics([0, 1, 0], np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1]]))
    assert m4["f1_2"] == 0.0 and m4["f1_macro"] == m4["f1"] == 1.0


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 1], [0.5, float("nan")], "non-finite"),
        ([0, 2], [0.5, 0.5], "0 or 1"),
        ([0, 1], [0.5, 1.5], r"\[0, 1\]"),
        ([0, 1, 1], [0.5, 0.5], "shape"),
        ([], [], "non-empty"),
    ],
)
def test_binary_metrics_reject_bad_input(y, p, match):
    with pytest.raises(DataError, match=match):
        binary_metrics(np.array(y, dtype=np.int64), np.array(p))


def test_multiclass_rejects_logits_and_out_of_range_labels():
    with pytest.raises(DataError, match="sum to 1"):
        multiclass_metrics([0, 1, 2], np.array([[0.9, 0.9, 0.9]] * 3))
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        multiclass_metrics([0, 1, 3], np.full((3, 3), 1 / 3))


def test_confusion_rows_are_true_classes():
    assert confusion([0, 0, 1, 2], [0, 1, 1, 0], 3) == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert confusion([0], [0], 2) == [[1, 0], [0, 0]]
    with pytest.raises(DataError, match="y_pred"):
        confusion([0, 1], [0, 5], 2)


def test_mean_sd_sample_sd_and_nan_count():
    m, s = mean_sd([1.0, 2.0, 3.0, float("nan")])
    assert (m, s) == (2.0, 1.0)
    r = mean_sd([1.0, 2.0, 3.0, float("nan")])
    assert (r.n, r.n_nan, r.mean, r.sd) == (3, 1, 2.0, 1.0)
    one = mean_sd([0.7])
    assert one[0] == 0.7 and math.isnan(one[1]) and one.n == 1
    empty = mean_sd([float("nan")])
    assert math.isnan(empty.mean) and math.isnan(empty.sd) and empty.n_nan == 1
    assert mean_sd(np.array([2.0, 4.0])).sd == pytest.approx(np.std([2.0, 4.0], ddof=1))


def test_full_metrics_binary_extends_binary_metrics_and_agrees_with_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 150)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 150), 0, 1)
    proba = np.stack([1 - p, p], axis=1)
    m = full_metrics(y, proba, threshold=0.4)
    assert {k: m[k] for k in binary_metrics(y, p, 0.4)} == binary_metrics(y, p, 0.4)
    pred = (p >= 0.4).astype(int)
    assert m["sensitivity"] == m["recall"]
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert m["threshold"] == 0.4


def test_full_metrics_multiclass_per_class_and_macro():
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1],
                      [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    m = full_metrics(y, proba, classes=["a", "b", "c"])
    pred = proba.argmax(1)
    assert (m["recall_a"], m["recall_b"], m["recall_c"]) == pytest.approx((0.5, 1.0, 0.5))
    assert (m["precision_a"], m["precision_b"], m["precision_c"]) == pytest.approx((0.5, 2 / 3, 1.0))
    # specificity of class b: 4 non-b images, one (a row 1) predicted b → 3/4
    assert m["specificity_b"] == pytest.approx(3 / 4)
    assert m["auc_a"] == pytest.approx(skm.roc_auc_score(y == 0, proba[:, 0]))
    assert m["pr_auc"] == pytest.approx(np.mean([skm.average_precision_score(y == c, proba[:, c])
                                                 for c in range(3)]))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, proba))
    assert "recall_0" not in m
    with pytest.raises(DataError, match="2 names for 3"):
        full_metrics(y, proba, classes=["a", "b"])


def test_expected_calibration_error_hand_computed():
    y = np.array([0, 1, 1, 0])
    p = np.array([0.2, 0.7, 0.9, 0.6])  # top-label confidences 0.8, 0.7, 0.9, 0.6; last one wrong
    proba = np.stack([1 - p, p], axis=1)
    # ten bins: one case per bin → (|1-.8| + |1-.7| + |1-.9| + |0-.6|) / 4
    assert expected_calibration_error(y, proba, 10) == pytest.approx(0.3)
    # two bins: all in (0.5, 1] → |3 correct - 3.0 summed confidence| / 4
    assert expected_calibration_error(y, proba, 2) == pytest.approx(0.0)
    assert full_metrics(y, proba)["ece"] == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="'n_bins'"):
        expected_calibration_error(y, proba, 0)


def test_confidence_bins_put_edges_in_the_lower_bin():
    assert confidence_bins(np.array([0.0, 0.1, 0.7, 0.70001, 1.0]), 10).tolist() == [0, 0, 6, 7, 9]


def test_choose_threshold_youden_and_target_sensitivity_hand_computed():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    # Candidates (midpoints): 0.225 → sens 1, spec .5; 0.6 → sens .5, spec 1 (both J = .5);
    # ties go to the higher threshold.
    assert choose_threshold(y, p) == pytest.approx(0.6)
    assert choose_threshold(y, p, "sensitivity", target=0.9) == pytest.approx(0.225)
    assert choose_threshold(y, p, "sensitivity", target=0.5) == pytest.approx(0.6)
    chosen = choose_threshold(y, p)
    assert binary_metrics(y, p, chosen)["specificity"] == 1.0


def test_choose_threshold_rejects_bad_input():
    with pytest.raises(ConfigError, match="'method'.*did you mean 'youden'.*Allowed: youden, sensitivity"):
        choose_threshold([0, 1], [0.2, 0.8], "youdn")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'target'"):
        choose_threshold([0, 1], [0.2, 0.8], "sensitivity", target=1.5)
    with pytest.raises(DataError, match="both classes"):
        choose_threshold([1, 1], [0.2, 0.8])
    with pytest.raises(DataError, match="p_val"):
        choose_threshold([0, 1], [0.2, float("nan")])


@pytest.mark.parametrize("k", [2, 3, 5])
def test_threshold_metrics_equal_sklearns_with_absent_and_unpredicted_classes(k):
    rng = np.random.default_rng(k)
    for n in (1, 7, 60):
        y = rng.integers(0, max(k - 1, 1), n)  # the last class never occurs in y ...
        proba = rng.dirichlet(np.ones(k), n)
        proba[:, 0] *= 0.01 if k > 2 else 1.0  # ... and the first is rarely predicted
        proba /= proba.sum(1, keepdims=True)
        m = compute_metrics(y, proba)
        pred = (proba[:, 1] >= 0.5).astype(int) if k == 2 else proba.argmax(1)
        average = "binary" if k == 2 else "macro"
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
        for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score),
                         ("f1", skm.f1_score)):
            assert m[name] == pytest.approx(fn(y, pred, average=average, zero_division=0)), name
        per = skm.f1_score(y, pred, labels=list(range(k)), average=None, zero_division=0)
        assert [m[f"f1_{c}"] for c in range(k)] == pytest.approx(per)
        assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
        if k > 2:
            recall = skm.recall_score(y, pred, labels=list(range(k)), average=None, zero_division=0)
            assert [m[f"recall_{c}"] for c in range(k)] == pytest.approx(recall)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sklearn warns of a class only predicted
                assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))

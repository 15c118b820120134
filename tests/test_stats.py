"""Statistics checked against published worked examples, scikit-learn, scipy and numbers statsmodels
gave (hard-coded: statsmodels is not a dependency)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm

from medtransfer.errors import ConfigError, DataError
from medtransfer.evaluate import choose_threshold, full_metrics
from medtransfer.stats import (
    Scored,
    bootstrap_ci,
    bootstrap_weights,
    delong_ci,
    delong_covariance,
    delong_test,
    holm,
    mcnemar_test,
    paired_bootstrap,
    t_interval,
)

# pROC's aSAH data set (Turck et al. 2010, Intensive Care Med 36:107; shipped with pROC, Robin et
# al. 2011, BMC Bioinformatics 12:77): 113 patients in pROC's row order, outcome (P = poor,
# the positive class; G = good), wfns, s100b, ndka.
ASAH = """
G,1,0.13,3.01 G,1,0.14,8.54 G,1,0.1,8.09 G,1,0.04,10.42 P,3,0.13,17.4 P,2,0.1,12.75 G,5,0.47,6.0
P,4,0.16,13.2 G,1,0.18,15.54 G,2,0.1,6.01 P,5,0.12,15.96 G,2,0.1,17.86 P,5,0.44,5.18 P,5,0.71,8.9
G,1,0.04,13.41 G,2,0.08,20.75 P,5,0.49,11.6 G,2,0.04,16.11 P,2,0.07,32.37 P,5,0.33,54.82
P,2,0.09,32.41 G,1,0.09,49.94 P,1,0.07,40.34 G,1,0.11,9.47 G,1,0.07,6.29 G,2,0.17,12.53
G,1,0.07,6.54 G,2,0.11,6.3 G,1,0.13,80.3 G,1,0.19,12.8 G,3,0.05,9.8 G,4,0.16,9.81 P,2,0.41,9.85
G,1,0.14,18.21 G,4,0.34,5.03 P,5,0.35,14.04 P,4,0.48,21.93 G,1,0.09,8.02 P,4,0.96,7.42
P,2,0.25,8.38 G,5,0.5,6.59 G,5,0.46,9.63 G,1,0.16,13.12 G,1,0.07,7.96 G,2,0.43,14.34
G,4,0.45,41.43 G,1,0.11,7.63 G,1,0.08,7.06 G,2,0.09,12.59 P,5,0.86,13.56 P,5,0.52,3.87
G,2,0.08,9.44 G,1,0.06,7.66 G,2,0.13,12.98 P,5,2.07,419.19 G,1,0.1,27.19 G,2,0.14,22.27
G,2,0.15,9.95 P,2,0.07,21.22 G,1,0.06,11.73 P,5,0.77,10.4 G,1,0.05,58.83 G,1,0.09,6.39
P,2,0.3,11.09 P,5,0.03,12.22 P,2,0.09,13.67 G,1,0.04,17.21 P,4,0.23,22.63 P,5,0.7,12.9
G,2,0.09,9.7 P,4,0.27,21.57 P,4,0.71,8.23 P,1,0.08,72.57 P,4,0.26,15.54 G,1,0.08,10.51
G,2,0.16,10.6 G,1,0.09,14.57 P,4,0.13,5.19 P,2,0.1,9.63 G,1,0.08,4.61 P,2,0.11,21.48
G,3,0.33,17.3 G,2,0.11,12.71 G,4,0.28,9.44 G,2,0.07,11.07 G,1,0.1,19.46 G,4,0.32,10.83
P,5,0.22,5.37 G,1,0.07,11.97 G,1,0.05,7.75 G,5,0.24,9.83 G,4,0.38,10.55 G,2,0.1,28.49
G,2,0.15,8.53 G,1,0.08,12.57 G,1,0.14,12.9 G,1,0.1,46.83 G,3,0.07,11.68 G,1,0.04,12.67
G,2,0.19,9.01 P,5,0.56,9.57 P,2,0.14,34.06 P,2,0.58,11.72 P,5,0.32,14.26 P,5,0.82,47.61
P,5,0.74,11.67 G,2,0.15,24.58 G,4,0.47,10.33 G,4,0.17,13.87 P,5,0.44,15.89 G,1,0.15,22.43
G,1,0.5,6.79 G,1,0.48,13.45
"""
_ROWS = [r.split(",") for r in ASAH.split()]
OUTCOME = np.array([r[0] == "P" for r in _ROWS], dtype=np.int64)
MARKER = {name: np.array([float(r[k]) for r in _ROWS]) for k, name in enumerate(("wfns", "s100b", "ndka"), 1)}


def test_asah_data_is_complete():
    assert len(OUTCOME) == 113 and OUTCOME.sum() == 41  # pROC: 72 good, 41 poor outcomes


@pytest.mark.parametrize(
    ("a", "b", "z", "p", "low", "high"),
    [  # pROC tests/testthat/test-roc.test.R, roc.test(r.a, r.b) with the default DeLong method
        ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
        ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
        ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
    ],
)
def test_delong_matches_proc_roc_test_on_asah(a, b, z, p, low, high):
    r = delong_test(OUTCOME, MARKER[a], MARKER[b])
    assert r.z == pytest.approx(z, rel=1e-9)
    assert r.p == pytest.approx(p, rel=1e-9)
    assert (r.low, r.high) == pytest.approx((low, high), rel=1e-9)
    assert r.diff == pytest.approx(r.auc_a - r.auc_b)
    back = delong_test(OUTCOME, MARKER[b], MARKER[a])
    assert back.z == pytest.approx(-z, rel=1e-9) and back.p == pytest.approx(p, rel=1e-9)


def test_delong_aucs_variances_and_ci_match_proc():
    aucs, cov = delong_covariance(OUTCOME, [MARKER["wfns"], MARKER["ndka"]])
    assert aucs == pytest.approx([0.823678861788618, 0.611957994579946], rel=1e-12)  # pROC auc()
    assert aucs == pytest.approx([skm.roc_auc_score(OUTCOME, MARKER[m]) for m in ("wfns", "ndka")])
    # pROC var(r.wfns), var(r.ndka), var(r.s100b) (DeLong)
    assert np.diag(cov) == pytest.approx([0.00146991470882363, 0.0031908105493913], rel=1e-9)
    var_s100b = delong_covariance(OUTCOME, [MARKER["s100b"]])[1][0, 0]
    assert var_s100b == pytest.approx(0.00266868245717244, rel=1e-9)
    ci = delong_ci(OUTCOME, MARKER["ndka"])  # pROC ci.auc(r.ndka)
    assert (ci.low, ci.high) == pytest.approx((0.501244999271703, 0.722670989888189), rel=1e-9)


def test_youden_threshold_matches_proc_coords_best():
    # pROC: coords(r.s100b, "best") → threshold 0.205, specificity 0.8055556, sensitivity 0.6341463
    thr = choose_threshold(OUTCOME, MARKER["s100b"], "youden")
    assert thr == pytest.approx(0.205)
    pred = MARKER["s100b"] >= thr
    assert pred[OUTCOME == 1].mean() == pytest.approx(0.6341463414634146)
    assert (~pred[OUTCOME == 0]).mean() == pytest.approx(0.8055555555555556)


def test_delong_identical_scores_and_bad_input():
    r = delong_test(OUTCOME, MARKER["wfns"], MARKER["wfns"])
    assert (r.z, r.p, r.diff) == (0.0, 1.0, 0.0)
    with pytest.raises(DataError, match="both classes"):
        delong_test(np.zeros(5, dtype=int), np.arange(5.0), np.arange(5.0))
    with pytest.raises(DataError, match="length 113"):
        delong_test(OUTCOME, MARKER["wfns"][:10], MARKER["ndka"])


def test_mcnemar_agresti_presidential_approval():
    # Agresti (2002) Categorical Data Analysis, 2nd ed., Table 10.1: approval of the president in
    # two surveys of the same 1600 people, [[794, 150], [86, 570]]; without continuity correction
    # z^2 = (86 - 150)^2 / (86 + 150) = 17.36. We report the continuity-corrected statistic.
    a = np.array([1] * 794 + [1] * 150 + [0] * 86 + [0] * 570, dtype=bool)
    b = np.array([1] * 794 + [0] * 150 + [1] * 86 + [0] * 570, dtype=bool)
    r = mcnemar_test(a, b)
    assert (r.b, r.c) == (150, 86)
    assert r.statistic == pytest.approx((abs(150 - 86) - 1) ** 2 / 236)
    assert r.p == pytest.approx(sps.chi2.sf((abs(150 - 86) - 1) ** 2 / 236, 1))
    assert r.p < 1e-4 and "chi2" in r.method
    uncorrected = (150 - 86) ** 2 / 236
    assert uncorrected == pytest.approx(17.36, abs=0.01)


def test_mcnemar_exact_for_few_discordant_pairs():
    # Fagerland, Lydersen & Laake (2013) BMC Med Res Methodol 13:91, Table 1 (Bentur et al.):
    # b = 1, c = 7 discordant pairs; exact conditional p = 0.070 (2 · P(X ≤ 1 | n=8, 1/2) = 18/256).
    a = np.array([1] * 1 + [1] * 1 + [0] * 7 + [0] * 12, dtype=bool)
    b = np.array([1] * 1 + [0] * 1 + [1] * 7 + [0] * 12, dtype=bool)
    r = mcnemar_test(a, b)
    assert (r.b, r.c) == (1, 7)
    assert r.method == "McNemar exact"
    assert r.p == pytest.approx(18 / 256) and round(r.p, 3) == 0.070
    assert mcnemar_test(a, a).p == 1.0
    with pytest.raises(DataError, match="equal 1-D shapes"):
        mcnemar_test(a, b[:-1])


# (b, c, exact statistic, exact p, corrected chi2, its p, uncorrected chi2, its p), as given by
# statsmodels 0.15.0 ``statsmodels.stats.contingency_tables.mcnemar`` on [[5, b], [c, 9]] with
# exact=True, exact=False (correction=True) and exact=False, correction=False. medtransfer
# computes McNemar with scipy alone; these are the numbers it must keep.
STATSMODELS_MCNEMAR = [
    (1, 7, 1.0, 0.0703125, 3.125, 0.07709987174354202, 4.5, 0.033894853524689295),
    (0, 5, 0.0, 0.0625, 3.2, 0.07363827012030258, 5.0, 0.025347318677468325),
    (3, 3, 3.0, 1.0, 0.16666666666666666, 0.6830913983096086, 0.0, 1.0),
    (10, 14, 10.0, 0.5412561893463135, 0.375, 0.5402913746074198, 0.6666666666666666, 0.4142161782425251),
    (0, 24, 0.0, 1.1920928955078125e-07, 22.041666666666668, 2.6679545936247906e-06, 24.0,
     9.63357008643095e-07),
    (12, 12, 12.0, 1.0, 0.041666666666666664, 0.8382564863858263, 0.0, 1.0),
    (150, 86, 86.0, 3.7159361395713866e-05, 16.81779661016949, 4.114562281345944e-05, 17.35593220338983,
     3.099293441045215e-05),
    (30, 45, 30.0, 0.10534226887460482, 2.6133333333333333, 0.10596880912720207, 3.0, 0.08326451666355042),
    (25, 0, 0.0, 5.960464477539063e-08, 23.04, 1.5866563039511885e-06, 25.0, 5.733031437583875e-07),
    (1, 1, 1.0, 1.0, 0.5, 0.47950012218695337, 0.0, 1.0),
    (40, 41, 40.0, 1.0, 0.0, 1.0, 0.012345679012345678, 0.9115282379093772),
]


@pytest.mark.parametrize("row", STATSMODELS_MCNEMAR, ids=lambda r: f"b{r[0]}-c{r[1]}")
def test_mcnemar_equals_statsmodels(row):
    only_a, only_b, ex_stat, ex_p, cc_stat, cc_p, un_stat, un_p = row
    # 5 cases both right, 9 both wrong, then the discordant ones
    a = np.array([1] * 5 + [1] * only_a + [0] * only_b + [0] * 9, dtype=bool)
    b = np.array([1] * 5 + [0] * only_a + [1] * only_b + [0] * 9, dtype=bool)
    got = [mcnemar_test(a, b, exact=True), mcnemar_test(a, b, exact=False),
           mcnemar_test(a, b, exact=False, correction=False)]
    want = [(ex_stat, ex_p), (cc_stat, cc_p), (un_stat, un_p)]
    for r, (stat, p) in zip(got, want, strict=True):
        assert (r.b, r.c) == (only_a, only_b)
        assert r.statistic == pytest.approx(stat, rel=1e-12, abs=1e-15)
        assert r.p == pytest.approx(p, rel=1e-9, abs=1e-15)
    auto = mcnemar_test(a, b)  # fewer than 25 discordant pairs: exact, else the corrected chi2
    assert auto.method == ("McNemar exact" if only_a + only_b < 25 else "McNemar chi2 (continuity-corrected)")
    assert got[2].method == "McNemar chi2"


def test_holm_matches_statsmodels_numbers_and_hand_example():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 → max(0.06, 0.04) = 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # statsmodels 0.15.0 multipletests(q, method="holm")[1] for these q (Benjamini & Hochberg's
    # 1995 15 p-values, an unsorted list, ties)
    for q, want in (
        ([0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.324, 0.4262, 0.5719,
          0.6528, 0.759, 1.0],
         [0.0015, 0.0056, 0.0247, 0.11399999999999999, 0.2211, 0.27799999999999997, 0.27799999999999997,
          0.27799999999999997, 0.32130000000000003, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ([0.03, 0.001, 0.2, 0.0125, 0.04, 0.011],
         [0.09, 0.006, 0.2, 0.05499999999999999, 0.09, 0.05499999999999999]),
        ([0.02, 0.02, 0.5, 0.02], [0.08, 0.08, 0.5, 0.08]),
    ):
        assert holm(q) == pytest.approx(want, rel=1e-12)
    with_nan = holm([0.01, float("nan"), 0.04])
    assert math.isnan(with_nan[1]) and with_nan[[0, 2]] == pytest.approx([0.02, 0.04])


def test_t_interval_hand_computed():
    r = t_interval([1.0, 2.0, 3.0, 4.0, 5.0, float("nan")])
    half = sps.t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5)
    assert (r.mean, r.n, r.n_nan) == (3.0, 5, 1)
    assert (r.low, r.high) == pytest.approx((3 - half, 3 + half))
    assert half == pytest.approx(1.963, abs=1e-3)
    one = t_interval([0.7])
    assert math.isnan(one.low) and math.isnan(one.high)


def _problem(k: int, n: int, seed: int, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    if ties:
        logits = np.round(logits, 1)
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3])
def test_batched_metrics_equal_full_metrics_at_unit_weights(k):
    y, p = _problem(k, 60, seed=k)
    s = Scored(y, p, threshold=0.4 if k == 2 else 0.5)
    point = s.point(s.names())
    ref = full_metrics(y, p, threshold=0.4 if k == 2 else 0.5)
    for m, v in point.items():
        assert v == pytest.approx(ref[m]), m


def test_batched_binary_metrics_equal_sklearn_sample_weight():
    y, p = _problem(2, 80, seed=5)
    w = np.random.default_rng(6).integers(1, 4, size=(3, 80)).astype(float)
    s = Scored(y, p, threshold=0.45)
    got = s.batch(s.names(), w)
    pred = (p[:, 1] >= 0.45).astype(int)
    for b, sw in enumerate(w):
        ref = {
            "accuracy": skm.accuracy_score(y, pred, sample_weight=sw),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred, sample_weight=sw),
            "sensitivity": skm.recall_score(y, pred, sample_weight=sw),
            "specificity": skm.recall_score(y, pred, pos_label=0, sample_weight=sw),
            "precision": skm.precision_score(y, pred, sample_weight=sw),
            "f1": skm.f1_score(y, pred, sample_weight=sw),
            "auc": skm.roc_auc_score(y, p[:, 1], sample_weight=sw),
            "pr_auc": skm.average_precision_score(y, p[:, 1], sample_weight=sw),
            "brier": skm.brier_score_loss(y, p[:, 1], sample_weight=sw),
        }
        for m, v in ref.items():
            assert got[m][b] == pytest.approx(v), m


def test_batched_multiclass_metrics_equal_sklearn_sample_weight():
    y, p = _problem(4, 80, seed=7)
    w = np.random.default_rng(8).integers(1, 4, size=(2, 80)).astype(float)
    got = Scored(y, p).batch(["accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc",
                              "pr_auc", "brier"], w)
    pred = p.argmax(1)
    for b, sw in enumerate(w):
        assert got["accuracy"][b] == pytest.approx(skm.accuracy_score(y, pred, sample_weight=sw))
        bal = skm.balanced_accuracy_score(y, pred, sample_weight=sw)
        assert got["balanced_accuracy"][b] == pytest.approx(bal)
        for m, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
            assert got[m][b] == pytest.approx(fn(y, pred, average="macro", sample_weight=sw, zero_division=0))
        assert got["auc"][b] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", sample_weight=sw))
        ap = np.mean([skm.average_precision_score(y == c, p[:, c], sample_weight=sw) for c in range(4)])
        assert got["pr_auc"][b] == pytest.approx(ap)
        assert got["brier"][b] == pytest.approx(skm.brier_score_loss(y, p, sample_weight=sw))


def test_bootstrap_weights_are_stratified_and_seeded():
    y = np.array([0] * 7 + [1] * 3)
    chunks = list(bootstrap_weights(y, 50, np.random.default_rng(0)))
    w = np.concatenate(chunks)
    assert w.shape == (50, 10)
    assert (w[:, :7].sum(axis=1) == 7).all() and (w[:, 7:].sum(axis=1) == 3).all()
    again = np.concatenate(list(bootstrap_weights(y, 50, np.random.default_rng(0))))
    assert np.array_equal(w, again)
    plain = np.concatenate(list(bootstrap_weights(y, 200, np.random.default_rng(0), stratify=False)))
    assert (plain.sum(axis=1) == 10).all() and not (plain[:, 7:].sum(axis=1) == 3).all()


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    y, p = _problem(2, 120, seed=3, ties=False)
    a = bootstrap_ci(y, p, ["accuracy", "auc", "ece"], rng=np.random.default_rng(4), n_boot=400)
    b = bootstrap_ci(y, p, ["accuracy", "auc", "ece"], rng=np.random.default_rng(4), n_boot=400)
    assert a == b
    for ci in a.values():
        assert ci.low <= ci.estimate <= ci.high and ci.n_boot == 400
    assert a["auc"].estimate == pytest.approx(skm.roc_auc_score(y, p[:, 1]))


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_ci_coverage_tells_95_from_90_percent(method):
    # 1000 seeded data sets of 80 cases whose squared errors are uniform on [0.04, 0.36] (Brier
    # 0.2). The coverage of a 95% interval is estimated with sd ≈ 0.007, so a 90% interval
    # (coverage ≈ 0.90) or a 99% one would fall outside [0.925, 0.975] by 3 sd or more.
    rng = np.random.default_rng(1)
    y = np.arange(80) % 2
    covered = 0
    for _ in range(1000):
        err = np.sqrt(rng.uniform(0.04, 0.36, 80))
        p1 = np.where(y == 1, 1 - err, err)
        ci = bootstrap_ci(y, np.stack([1 - p1, p1], 1), ["brier"], rng=rng, n_boot=250,
                          method=method)["brier"]
        assert ci.method == f"{method} bootstrap"
        covered += ci.low <= 0.2 <= ci.high
    assert 0.925 <= covered / 1000 <= 0.975


def _skewed_problem() -> tuple[np.ndarray, np.ndarray]:
    """80 cases, mostly confident and right, 6 confidently wrong: skewed per-case errors."""
    rng = np.random.default_rng(5)
    y = np.arange(80) % 2
    p1 = np.where(y == 1, rng.uniform(0.75, 0.99, 80), rng.uniform(0.01, 0.25, 80))
    wrong = rng.choice(80, 6, replace=False)
    p1[wrong] = 1 - p1[wrong]
    return y, np.stack([1 - p1, p1], 1)


@pytest.mark.parametrize("metric", ["brier", "accuracy"])
def test_bca_equals_scipy_bca_on_the_same_resamples(metric):
    """Unstratified replicates from ``default_rng(0)`` are scipy's own resamples (checked), so
    the BCa bounds must agree to rounding; the percentile interval is far outside that."""
    y, p = _skewed_problem()
    per_case = Scored(y, p).batch([metric], np.eye(80))[metric]  # each case's own score
    kw = {"n_resamples": 5000, "rng": np.random.default_rng(0)}
    ref = sps.bootstrap((per_case,), np.mean, method="BCa", **kw)
    boot = np.concatenate([Scored(y, p).batch([metric], w)[metric] for w in
                           bootstrap_weights(y, 5000, np.random.default_rng(0), stratify=False)])
    assert np.allclose(np.sort(boot), np.sort(ref.bootstrap_distribution), rtol=0, atol=1e-12)

    def ci(method):
        return bootstrap_ci(y, p, [metric], rng=np.random.default_rng(0), n_boot=5000,
                            method=method, stratify=False)[metric]

    bca, pct = ci("bca"), ci("percentile")
    tol = 1e-9
    assert bca.method == "bca bootstrap"
    assert abs(bca.low - ref.confidence_interval.low) < tol
    assert abs(bca.high - ref.confidence_interval.high) < tol
    assert max(abs(bca.low - pct.low), abs(bca.high - pct.high)) > 1000 * tol  # ≥ 0.004 here
    if metric == "accuracy":  # many replicates tie with the estimate: scipy counts them half
        assert np.mean(boot == bca.estimate) > 0.05


def test_bca_falls_back_to_percentile_when_undefined():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.3, 0.7]])
    ci = bootstrap_ci(y, p, ["auc"], rng=np.random.default_rng(0), n_boot=100, method="bca")["auc"]
    assert ci.method == "percentile (BCa undefined) bootstrap" and ci.low == ci.high == 1.0


def test_paired_bootstrap_identical_arms_and_clear_difference():
    y, p = _problem(2, 200, seed=2, ties=False)
    same = paired_bootstrap(y, p, p, "accuracy", rng=np.random.default_rng(0), n_boot=300)
    assert (same.diff, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0)
    noise = np.random.default_rng(3).uniform(0.3, 0.7, 200)
    bad = np.stack([1 - noise, noise], 1)
    d = paired_bootstrap(y, p, bad, "auc", rng=np.random.default_rng(0), n_boot=500)
    assert d.diff > 0 and d.low > 0 and d.p < 0.01
    assert d.diff == pytest.approx(skm.roc_auc_score(y, p[:, 1]) - skm.roc_auc_score(y, noise))
    again = paired_bootstrap(y, p, bad, "auc", rng=np.random.default_rng(0), n_boot=500)
    assert again == d


@pytest.mark.parametrize(("metric", "seed", "noise"), [("accuracy", 2, 0.15), ("brier", 3, 0.1)])
def test_paired_bootstrap_intermediate_p_matches_scipy_resamples(metric, seed, noise):
    """A difference that is not significant: the CI and p-value recomputed from scipy's paired
    resamples (the same draws, unstratified) of each case's difference in score."""
    y, p = _skewed_problem()
    rng = np.random.default_rng(seed)
    other = np.clip(p[:, 1] + rng.normal(0, noise, 80), 0.01, 0.99)
    q = np.stack([1 - other, other], 1)
    d = paired_bootstrap(y, p, q, metric, rng=np.random.default_rng(0), n_boot=4000, stratify=False)
    per_case = Scored(y, p).batch([metric], np.eye(80))[metric] - Scored(y, q).batch(
        [metric], np.eye(80))[metric]
    ref = sps.bootstrap((per_case,), np.mean, n_resamples=4000, method="percentile",
                        rng=np.random.default_rng(0))
    reps = ref.bootstrap_distribution
    below = (1 + np.sum(reps <= 1e-12)) / 4001
    above = (1 + np.sum(reps >= -1e-12)) / 4001
    p_ref = min(1.0, 2 * min(below, above))
    assert 0.05 < d.p < 0.2  # intermediate: near, not at, the 5% line
    assert d.p == pytest.approx(p_ref, abs=1e-12)
    assert (d.low, d.high) == pytest.approx(tuple(ref.confidence_interval), abs=1e-12)
    assert d.diff == pytest.approx(per_case.mean(), abs=1e-12)
    assert d.low <= 0 <= d.high  # the CI agrees with p > 0.05


def test_bad_arguments_name_the_parameter():
    y, p = _problem(2, 20, seed=0)
    with pytest.raises(ConfigError, match="'metric'.*did you mean 'accuracy'"):
        bootstrap_ci(y, p, ["acuracy"], rng=np.random.default_rng(0), n_boot=10)
    with pytest.raises(ConfigError, match="'n_boot'"):
        bootstrap_ci(y, p, rng=np.random.default_rng(0), n_boot=0)
    with pytest.raises(ConfigError, match="'method'.*Allowed: percentile, bca"):
        bootstrap_ci(y, p, rng=np.random.default_rng(0), method="basic")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="shape"):
        paired_bootstrap(y, p, p[:10], "auc", rng=np.random.default_rng(0))

"""The Gamma-hypothesis prediction of Hoyer sparsity on the unit Lp sphere (methods/core/hoyer_gamma.py, our
reconstruction of arXiv 2103.16013's expectation): closed-form values, and eq. (2) against a Monte-Carlo estimate
from sampled Gamma-distributed feature vectors wherever its large-fan-in criterion holds."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparsebench.methods.core.hoyer_gamma import (expected_hoyer, limit_holds, monte_carlo, ratio_limit,
                                                  tail_weight)
from sparsebench.methods.core.metrics import hoyer_rows

FAN_INS = (25, 64, 144, 288, 512, 3136)          # the layers of the paper's draft Fig. 6 (MNIST conv net)
PS = (1.07, 1.1, 1.2, 1.3, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0)
TOLERANCE = 0.02                                 # eq. (2) vs the finite-d expectation where limit_holds


def test_closed_form_values():
    # p = 2, k = 1: |w| ~ Exp(1), E|w| = 1, E w^2 = 2, so r = 1/sqrt(2) and H -> 1 - 1/sqrt(2) = 0.2929 as d -> inf.
    assert ratio_limit(2.0) == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    assert expected_hoyer(2.0, 10**12) == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)
    # p = 3, k = 1: a = 1/2, r = Gamma(1.5) / sqrt(Gamma(2)) = sqrt(pi)/2.
    assert ratio_limit(3.0) == pytest.approx(math.sqrt(math.pi) / 2, rel=1e-12)
    # Exponential weights (p = 2, k = 1): c = E w^4 / (E w^2)^2 - 1 = 24 / 4 - 1 = 5.
    assert tail_weight(2.0) == pytest.approx(5.0, rel=1e-12)
    # Sparser as p -> 1+, denser as p grows, at every fan-in.
    for d in FAN_INS:
        values = [expected_hoyer(p, d) for p in PS]
        assert all(a > b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="p must be > 1"):
        expected_hoyer(1.0, 25)
    with pytest.raises(ValueError, match="fan-in d must be >= 2"):
        expected_hoyer(2.0, 1)


def test_monte_carlo_uses_the_projects_hoyer_measure():
    # The sampled rows' Hoyer equals methods/core/metrics.py hoyer_rows on the same rows (same seed, same draw).
    p, d, k, rows = 1.5, 64, 1.0, 300
    rng = np.random.default_rng(7)
    w = rng.gamma(k, 1.0, size=(rows, d)) ** (1 / (p - 1))
    mean, se = monte_carlo(p, d, k, rows=rows, seed=7)
    assert mean == pytest.approx(float(hoyer_rows(torch.from_numpy(w)).mean()), abs=1e-9) and 0 < se < 0.01


@pytest.mark.parametrize("k", [0.5, 1.0, 2.0])
def test_prediction_matches_monte_carlo_where_the_limit_holds(k):
    checked = 0
    for p in PS:
        for d in FAN_INS:
            mean, se = monte_carlo(p, d, k, rows=max(100, 200_000 // d))
            pred = expected_hoyer(p, d, k)
            if limit_holds(p, d, k):
                assert abs(pred - mean) <= TOLERANCE, (p, d, k, pred, mean)
                checked += 1
            else:   # near p = 1 the largest entries dominate: the limit overestimates the finite-d value
                assert pred > mean - 3 * se, (p, d, k, pred, mean)
    assert checked >= 25    # 91 of the 180 points over the three shapes


def test_plot_script_writes_the_predictions_for_the_six_fan_ins(tmp_path):
    import importlib.util
    import csv
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "plot_hoyer_gamma.py"
    spec = importlib.util.spec_from_file_location("plot_hoyer_gamma", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "hg"
    assert script.main(["--out", str(out), "--p", "1.5", "3", "--no-train"]) == 0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert [int(r["fan_in"]) for r in rows] == [25, 144, 288, 3136, 512, 64] * 2
    for r in rows:
        assert float(r["eq2_k1"]) == pytest.approx(expected_hoyer(float(r["p"]), int(r["fan_in"])), abs=1e-4)
        assert r["hoyer"] == ""                       # nothing trained with --no-train
    assert script.main(["--out", str(out), "--p", "1.0", "--no-train"]) == 2

"""The racing rule: a paired upper bound on the full-set quality difference."""

from __future__ import annotations

import math

import pytest

from evaluators.racing import Race


def test_upper_bound_is_the_paired_mean_plus_z_scaled_standard_error():
    race = Race("psnr", True, (30.0, 31.0, 29.0, 30.0), z=2.0)
    d = [-1.0, -2.0]                                    # candidate 29, 29 vs 30, 31
    mean, sd = -1.5, math.sqrt(0.5)
    assert race.upper_bound([29.0, 29.0]) == pytest.approx(mean + 2.0 * (4 - 2) / 4 * sd / math.sqrt(2))
    assert race.lost([29.0, 29.0]) == (mean + 2.0 * 0.5 * sd / math.sqrt(2) < 0)
    assert d


def test_minimised_metrics_flip_the_sign_and_ties_or_full_sets_never_stop():
    race = Race("latent_mse", False, (0.1, 0.1, 0.1, 0.1))
    assert race.lost([0.5, 0.6]) and not race.lost([0.05, 0.06])
    tie = Race("psnr", True, (30.0, 30.0, 30.0))
    assert not tie.lost([30.0, 30.0])
    assert not tie.lost([1.0, 1.0, 1.0]), "every pair scored: the result is full, not raced"
    assert not tie.lost([1.0]), "one pair says nothing about the spread"

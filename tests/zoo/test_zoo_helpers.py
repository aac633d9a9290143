"""Small helpers of the zoo: shifts, batch streams and noise seeds, against numpy by hand."""

from __future__ import annotations

import numpy as np

from segqc.zoo.predict import InputVariant, _noise_seed
from segqc.zoo.train import _batch_indices, _shift


def test_shift_equals_numpy_roll_with_the_vacated_rows_and_columns_filled():
    array = np.arange(20, dtype=float).reshape(1, 4, 5)
    for dy, dx in ((1, 0), (-1, 0), (0, 2), (0, -2), (-1, 3)):
        expected = np.roll(array, (dy, dx), axis=(-2, -1))
        if dy > 0:
            expected[..., :dy, :] = -1
        elif dy < 0:
            expected[..., dy:, :] = -1
        if dx > 0:
            expected[..., :, :dx] = -1
        elif dx < 0:
            expected[..., :, dx:] = -1
        np.testing.assert_array_equal(_shift(array, dy, dx, -1.0), expected)


def test_batches_are_consecutive_seeded_permutations_each_pass_its_own():
    n, seed = 6, 3
    batches = np.concatenate(_batch_indices(1, 4, 3, n, seed))  # 12 positions: two passes
    first = np.random.default_rng([seed, 11, 0]).permutation(n)
    second = np.random.default_rng([seed, 11, 1]).permutation(n)
    np.testing.assert_array_equal(batches, np.concatenate([first, second]))
    assert not np.array_equal(first, second)


def test_every_noise_level_of_a_case_gets_its_own_noise():
    a = _noise_seed(0, "case1", InputVariant("noise", 0.1))
    assert a != _noise_seed(0, "case1", InputVariant("noise", 0.2))
    assert a != _noise_seed(0, "case2", InputVariant("noise", 0.1))
    assert a == _noise_seed(0, "case1", InputVariant("noise", 0.1))

"""Glorot initialisation: any slice of rows, drawn without the rows before it, equals the
sequential draws of one generator (users first, then items), as WALS on torch and on Spark
both need."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.core.glorot import glorot, glorot_rows


def sequential(seed: int, n_users: int, n_items: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = rng.uniform(-1, 1, size=(n_users, dim)) * math.sqrt(6 / (n_users + dim))
    items = rng.uniform(-1, 1, size=(n_items, dim)) * math.sqrt(6 / (n_items + dim))
    return users.astype(np.float32), items.astype(np.float32)


def test_whole_sides_are_one_generator_s_draws():
    users, items = sequential(11, 30, 40, 4)
    np.testing.assert_allclose(glorot(11, 30, 4), users, rtol=1e-6)
    np.testing.assert_allclose(glorot(11, 40, 4, skip=30 * 4), items, rtol=1e-6)


@pytest.mark.parametrize(("start", "stop", "skip"), [(0, 7, 0), (13, 29, 0), (0, 5, 30 * 4)])
def test_rows_are_the_whole_draw_s_rows_bit_for_bit(start, stop, skip):
    n_rows = 30 if skip == 0 else 40
    whole = glorot(11, n_rows, 4, skip)
    np.testing.assert_array_equal(glorot_rows(11, n_rows, 4, start, stop, skip), whole[start:stop])

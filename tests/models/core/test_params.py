"""One definition of the WALS parameters: every holder takes its defaults and its checks
from ``WALSParams``, and a bad value names its field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.core.params import InvalidParam, WALSParams
from models.core.solve import observed_sums, solve_rows


def test_every_holder_has_the_one_set_of_defaults():
    from export.format import Manifest
    from models.config import WALSConfig
    from models.wals import WALS

    assert WALSConfig().as_params() == WALSParams()
    assert WALS().params == WALSParams()
    assert Manifest.model_fields["wals"].annotation in (WALSParams, "WALSParams")
    names = {f.name for f in dataclasses.fields(WALSParams)}
    config_only = {f.name for f in dataclasses.fields(WALSConfig)} - names
    assert config_only == {
        "device",
        "num_threads",
        "calculate_training_loss",
        "early_stopping_patience",
        "engine",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dim", 0),
        ("dim", 5000),
        ("regularization", -0.1),
        ("unobserved_weight", -1.0),
        ("iterations", -1),
        ("weight_scale", 0.0),
        ("cg_steps", 0),
        ("solver", "lu"),
        ("row_weights", "log"),
        ("col_weights", "log"),
    ],
)
def test_a_bad_value_names_its_field(field, value):
    with pytest.raises(InvalidParam, match=field) as info:
        WALSParams(**{field: value})
    assert info.value.field == field


def test_the_config_reports_a_bad_value_by_its_dotted_field(tmp_path):
    from models.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text('[data]\ninteractions = "x.csv"\n[wals]\ncg_steps = 0\n')
    with pytest.raises(ConfigError, match=r"wals\.cg_steps: cg_steps must be >= 1, got 0"):
        load_config(path)


def test_the_manifest_writes_the_parameters_as_before():
    """Format 3's manifests carry ``wals`` as a flat object of these twelve keys: typing the
    field changed nothing on disk, and old manifests still read."""
    from pydantic import TypeAdapter

    params = WALSParams(dim=8, regularization=0.2, row_weights="power", solver="cholesky")
    on_disk = TypeAdapter(WALSParams).dump_python(params, mode="json")
    assert on_disk == {
        "dim": 8,
        "regularization": 0.2,
        "unobserved_weight": 0.1,
        "iterations": 10,
        "seed": 0,
        "regularization_exp": 0.0,
        "row_weights": "power",
        "col_weights": "uniform",
        "weight_scale": 1.0,
        "weight_exponent": 0.08,
        "solver": "cholesky",
        "cg_steps": 3,
    }
    assert TypeAdapter(WALSParams).validate_python(on_disk) == params
    assert WALSParams.from_mapping({**on_disk, "unknown": 1}) == params


def test_the_row_solver_equals_the_dense_normal_equations():
    """Each row: (w0 G + lambda_i I + sum_j (W_ij - w0) v_j v_j^T) x = sum_j W_ij A_ij v_j."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(9, 3))
    indptr = np.array([0, 4, 4, 9])  # the middle row has no entries
    cols = rng.integers(0, 9, size=9)
    weight, target = rng.uniform(0.5, 2, size=9), rng.uniform(0, 1, size=9)
    w0, lam = 0.3, np.array([0.1, 0.2, 0.3])
    gram = v.T @ v
    x = solve_rows(observed_sums(v[cols], indptr, weight - w0, weight * target), w0 * gram, lam)
    for row in range(3):
        a, b = indptr[row], indptr[row + 1]
        vr = v[cols[a:b]]
        lhs = w0 * gram + lam[row] * np.eye(3) + (vr * (weight[a:b] - w0)[:, None]).T @ vr
        want = np.linalg.solve(lhs, vr.T @ (weight[a:b] * target[a:b]))
        np.testing.assert_allclose(x[row], want, rtol=1e-5, atol=1e-6)

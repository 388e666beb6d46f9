"""WALS against dense brute force on tiny data: the objective, each half-step, fold-in."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from models.core.glorot import glorot
from models.wals import WALS, weights_from_counts


def dense_loss(a, w, u, v, lam_u, lam_v):
    """The TF WALS objective evaluated on the full dense matrix."""
    pred = u @ v.T
    return float(
        (w * (a - pred) ** 2).sum() + (lam_u * (u**2).sum(1)).sum() + (lam_v * (v**2).sum(1)).sum()
    )


def dense_weights(model: WALS, matrix: sp.csr_matrix, weights=None) -> np.ndarray:
    w = np.full(matrix.shape, model.params.unobserved_weight)
    if weights is not None:
        w[weights.nonzero()] = weights.toarray()[weights.nonzero()]
        return w
    rows, cols = matrix.nonzero()
    r = weights_from_counts(
        np.diff(matrix.indptr),
        model.params.row_weights,
        model.params.weight_scale,
        model.params.weight_exponent,
    )
    c = weights_from_counts(
        np.bincount(matrix.indices, minlength=matrix.shape[1]),
        model.params.col_weights,
        model.params.weight_scale,
        model.params.weight_exponent,
    )
    w[rows, cols] = model.params.unobserved_weight + r[rows] * c[cols]
    return w


def closed_form_rows(a, w, fixed, lam):
    """argmin over every row x_i of sum_j w_ij (a_ij - x_i.f_j)^2 + lam_i |x_i|^2, densely."""
    out = np.zeros((a.shape[0], fixed.shape[1]))
    for i in range(a.shape[0]):
        lhs = fixed.T @ (w[i][:, None] * fixed) + lam[i] * np.eye(fixed.shape[1])
        out[i] = np.linalg.solve(lhs, fixed.T @ (w[i] * a[i]))
    return out


@pytest.mark.parametrize("col_weights", ["uniform", "linear", "power"])
@pytest.mark.parametrize("regularization_exp", [0.0, 1.0])
def test_loss_equals_dense_objective(tiny_matrix, col_weights, regularization_exp):
    model = WALS(
        dim=4,
        regularization=0.05,
        unobserved_weight=0.3,
        iterations=3,
        solver="cholesky",
        col_weights=col_weights,
        regularization_exp=regularization_exp,
        device="cpu",
    ).fit(tiny_matrix)
    w = dense_weights(model, tiny_matrix)
    n_u, n_i = tiny_matrix.shape
    lam_u = (
        model.params.regularization
        * (np.diff(tiny_matrix.indptr) + model.params.unobserved_weight * n_i) ** regularization_exp
    )
    counts = np.bincount(tiny_matrix.indices, minlength=n_i)
    lam_v = (
        model.params.regularization
        * (counts + model.params.unobserved_weight * n_u) ** regularization_exp
    )
    expected = dense_loss(
        tiny_matrix.toarray(),
        w,
        model.user_factors.astype(np.float64),
        model.item_factors.astype(np.float64),
        lam_u,
        lam_v,
    )
    assert model.history.loss[-1] == pytest.approx(expected, rel=1e-5)


def test_explicit_weights_enter_the_objective(tiny_matrix):
    rng = np.random.default_rng(0)
    weights = tiny_matrix.copy()
    weights.data = rng.uniform(0.5, 3.0, size=weights.nnz)
    model = WALS(dim=3, regularization=0.1, iterations=2, solver="cholesky", device="cpu").fit(
        tiny_matrix, weights
    )
    w = dense_weights(model, tiny_matrix, weights)
    lam = np.full(30, 0.1)
    expected = dense_loss(
        tiny_matrix.toarray(), w, model.user_factors, model.item_factors, lam, np.full(20, 0.1)
    )
    assert model.history.loss[-1] == pytest.approx(expected, rel=1e-5)
    # and they matter: uniform weights give another solution
    plain = WALS(dim=3, regularization=0.1, iterations=2, solver="cholesky", device="cpu").fit(
        tiny_matrix
    )
    assert not np.allclose(plain.user_factors, model.user_factors, atol=1e-3)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_each_half_step_is_the_dense_closed_form(tiny_matrix, solver):
    """After fit, users were solved last: they must equal the exact solution given V.
    With one iteration, V equals the exact solution given the initial U."""
    dim = 4
    # cg with dim steps is exact in exact arithmetic (CG converges in at most dim steps)
    model = WALS(
        dim=dim,
        regularization=0.2,
        unobserved_weight=0.2,
        iterations=1,
        solver=solver,
        cg_steps=dim * 3,
        device="cpu",
        seed=3,
    )
    model.fit(tiny_matrix)
    a = tiny_matrix.toarray()
    w = dense_weights(model, tiny_matrix)
    u0 = glorot(3, 30, dim).astype(np.float64)
    v1 = closed_form_rows(a.T, w.T, u0, np.full(20, 0.2))
    np.testing.assert_allclose(model.item_factors, v1, atol=2e-4)
    u1 = closed_form_rows(a, w, model.item_factors.astype(np.float64), np.full(30, 0.2))
    np.testing.assert_allclose(model.user_factors, u1, atol=2e-4)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_loss_never_increases(tiny_matrix, solver):
    model = WALS(
        dim=5,
        regularization=0.01,
        iterations=12,
        solver=solver,
        device="cpu",
        calculate_training_loss=True,
    ).fit(tiny_matrix)
    loss = np.array(model.history.loss)
    assert len(loss) == 12
    assert np.all(np.diff(loss) <= 1e-6 * loss[:-1])
    assert loss[-1] < loss[0]


def test_fold_in_reproduces_training_row(tiny_matrix):
    model = WALS(dim=4, regularization=0.1, iterations=5, solver="cholesky", device="cpu").fit(
        tiny_matrix
    )
    for user in (0, 7, 19):
        items = tiny_matrix[user].indices
        np.testing.assert_allclose(model.fold_in(items), model.user_factors[user], atol=1e-5)
    batch = model.fold_in_batch(tiny_matrix)
    np.testing.assert_allclose(batch, model.user_factors, atol=1e-5)


def test_fold_in_with_column_weights_reproduces_row(tiny_matrix):
    model = WALS(
        dim=4,
        regularization=0.1,
        iterations=4,
        solver="cholesky",
        col_weights="linear",
        weight_scale=5.0,
        device="cpu",
    ).fit(tiny_matrix)
    np.testing.assert_allclose(
        model.fold_in(tiny_matrix[4].indices), model.user_factors[4], atol=1e-5
    )


def test_fold_in_rejects_bad_indices(tiny_matrix):
    model = WALS(dim=2, iterations=1, device="cpu").fit(tiny_matrix)
    with pytest.raises(ValueError, match="item indices"):
        model.fold_in([0, 99])
    assert np.all(model.fold_in([]) == 0)


def test_recommend_excludes_and_sorts(tiny_matrix):
    model = WALS(dim=4, iterations=3, device="cpu").fit(tiny_matrix)
    user = model.user_factors[0]
    top, scores = model.recommend(user, k=5, exclude=np.array([0, 1]))
    exact = np.argsort(-(model.item_factors @ user))
    exact = [i for i in exact if i not in (0, 1)][:5]
    assert list(top) == exact
    assert np.all(np.diff(scores) <= 0)


def test_early_stopping_stops_after_patience_and_keeps_the_best(tiny_matrix):
    from models.data.splits import holdout_split

    split = holdout_split(tiny_matrix, 0.3, seed=0)
    seen: list[float] = []
    model = WALS(dim=4, iterations=40, regularization=0.01, device="cpu")
    model.fit(
        split.train,
        validation=split.test,
        validation_k=5,
        early_stopping_patience=2,
        callback=lambda _it, _loss, recall: seen.append(recall),
    )
    hist = model.history
    assert hist.best_iteration is not None
    # it stopped exactly `patience` iterations after the best one, well before 40
    assert len(hist.validation_recall) == hist.best_iteration + 1 + 2 < 40
    assert seen == hist.validation_recall
    best = max(hist.validation_recall)
    assert hist.validation_recall[hist.best_iteration] == best
    assert all(r <= best for r in hist.validation_recall[hist.best_iteration + 1 :])
    # and the factors kept are the best iteration's, not the last's
    assert model.validation_recall(split.train, split.test, 5) == pytest.approx(best)


@pytest.mark.parametrize("row_weights", ["uniform", "linear"])
def test_fold_in_reproduces_the_default_cg_fit_when_cg_has_converged(tiny_matrix, row_weights):
    """The default solver is CG with 3 steps; fold-in solves exactly. With enough CG steps
    the fitted user rows are exact solutions too, and fold-in reproduces them."""
    kwargs = dict(
        dim=4,
        regularization=0.1,
        iterations=5,
        row_weights=row_weights,
        weight_scale=3.0,
        device="cpu",
        seed=1,
    )
    converged = WALS(cg_steps=24, **kwargs).fit(tiny_matrix)
    assert converged.params.solver == "cg"
    for user in (0, 7, 19):
        items = tiny_matrix[user].indices
        # fold_in takes the row weight the fit used for this user
        count = len(items)
        r = {"uniform": 3.0, "linear": 3.0 / count}[row_weights]
        weights = converged.params.unobserved_weight + r * converged.col_weight_values[items]
        np.testing.assert_allclose(
            converged.fold_in(items, weights), converged.user_factors[user], atol=1e-4
        )
    starved = WALS(cg_steps=1, **kwargs).fit(tiny_matrix)
    items = tiny_matrix[7].indices
    r = {"uniform": 3.0, "linear": 3.0 / len(items)}[row_weights]
    weights = starved.params.unobserved_weight + r * starved.col_weight_values[items]
    assert np.abs(starved.fold_in(items, weights) - starved.user_factors[7]).max() > 1e-3


def test_save_load_roundtrip_without_pickle(tiny_matrix, tmp_path):
    model = WALS(dim=3, iterations=2, device="cpu").fit(tiny_matrix)
    model.save(tmp_path)
    assert json.loads((tmp_path / "wals.json").read_text())["params"]["dim"] == 3
    loaded = WALS.load(tmp_path, mmap=True)
    np.testing.assert_array_equal(loaded.user_factors, model.user_factors)
    np.testing.assert_allclose(loaded.fold_in([1, 2]), model.fold_in([1, 2]))
    for f in tmp_path.iterdir():
        if f.suffix == ".npy":
            np.load(f, allow_pickle=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"dim": 0}, "dim"), ({"solver": "lu"}, "solver"), ({"regularization": -1}, "regularization")],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WALS(**kwargs)


def test_fit_rejects_dense_and_nan(tiny_matrix):
    with pytest.raises(TypeError, match=r"scipy\.sparse"):
        WALS(dim=2).fit(tiny_matrix.toarray())
    bad = tiny_matrix.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        WALS(dim=2).fit(bad)
    with pytest.raises(ValueError, match="same pattern"):
        WALS(dim=2).fit(tiny_matrix, tiny_matrix[:, ::-1])


def test_seeded_fit_is_deterministic(tiny_matrix):
    a = WALS(dim=4, iterations=3, seed=5, device="cpu").fit(tiny_matrix)
    b = WALS(dim=4, iterations=3, seed=5, device="cpu").fit(tiny_matrix)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)


@pytest.mark.parametrize("shape", [(30, 20), (20, 30)])
def test_blocked_products_match_unblocked(shape):
    """Cache blocking and the cross-layout permutation must not change the result."""
    m = sp.random(*shape, density=0.3, random_state=4, format="csr")
    m.data[:] = 1.0
    kw = dict(
        dim=4,
        regularization=0.1,
        iterations=3,
        cg_steps=12,
        device="cpu",
        calculate_training_loss=True,
    )
    blocked = WALS(block_bytes=4 * 4 * 3, **kw).fit(m)  # 3 columns per block
    plain = WALS(**kw).fit(m)
    exact = WALS(solver="cholesky", **kw).fit(m)
    np.testing.assert_allclose(blocked.user_factors, plain.user_factors, atol=1e-5)
    np.testing.assert_allclose(blocked.user_factors, exact.user_factors, atol=1e-4)
    np.testing.assert_allclose(blocked.history.loss, exact.history.loss, rtol=1e-5)


def test_objective_maps_exactly_onto_implicit(tiny_matrix):
    """bench/wals_vs_implicit.py's mapping: implicit's own reference solver, given
    C = alpha * 1 with alpha = 1 + 1/w0 and reg = lambda/w0, solves the same rows as WALS."""
    from implicit.cpu.als import least_squares

    from bench.wals_vs_implicit import implicit_params

    w0, lam = 0.3, 0.05
    model = WALS(
        dim=4,
        regularization=lam,
        unobserved_weight=w0,
        iterations=2,
        solver="cholesky",
        device="cpu",
    )
    model.fit(tiny_matrix)
    mapped = implicit_params(lam, w0)
    cui = (tiny_matrix * mapped["alpha"]).tocsr().astype(np.float64)
    users = np.zeros_like(model.user_factors, dtype=np.float64)
    least_squares(cui, users, model.item_factors.astype(np.float64), mapped["regularization"])
    np.testing.assert_allclose(users, model.user_factors, atol=1e-4)


def test_movielens_wals_beats_popularity(movielens_dir):
    from models.data import build_dataset
    from models.data.movielens import load_movielens
    from models.data.splits import holdout_split
    from models.metrics import evaluate_scores, ranking_metrics

    interactions, catalog, _ = load_movielens(movielens_dir)
    matrix = build_dataset(interactions[interactions["rating"] >= 4.0], catalog).matrix
    split = holdout_split(matrix, 0.2, seed=0)
    model = WALS(
        dim=32, regularization=0.01, unobserved_weight=0.1, iterations=8, device="cpu"
    ).fit(split.train)
    wals = ranking_metrics(model.user_factors, model.item_factors, split.train, split.test, (20,))
    pop = np.bincount(split.train.indices, minlength=matrix.shape[1]).astype(np.float32)
    popular = evaluate_scores(
        lambda rows: np.broadcast_to(pop, (len(rows), len(pop))), split.train, split.test, (20,)
    )
    assert wals["recall@20"] > popular["recall@20"] + 0.03


def test_fold_in_batch_reads_weights_as_fit_does(tiny_matrix):
    """Evaluation folded held-out users in with the stored values as targets while fit used
    them as weights; both now take (targets, weights)."""
    rng = np.random.default_rng(3)
    weights = tiny_matrix.copy()
    weights.data = 1.0 + 3.0 * rng.random(weights.nnz)
    model = WALS(dim=4, iterations=6, solver="cholesky", regularization=0.1, seed=0)
    model.fit(tiny_matrix, weights)
    folded = model.fold_in_batch(tiny_matrix, weights)
    np.testing.assert_allclose(folded, model.user_factors, atol=1e-4)
    as_targets = model.fold_in_batch(weights)  # the old call
    assert np.abs(as_targets - model.user_factors).max() > 1e-2


def test_without_training_loss_only_the_final_loss_is_computed(tiny_matrix):
    seen: list[float] = []
    quiet = WALS(dim=3, iterations=4, device="cpu").fit(
        tiny_matrix, callback=lambda it, loss, recall: seen.append(loss)
    )
    loud = WALS(dim=3, iterations=4, device="cpu", calculate_training_loss=True).fit(tiny_matrix)
    assert np.isnan(seen).all() and len(seen) == 4
    assert quiet.history.loss == [pytest.approx(loud.history.loss[-1], rel=1e-6)]
    np.testing.assert_array_equal(quiet.user_factors, loud.user_factors)


def test_a_warm_start_begins_where_a_fitted_model_ended(tiny_matrix):
    """One iteration from a converged model's user factors lands at its loss; one from a
    random start does not. NaN rows (new users) start at random; a wrong shape is refused."""
    fitted = WALS(dim=4, iterations=30, regularization=0.1, calculate_training_loss=True)
    fitted.fit(tiny_matrix)
    warm = WALS(dim=4, iterations=1, regularization=0.1, calculate_training_loss=True)
    warm.fit(tiny_matrix, initial_user_factors=fitted.user_factors)
    cold = WALS(dim=4, iterations=1, regularization=0.1, calculate_training_loss=True)
    cold.fit(tiny_matrix)
    assert warm.history.loss[-1] == pytest.approx(fitted.history.loss[-1], rel=1e-3)
    assert cold.history.loss[-1] > 1.01 * fitted.history.loss[-1]
    partial = fitted.user_factors.copy()
    partial[0] = np.nan
    started = WALS(dim=4, iterations=1).fit(tiny_matrix, initial_user_factors=partial)
    assert np.isfinite(started.user_factors).all()
    with pytest.raises(ValueError, match="initial factors"):
        WALS(dim=4, iterations=1).fit(tiny_matrix, initial_user_factors=partial[:, :2])

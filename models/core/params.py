"""The WALS hyper-parameters: one definition, with their defaults and their checks.

``models.config`` (the ``[wals]`` section), ``models.wals.WALS``, the Spark job and the
bundle's manifest all hold this one type, so a default or a rule cannot differ between them.
Standard library only: the Spark job and the service import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from models.core.errors import WalrusError

WeightScheme = Literal["uniform", "linear", "power"]
Solver = Literal["cg", "cholesky"]
MAX_DIM = 4096


class InvalidParam(WalrusError, ValueError):
    """A value out of its range; ``field`` names the parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class WALSParams:
    """What WALS fits with. ``W_ij = w0 + r_i c_j`` on observed entries, ``w0`` elsewhere.

    dim: latent dimension. regularization: lambda, the L2 strength on both sides.
    unobserved_weight: w0. iterations: sweeps (items, then users). seed: of the Glorot
    initialisation. regularization_exp: 0 is TF's constant lambda; > 0 scales lambda per row
    by ``(n_observed + w0 n_cols) ** exp`` (iALS, Rendle et al. 2021). row_weights,
    col_weights, weight_scale, weight_exponent: ``r_i`` and ``c_j`` from counts
    (``models.core.fold_in.weights_from_counts``). solver: ``cg`` (``cg_steps`` batched
    conjugate-gradient steps per half-step) or ``cholesky`` (exact per-row solves).
    """

    dim: int = 64
    regularization: float = 0.001
    unobserved_weight: float = 0.1
    iterations: int = 10
    seed: int = 0
    regularization_exp: float = 0.0
    row_weights: WeightScheme = "uniform"
    col_weights: WeightScheme = "uniform"
    weight_scale: float = 1.0
    weight_exponent: float = 0.08
    solver: Solver = "cg"
    cg_steps: int = 3

    def __post_init__(self) -> None:
        schemes = get_args(WeightScheme)
        checks = [
            ("dim", 1 <= self.dim <= MAX_DIM, f"must be in 1..{MAX_DIM}"),
            ("regularization", self.regularization >= 0, "must be >= 0"),
            ("unobserved_weight", self.unobserved_weight >= 0, "must be >= 0"),
            ("iterations", self.iterations >= 0, "must be >= 0"),
            ("regularization_exp", self.regularization_exp >= 0, "must be >= 0"),
            ("weight_scale", self.weight_scale > 0, "must be > 0"),
            ("weight_exponent", self.weight_exponent >= 0, "must be >= 0"),
            ("cg_steps", self.cg_steps >= 1, "must be >= 1"),
            ("solver", self.solver in get_args(Solver), "must be 'cg' or 'cholesky'"),
            ("row_weights", self.row_weights in schemes, "must be uniform, linear or power"),
            ("col_weights", self.col_weights in schemes, "must be uniform, linear or power"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise InvalidParam(name, f"{name} {rule}, got {getattr(self, name)!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> WALSParams:
        """From a mapping holding these fields and maybe others (a config section, a saved
        model's metadata): the others are ignored."""
        names = {f.name for f in dataclasses.fields(WALSParams)}
        return cls(**{k: v for k, v in values.items() if k in names})  # type: ignore[arg-type]

    def as_params(self) -> WALSParams:
        """Just the parameters (a config section carries more)."""
        return WALSParams.from_mapping(dataclasses.asdict(self))

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self.as_params())

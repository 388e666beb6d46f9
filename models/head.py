"""The hybrid score head: Dense(hidden, relu) then Dense(1) over ``models.core.features``.

Trained listwise on the candidate pools the service builds (``RankingPools``): softmax
cross-entropy of each request's positives against its whole pool (default), or a pairwise BPR
loss over (positive, pool negative) pairs; Adam, early stopping on a validation share of the
requests. Weights are saved as a plain ``.npz`` (no pickle); ``ScoreHead.score`` is a numpy
forward pass, so offline scoring needs no torch and matches the ONNX export (checked at
export).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from models.metrics import evaluate_scores

log = logging.getLogger(__name__)


@dataclass
class RankingPools:
    """Requests' candidate pools, padded to the largest: what the head learns to order.

    features: (n_requests, pool, n_features) float32; mask: (n_requests, pool) bool, the
    real candidates; labels: (n_requests, pool) bool, the request's held-out positives.
    """

    features: np.ndarray
    mask: np.ndarray
    labels: np.ndarray

    @classmethod
    def stack(cls, pools: Sequence[tuple[np.ndarray, np.ndarray]], n_features: int) -> RankingPools:
        """From per-request ``(features (n, F), labels (n,))``."""
        size = max((len(f) for f, _ in pools), default=0)
        features = np.zeros((len(pools), size, n_features), dtype=np.float32)
        mask = np.zeros((len(pools), size), dtype=bool)
        labels = np.zeros((len(pools), size), dtype=bool)
        for row, (f, y) in enumerate(pools):
            features[row, : len(f)] = f
            mask[row, : len(f)] = True
            labels[row, : len(f)] = y
        return cls(features, mask, labels)

    @classmethod
    def concat(cls, parts: Sequence[RankingPools]) -> RankingPools:
        """One set of pools from several, padded to the largest pool."""
        size = max(p.features.shape[1] for p in parts)

        def pad(a: np.ndarray) -> np.ndarray:
            widths = [(0, 0), (0, size - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
            return np.pad(a, widths)

        return cls(
            np.concatenate([pad(p.features) for p in parts]),
            np.concatenate([pad(p.mask) for p in parts]),
            np.concatenate([pad(p.labels) for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.features)

    def take(self, rows: np.ndarray) -> RankingPools:
        return RankingPools(self.features[rows], self.mask[rows], self.labels[rows])


def pool_ndcg(scores: np.ndarray, pools: RankingPools, k: int = 20) -> float:
    """Mean NDCG@k of the pools ranked by ``scores`` (n_requests, pool): the evaluation's
    own ``evaluate_scores``, with each pool a row and its padding excluded like seen items."""
    padding, positives = sp.csr_matrix(~pools.mask), sp.csr_matrix(pools.labels)
    return evaluate_scores(lambda rows: scores[rows], padding, positives, (k,))[f"ndcg@{k}"]


class ScoreHead:
    PARAMS = (
        "hidden",
        "loss",
        "epochs",
        "batch_size",
        "learning_rate",
        "weight_decay",
        "patience",
        "validation_share",
        "seed",
    )
    """The constructor's parameters: what ``save`` records and ``from_config`` takes."""

    """Dense(hidden, relu) -> Dense(1).

    Args:
        hidden: width of the hidden layer (the seed's 128).
        loss: ``softmax`` (listwise: cross-entropy of the positives against their pool) or
            ``bpr`` (pairwise: each positive against each negative of its pool).
        epochs, batch_size, learning_rate: Adam training schedule.
        patience: epochs without a lower validation loss before stopping.
        validation_share: share of requests held out for early stopping.
        seed: seeds initialisation, shuffling and the validation draw.
    """

    def __init__(
        self,
        hidden: int = 128,
        loss: Literal["softmax", "bpr"] = "softmax",
        epochs: int = 30,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-5,
        patience: int = 3,
        validation_share: float = 0.1,
        seed: int = 0,
    ) -> None:
        if loss not in ("softmax", "bpr"):
            raise ValueError(f"loss must be 'softmax' or 'bpr', got {loss!r}")
        self.hidden = hidden
        self.loss = loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.patience = patience
        self.validation_share = validation_share
        self.seed = seed
        self.weights: dict[str, np.ndarray] = {}
        self.history: dict[str, list[float]] = {"train_loss": [], "validation_loss": []}
        self.importances: dict[str, float] = {}  # feature -> NDCG@20 drop when shuffled

    @classmethod
    def from_config(cls, config: Any) -> ScoreHead:
        """A head with the parameters of a ``HeadConfig`` (which has more fields: those for
        making the examples)."""
        return cls(**{k: getattr(config, k) for k in cls.PARAMS})

    @property
    def n_features(self) -> int:
        return int(self.weights["w1"].shape[0])

    def fit(
        self,
        pools: RankingPools,
        callback: Callable[[int, float, float], None] | None = None,
        feature_names: Sequence[str] = (),
    ) -> ScoreHead:
        """Train on requests' pools (each with at least one positive). Keeps the weights of
        the best validation epoch; with ``feature_names``, also measures their permutation
        importances on the validation requests (``importances``)."""
        if len(pools) < 2 or pools.features.shape[1] < 2:
            raise ValueError(
                f"the head needs >= 2 pools of >= 2 candidates, got {pools.features.shape}"
            )
        if not pools.labels.any(1).all():
            raise ValueError("every pool needs at least one positive")
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(pools))
        n_val = max(1, round(self.validation_share * len(pools)))
        val_pools = pools.take(order[:n_val])
        train_pools = pools.take(order[n_val:])
        # Inputs standardised for training (scores, ranks and log counts differ in scale),
        # folded back into the first layer afterwards: the saved head takes raw features.
        real = train_pools.features[train_pools.mask]
        mean, sd = real.mean(0), real.std(0)
        sd = np.where(sd > 1e-6, sd, 1.0).astype(np.float32)
        val = self._tensors(val_pools, mean, sd)
        train = self._tensors(train_pools, mean, sd)
        net = torch.nn.Sequential(
            torch.nn.Linear(pools.features.shape[2], self.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(self.hidden, 1),
        )
        best_state = self._train(net, train, val, rng, callback)
        w1 = best_state["0.weight"].T.numpy().astype(np.float64) / sd[:, None]
        self.weights = {
            "w1": w1.astype(np.float32),
            "b1": (best_state["0.bias"].numpy() - mean @ w1).astype(np.float32),
            "w2": best_state["2.weight"].T.numpy()[:, 0].astype(np.float32),
            "b2": best_state["2.bias"].numpy().astype(np.float32),
        }
        if feature_names:
            self.importances = self.permutation_importance(val_pools, feature_names)
        return self

    def _train(
        self,
        net: torch.nn.Sequential,
        train: tuple[Any, Any, Any],
        val: tuple[Any, Any, Any],
        rng: np.random.Generator,
        callback: Callable[[int, float, float], None] | None,
    ) -> dict[str, torch.Tensor]:
        """Epochs until the validation loss stops improving; the best epoch's weights."""
        opt = torch.optim.Adam(
            net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        best, best_state, since = float("inf"), {}, 0
        self.history = {"train_loss": [], "validation_loss": []}
        for epoch in range(self.epochs):
            train_loss = self._epoch(net, opt, train, rng)
            net.eval()
            with torch.no_grad():
                val_loss = float(self._loss(net(val[0]).squeeze(-1), val[1], val[2]))
            self.history["train_loss"].append(train_loss)
            self.history["validation_loss"].append(val_loss)
            if callback is not None:
                callback(epoch, train_loss, val_loss)
            if val_loss < best - 1e-6:  # the first epoch always improves on inf
                best, since = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                since += 1
                if since >= self.patience:
                    break
        return best_state

    def _epoch(
        self,
        net: torch.nn.Sequential,
        opt: torch.optim.Optimizer,
        train: tuple[Any, Any, Any],
        rng: np.random.Generator,
    ) -> float:
        """One pass over the training pools in a random order; the mean training loss."""
        net.train()
        n_train = len(train[0])
        perm = torch.from_numpy(rng.permutation(n_train))
        total = 0.0
        for start in range(0, n_train, self.batch_size):
            rows = perm[start : start + self.batch_size]
            x, mask, labels = (t[rows] for t in train)
            loss = self._loss(net(x).squeeze(-1), mask, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        return total / max(n_train, 1)

    @staticmethod
    def _tensors(pools: RankingPools, mean: np.ndarray, sd: np.ndarray) -> tuple[Any, Any, Any]:
        return (
            torch.from_numpy(((pools.features - mean) / sd).astype(np.float32)),
            torch.from_numpy(pools.mask),
            torch.from_numpy(pools.labels),
        )

    def _loss(self, scores: Any, mask: Any, labels: Any) -> Any:
        """Mean over requests. softmax: -mean over positives of log softmax over the pool;
        bpr: -mean over (positive, negative) pairs of log sigmoid(s+ - s-)."""
        if self.loss == "softmax":
            logp = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
            logp = logp.masked_fill(~labels, 0.0)
            return -(logp.sum(1) / labels.sum(1)).mean()
        negatives = mask & ~labels
        pairs = labels[:, :, None] & negatives[:, None, :]
        diff = scores[:, :, None] - scores[:, None, :]
        per_pair = torch.nn.functional.logsigmoid(diff).masked_fill(~pairs, 0.0)
        return -(per_pair.sum((1, 2)) / pairs.sum((1, 2)).clamp(min=1)).mean()

    def permutation_importance(
        self, pools: RankingPools, names: Sequence[str], repeats: int = 3, k: int = 20
    ) -> dict[str, float]:
        """Per feature: how much the pools' NDCG@k drops when that feature's values are
        shuffled across all candidates (mean of ``repeats`` shuffles); larger matters more."""
        rng = np.random.default_rng(self.seed)
        flat = pools.features[pools.mask]
        base = pool_ndcg(self._pool_scores(pools.features, pools.mask), pools, k)
        out = {}
        for col, name in enumerate(names):
            drops = []
            for _ in range(repeats):
                shuffled = pools.features.copy()
                shuffled[pools.mask, col] = flat[rng.permutation(len(flat)), col]
                drops.append(base - pool_ndcg(self._pool_scores(shuffled, pools.mask), pools, k))
            out[name] = float(np.mean(drops))
        return out

    def _pool_scores(self, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        scores = np.full(mask.shape, -np.inf, dtype=np.float32)
        scores[mask] = self.score(features[mask])
        return scores

    def score(self, features: np.ndarray) -> np.ndarray:
        """(n, n_features) -> (n,) float32 scores."""
        if not self.weights:
            raise RuntimeError("fit or load the head before scoring")
        hidden = np.maximum(features @ self.weights["w1"] + self.weights["b1"], 0.0)
        return (hidden @ self.weights["w2"] + self.weights["b2"][0]).astype(np.float32)

    def torch_module(self) -> Any:
        """The head as a torch module (for the ONNX export): features -> (n,) scores."""

        class Head(torch.nn.Module):
            def __init__(self, w: dict[str, np.ndarray]) -> None:
                super().__init__()
                self.fc1 = torch.nn.Linear(w["w1"].shape[0], w["w1"].shape[1])
                self.fc2 = torch.nn.Linear(w["w1"].shape[1], 1)
                with torch.no_grad():
                    self.fc1.weight.copy_(torch.from_numpy(w["w1"].T.copy()))
                    self.fc1.bias.copy_(torch.from_numpy(w["b1"]))
                    self.fc2.weight.copy_(torch.from_numpy(w["w2"][None, :].copy()))
                    self.fc2.bias.copy_(torch.from_numpy(w["b2"]))

            def forward(self, features: torch.Tensor) -> torch.Tensor:
                return self.fc2(torch.relu(self.fc1(features))).squeeze(-1)

        return Head(self.weights).eval()

    def torch_scores(self, features: np.ndarray) -> np.ndarray:
        """Scores from the torch module: the reference the exported ONNX head must match."""
        with torch.no_grad():
            out = self.torch_module()(torch.from_numpy(np.ascontiguousarray(features)))
        return out.numpy().astype(np.float32)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "head.npz", allow_pickle=False, **self.weights)
        params = {k: getattr(self, k) for k in self.PARAMS}
        (path / "head.json").write_text(
            json.dumps({"params": params, "history": self.history, "importances": self.importances})
        )

    @classmethod
    def load(cls, path: str | Path) -> ScoreHead:
        path = Path(path)
        meta = json.loads((path / "head.json").read_text())
        head = cls(**meta["params"])
        with np.load(path / "head.npz", allow_pickle=False) as data:
            head.weights = {k: data[k] for k in data.files}
        head.history = meta["history"]
        head.importances = meta.get("importances", {})
        return head

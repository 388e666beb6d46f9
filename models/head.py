"""The hybrid score head: Dense(hidden, relu) then Dense(1) over ``models.core.features``.

Trained on groups of one positive and several negatives with a sampled-softmax (default)
or BPR loss, Adam, and early stopping on a validation share of the groups. Weights are saved
as a plain ``.npz`` (no pickle); ``ScoreHead.score`` is a numpy forward pass, so offline
scoring needs no torch and matches the ONNX export (checked at export).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

log = logging.getLogger(__name__)


class ScoreHead:
    PARAMS = (
        "hidden", "loss", "epochs", "batch_size", "learning_rate", "weight_decay", "patience",
        "validation_share", "seed",
    )  # fmt: skip
    """The constructor's parameters: what ``save`` records and ``from_config`` takes."""

    """Dense(hidden, relu) -> Dense(1).

    Args:
        hidden: width of the hidden layer (the seed's 128).
        loss: ``softmax`` (cross-entropy of the positive against its group) or ``bpr``.
        epochs, batch_size, learning_rate: Adam training schedule.
        patience: epochs without a lower validation loss before stopping.
        validation_share: share of groups held out for early stopping.
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

    @classmethod
    def from_config(cls, config: Any) -> ScoreHead:
        """A head with the parameters of a ``HeadConfig`` (which has more fields: those for
        making the examples)."""
        return cls(**{k: getattr(config, k) for k in cls.PARAMS})

    @property
    def n_features(self) -> int:
        return int(self.weights["w1"].shape[0])

    def fit(
        self, groups: np.ndarray, callback: Callable[[int, float, float], None] | None = None
    ) -> ScoreHead:
        """Train on ``groups`` (n_groups, 1 + n_negatives, n_features) float32: index 0 of each
        group is the positive. Keeps the weights of the best validation epoch."""
        if groups.ndim != 3 or groups.shape[1] < 2 or groups.shape[0] < 2:
            raise ValueError(
                "groups must be (n_groups >= 2, 1 + n_negatives >= 2, n_features), "
                f"got {groups.shape}"
            )
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(groups))
        n_val = max(1, round(self.validation_share * len(groups)))
        val = torch.from_numpy(np.ascontiguousarray(groups[order[:n_val]]))
        train = torch.from_numpy(np.ascontiguousarray(groups[order[n_val:]]))
        net = torch.nn.Sequential(
            torch.nn.Linear(groups.shape[2], self.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(self.hidden, 1),
        )
        opt = torch.optim.Adam(
            net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        best, best_state, since = float("inf"), None, 0
        self.history = {"train_loss": [], "validation_loss": []}
        for epoch in range(self.epochs):
            net.train()
            perm = torch.from_numpy(rng.permutation(len(train)))
            total = 0.0
            for start in range(0, len(train), self.batch_size):
                batch = train[perm[start : start + self.batch_size]]
                loss = self._loss(net(batch).squeeze(-1))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
            net.eval()
            with torch.no_grad():
                val_loss = float(self._loss(net(val).squeeze(-1)))
            train_loss = total / max(len(train), 1)
            self.history["train_loss"].append(train_loss)
            self.history["validation_loss"].append(val_loss)
            if callback is not None:
                callback(epoch, train_loss, val_loss)
            if val_loss < best - 1e-6:
                best, since = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                since += 1
                if since >= self.patience:
                    break
        assert best_state is not None
        self.weights = {
            "w1": best_state["0.weight"].T.numpy().astype(np.float32),
            "b1": best_state["0.bias"].numpy().astype(np.float32),
            "w2": best_state["2.weight"].T.numpy()[:, 0].astype(np.float32),
            "b2": best_state["2.bias"].numpy().astype(np.float32),
        }
        return self

    def _loss(self, scores: Any) -> Any:
        if self.loss == "softmax":
            target = torch.zeros(scores.shape[0], dtype=torch.long)
            return torch.nn.functional.cross_entropy(scores, target)
        return -torch.nn.functional.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()

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
        (path / "head.json").write_text(json.dumps({"params": params, "history": self.history}))

    @classmethod
    def load(cls, path: str | Path) -> ScoreHead:
        path = Path(path)
        meta = json.loads((path / "head.json").read_text())
        head = cls(**meta["params"])
        with np.load(path / "head.npz", allow_pickle=False) as data:
            head.weights = {k: data[k] for k in data.files}
        head.history = meta["history"]
        return head

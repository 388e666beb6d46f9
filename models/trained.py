"""What ``walrus train hybrid`` writes and ``walrus export`` reads: the trained hybrid, its
encoder, id maps, titles, texts and attributes, as plain files (no pickle)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.core.attributes import Column, array_names, from_arrays, to_arrays
from models.core.errors import MissingArtifact
from models.core.types import ItemTables
from models.data import IdMap
from models.encoder import TextEncoder
from models.head import ScoreHead
from models.hybrid import HybridModel
from models.wals import WALS


@dataclass
class TrainedArtifacts:
    """What ``walrus train hybrid`` produces and ``walrus export`` consumes."""

    hybrid: HybridModel
    encoder: TextEncoder
    dataset_users: IdMap
    dataset_items: IdMap
    titles: list[str]
    texts: list[str]
    fine_tuned: bool = False
    attributes: list[Column] = field(default_factory=list)

    def save(self, path: Path) -> None:
        """Plain files only (npy, npz, json, safetensors): no pickle."""
        self.encoder.save(path / "encoder")
        self.hybrid.wals.save(path / "wals")
        self.hybrid.head.save(path / "head")
        np.save(path / "item_factors.npy", self.hybrid.tables.item_factors)
        np.save(path / "item_text_embeddings.npy", self.hybrid.tables.item_text_embeddings)
        np.save(path / "item_log_popularity.npy", self.hybrid.tables.item_log_popularity)
        np.save(path / "cold_items.npy", self.hybrid.cold_items)
        sp.save_npz(path / "seen.npz", self.hybrid.seen, compressed=False)
        self.dataset_users.save(path / "user_ids.json")
        self.dataset_items.save(path / "item_ids.json")
        meta = {
            "titles": self.titles,
            "texts": self.texts,
            "fine_tuned": self.fine_tuned,
            "encoder_name": self.encoder.name,
            "max_length": self.encoder.max_length,
            "n_wals": self.hybrid.n_wals,
            "n_text": self.hybrid.n_text,
            "cold_every": self.hybrid.cold_every,
        }
        description, arrays = to_arrays(self.attributes)
        for name, array in arrays.items():
            (path / name).parent.mkdir(exist_ok=True)
            np.save(path / name, array)
        meta["attributes"] = description
        (path / "trained.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: Path) -> TrainedArtifacts:
        if not (path / "trained.json").is_file():
            raise MissingArtifact(f"{path}: no trained model; run `walrus train hybrid` first")
        meta = json.loads((path / "trained.json").read_text())
        encoder = TextEncoder.load(str(path / "encoder"), meta["max_length"])
        encoder.name = meta["encoder_name"]
        tables = ItemTables(
            np.load(path / "item_factors.npy"),
            np.load(path / "item_text_embeddings.npy"),
            np.load(path / "item_log_popularity.npy"),
            np.load(path / "cold_items.npy"),
        )
        hybrid = HybridModel(
            WALS.load(path / "wals"),
            tables,
            ScoreHead.load(path / "head"),
            sp.load_npz(path / "seen.npz").tocsr(),
            np.load(path / "cold_items.npy"),
            meta["n_wals"],
            meta["n_text"],
            meta.get("cold_every", 0),
        )
        return cls(
            hybrid,
            encoder,
            IdMap.load(path / "user_ids.json"),
            IdMap.load(path / "item_ids.json"),
            meta["titles"],
            meta["texts"],
            meta["fine_tuned"],
            load_attributes(path, meta.get("attributes", {}), tables.n_items),
        )


def load_attributes(path: Path, description: dict[str, Any], n_items: int) -> list[Column]:
    arrays = {name: np.load(path / name) for name in array_names(description)}
    return from_arrays(description, arrays, n_items)

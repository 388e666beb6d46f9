"""Dense index maps, the item catalog and the interaction matrix they index."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.core.attributes import Column
from models.core.catalog import item_text, item_title, text_columns
from models.core.ids import IdMap
from models.core.operators import Kind
from models.data.attributes import catalog_attributes
from models.data.errors import DataError


@dataclass
class Catalog:
    """Items in index order: ``ids[i]``, ``titles[i]`` and ``texts[i]`` describe item i;
    ``attributes`` are the columns declared as attributes (``models.core.attributes``)."""

    ids: IdMap
    titles: list[str]
    texts: list[str]
    attributes: list[Column] = field(default_factory=list)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        template: str | None = None,
        path: str = "catalog",
        attributes: Mapping[str, Kind] | None = None,
        separator: str = ",",
    ) -> Catalog:
        """Build from a catalog table (``item_id``, text columns and the ``attributes``
        columns; without a template, the text is every column but those)."""
        declared = dict(attributes or {})
        columns = [c for c in frame.columns if c != "item_id"]
        if template is not None:
            names = {f[1] for f in string.Formatter().parse(template) if f[1]}
            missing = sorted(names - set(columns))
            if missing:
                raise DataError(
                    path, f"text_template uses column '{missing[0]}', which the catalog lacks"
                )
        records = frame.astype(str).to_dict("records")
        texts_from = text_columns(list(frame.columns), list(declared))
        texts = [item_text(r, template, texts_from) for r in records]
        titles = [item_title(r) for r in records]
        columns_of = catalog_attributes(frame, declared, separator) if declared else []
        return cls(IdMap(frame["item_id"]), titles, texts, columns_of)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Dataset:
    """Interactions as a users x items CSR, with the maps and catalog that index it.

    ``matrix`` holds observed targets A_ij (1.0: implicit positives). ``weights`` holds
    observed-entry weights W_ij when the interaction file gave them, else ``None`` (WALS then
    uses ``w0 + r_i c_j``).
    """

    users: IdMap
    catalog: Catalog
    matrix: sp.csr_matrix
    weights: sp.csr_matrix | None

    @property
    def items(self) -> IdMap:
        return self.catalog.ids

    @property
    def item_popularity(self) -> np.ndarray:
        """(n_items,) number of users with a positive on each item."""
        return np.bincount(self.matrix.indices, minlength=self.matrix.shape[1]).astype(np.float64)


def build_dataset(
    interactions: pd.DataFrame,
    catalog: pd.DataFrame | None = None,
    template: str | None = None,
    attributes: Mapping[str, Kind] | None = None,
    separator: str = ",",
) -> Dataset:
    """Map ids to indices and build the CSR.

    Items come from the catalog in its order (items without interactions are cold items);
    every interaction's item must be in the catalog, else ``DataError`` names the row.
    Without a catalog, items are the interactions' items with empty texts.
    """
    path = interactions.attrs.get("path", "interactions")
    if catalog is None:
        item_ids = pd.unique(interactions["item_id"])
        catalog = pd.DataFrame({"item_id": item_ids, "title": item_ids})
    cat = Catalog.from_frame(
        catalog, template, catalog.attrs.get("path", "catalog"), attributes, separator
    )
    users = IdMap(interactions["user_id"].drop_duplicates())
    user_idx = interactions["user_id"].map(users.positions).to_numpy()
    item_idx = interactions["item_id"].map(cat.ids.positions)
    unknown = item_idx.isna().to_numpy()
    if unknown.any():
        first = int(np.flatnonzero(unknown)[0])
        raise DataError(
            path,
            f"unknown item id {interactions['item_id'].iloc[first]!r} (not in the catalog)",
            row=int(interactions["line"].iloc[first]) if "line" in interactions else None,
            column="item_id",
        )
    shape = (len(users), len(cat))
    rows, cols = user_idx.astype(np.int64), item_idx.to_numpy().astype(np.int64)
    ones = np.ones(len(rows), dtype=np.float32)
    matrix = sp.csr_matrix((ones, (rows, cols)), shape=shape)
    weights = None
    if interactions.attrs.get("has_weight"):
        w = interactions["weight"].to_numpy(dtype=np.float32)
        weights = sp.csr_matrix((w, (rows, cols)), shape=shape)
        weights.sort_indices()
    matrix.sort_indices()
    return Dataset(users, cat, matrix, weights)

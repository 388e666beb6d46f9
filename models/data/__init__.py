"""Interactions, catalog, id maps, MovieLens, synthetic data and evaluation splits."""

from models.core.ids import IdMap
from models.data.dataset import Catalog, Dataset, build_dataset
from models.data.errors import DataError
from models.data.io import read_catalog, read_interactions, read_table

__all__ = [
    "Catalog",
    "DataError",
    "Dataset",
    "IdMap",
    "build_dataset",
    "read_catalog",
    "read_interactions",
    "read_table",
]

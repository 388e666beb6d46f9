"""One cold rule: training's, exported in the bundle, followed by the service."""

from __future__ import annotations

import json

import numpy as np

from export.format import writable_copy
from models.cold_start import fill_cold_items
from models.core.cold import cold_mask


def test_training_marks_cold_items_with_the_core_rule():
    counts = np.array([0, 1, 2, 3, 5])
    rng = np.random.default_rng(0)
    _, cold = fill_cold_items(rng.normal(size=(5, 2)), counts, rng.normal(size=(5, 3)), 3)
    np.testing.assert_array_equal(cold, cold_mask(counts, 3))
    assert cold.tolist() == [True, True, True, False, False]


def test_the_service_answers_similar_for_exported_cold_items_by_text(tiny_bundle, tmp_path):
    """Before, the service called an item cold when its popularity was 0, while training
    used count < min_interactions: an item with 1 interaction under min_interactions=2 was
    cold in training and warm in serving."""
    from export.format import MANIFEST, file_table
    from service.engine.recommender import Recommender
    from service.messages import Similar
    from service.settings import Settings

    bundle = tmp_path / "bundle"
    writable_copy(tiny_bundle, bundle)
    items = json.loads((bundle / "items.json").read_text())
    popular = max(range(len(items)), key=lambda i: items[i]["popularity"])
    cold = np.load(bundle / "cold_items.npy")
    assert not cold[popular]
    warm = Recommender(bundle, Settings(bundle=bundle)).similar(
        Similar(item_id=items[popular]["item_id"], k=3)
    )
    assert warm.source == "wals"
    cold[popular] = True  # as a larger cold_start.min_interactions would mark it
    np.save(bundle / "cold_items.npy", cold)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"] = {k: v.model_dump() for k, v in file_table(bundle).items()}
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    answer = Recommender(bundle, Settings(bundle=bundle)).similar(
        Similar(item_id=items[popular]["item_id"], k=3)
    )
    assert answer.source == "text"


def test_the_bundle_ships_the_training_mask(tiny_bundle, tiny_trained):
    np.testing.assert_array_equal(
        np.load(tiny_bundle / "cold_items.npy"), tiny_trained.hybrid.cold_items
    )

"""Bundle updates (``export.update``): added items as a full export of the same model would
embed and map them, withdrawn items out of every answer, unchanged items answered exactly as
before, unchanged files shared by hard links, compaction equal to the tombstones it
replaces, and bad changes refused with nothing written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from export.bundle import build_bundle
from export.format import Files, read_manifest, resolve_bundle
from export.runtime import load_bundle, verify_bundle
from export.update import CatalogChange, UpdateError, compact_bundle, update_bundle
from models.cold_start import RidgeMap
from models.config import load_config
from models.core.catalog import item_text, text_columns
from service.engine.recommender import Recommender
from service.messages import Recommend, Similar
from service.settings import Settings
from tests.support.bundles import NEW, bundles_of
from tests.support.tools import walrus


def served(bundles: Path) -> Recommender:
    return Recommender(
        resolve_bundle(bundles), Settings(bundle=bundles, engine={"encoder_precision": "fp32"})
    )


def answer(r: Recommender, **kwargs) -> list[str]:
    return [i.item_id for i in r.recommend(Recommend(k=10, **kwargs)).items]


def test_added_items_are_embedded_and_mapped_as_the_model_would(
    tiny_bundle, tiny_trained, tmp_path
):
    root = bundles_of(tiny_bundle, tmp_path)
    path = update_bundle(root, CatalogChange(NEW, []))
    assert resolve_bundle(root) == path.resolve()
    old, new = load_bundle(tiny_bundle), load_bundle(path)  # every check the service runs
    n = len(old.items)
    assert len(new.items) == n + 2 and list(new.items.ids[n:]) == ["new-1", "new-2"]
    assert new.titles[n:] == [row["title"] for row in NEW]
    # Unchanged items: every array as it was.
    for name in ("item_factors", "item_text_embeddings", "item_log_popularity", "item_cold"):
        np.testing.assert_array_equal(getattr(new.tables, name)[:n], getattr(old.tables, name))
    # Added items: the training's text rule, the model's encoder (PyTorch), its ridge map.
    columns = list(NEW[0])
    texts = [item_text(r, None, text_columns(columns, list(old.attributes.columns))) for r in NEW]
    expected = tiny_trained.encoder.encode(texts)
    np.testing.assert_allclose(new.tables.item_text_embeddings[n:], expected, atol=1e-4)
    warm = ~tiny_trained.hybrid.cold_items
    ridge = RidgeMap(load_config_alpha(tiny_bundle)).fit(
        tiny_trained.hybrid.tables.item_text_embeddings[warm],
        tiny_trained.hybrid.wals.item_factors[warm],
    )
    np.testing.assert_allclose(new.tables.item_factors[n:], ridge.predict(expected), atol=1e-3)
    assert new.tables.item_cold[n:].all() and new.indexes.indexes["text"].cpu_index.ntotal == n + 2
    # Attributes: old codes unchanged, a new value appended, a missing year is no value.
    topic = new.attributes.columns["topic"]
    np.testing.assert_array_equal(topic.codes[:n], old.attributes.columns["topic"].codes)
    assert topic.values[topic.codes[n + 1]] == "brand new topic"
    assert np.isnan(new.attributes.columns["year"].numbers[n + 1])
    assert verify_bundle(path)["parity"]["encoder_fp32_max_abs_diff"] <= 1e-4


def load_config_alpha(bundle: Path) -> float:
    config = next(bundle.parents[1].glob("*.toml"))
    return load_config(config).cold_start.ridge_alpha


def test_unchanged_files_are_hard_links_and_the_rest_is_all_that_costs_disk(tiny_bundle, tmp_path):
    root = bundles_of(tiny_bundle, tmp_path)
    source = resolve_bundle(root)
    path = update_bundle(root, CatalogChange(NEW[:1], [tiny_bundle_item(tiny_bundle, 3)]))
    manifest = read_manifest(path)
    shared = [rel for rel in manifest.files if (path / rel).stat().st_nlink > 1]
    for rel in (Files.USER_FACTORS, Files.SEEN_INDICES, Files.ENCODER["fp32"], Files.HEAD):
        assert rel in shared
        assert (path / rel).stat().st_ino == (source / rel).stat().st_ino
    changed = {rel for rel in manifest.files if rel not in shared}
    assert {Files.ITEM_FACTORS, Files.WITHDRAWN, "wals.faiss", "text.faiss"} <= changed
    assert manifest.lineage is not None and manifest.lineage.updates == 1
    assert manifest.lineage.exported == read_manifest(source).bundle_id


def tiny_bundle_item(bundle: Path, i: int) -> str:
    return json.loads((bundle / Files.ITEM_IDS).read_text())[i]


def test_withdrawn_items_leave_every_answer_and_the_rest_is_answered_as_before(
    tiny_bundle, tmp_path
):
    root = bundles_of(tiny_bundle, tmp_path)
    before = served(root)
    popular = answer(before)
    # Answered items seen by the fewest users: many users then saw none of them.
    seen_by = np.bincount(before.bundle.seen.indices, minlength=len(before.items))
    answered = {*popular[:3], *answer(before, query="space robots"), *answer(before, user_id="u1")}
    gone = sorted(answered, key=lambda i: seen_by[before.items.index(i)])[:4]
    update_bundle(root, CatalogChange([], gone))
    after = served(root)
    # u1, and users none of whose training items were withdrawn (for the others, those
    # items leave their text profile too, as a compaction drops them: the next test).
    gone_at = {before.items.index(i) for i in gone}
    users = [u for u in before.users.ids if not gone_at & set(before.seen(before.users.index(u)))]
    assert len(users) >= 12
    asked = [{}, {"query": "space robots"}, {"user_id": "u1"}] + [
        {"user_id": u} for u in users[:12]
    ]
    assert sum(bool(set(gone) & set(answer(before, **kwargs))) for kwargs in asked) >= 2
    for kwargs in asked:
        expected = answer(before, exclude=gone, **kwargs)  # the old bundle, told to skip them
        assert answer(after, **kwargs) == expected, kwargs
    item = popular[5]
    similar = [i.item_id for i in after.similar(Similar(item_id=item, k=10)).items]
    assert not set(similar) & set(gone)
    assert not after.offers(gone[0]) and after.offers(item)


def test_a_compaction_answers_as_the_tombstones_did(tiny_bundle, tmp_path):
    root = bundles_of(tiny_bundle, tmp_path)
    gone = answer(served(root))[:4]
    update_bundle(root, CatalogChange(NEW, gone))
    tombstoned = served(root)
    compacted_path = compact_bundle(root)
    compacted = served(root)
    manifest = read_manifest(compacted_path)
    assert Files.WITHDRAWN not in manifest.files and manifest.lineage.updates == 0
    assert len(compacted.items) == len(tombstoned.items) - 4
    assert not set(gone) & set(compacted.items.ids)
    for u in tombstoned.users.ids[:12]:
        assert answer(compacted, user_id=u) == answer(tombstoned, user_id=u)
        seen_before = {tombstoned.items.ids[i] for i in tombstoned.seen(tombstoned.users.index(u))}
        seen_after = {compacted.items.ids[i] for i in compacted.seen(compacted.users.index(u))}
        assert seen_after == seen_before - set(gone)
    assert answer(compacted, query="zanzibar quokka") == answer(tombstoned, query="zanzibar quokka")
    assert manifest.indexes["wals"].recall_at_100 == pytest.approx(1.0)  # flat: exact


def test_updates_compact_themselves_after_enough_of_them(tiny_bundle, tmp_path):
    root = bundles_of(tiny_bundle, tmp_path)
    ids = json.loads((tiny_bundle / Files.ITEM_IDS).read_text())
    update_bundle(root, CatalogChange([], ids[:1]), compact_after=2)
    path = update_bundle(root, CatalogChange([], ids[1:2]), compact_after=2)
    manifest = read_manifest(path)
    assert manifest.lineage.updates == 0 and manifest.counts["items"] == len(ids) - 2


def test_approximate_indexes_take_added_items_too(tiny_pipeline_config, tiny_trained, tmp_path):
    cfg = load_config(tiny_pipeline_config, ["export.exact_threshold=10"])
    root = tmp_path / "ann"
    bundle = build_bundle(cfg, tiny_trained, root)
    assert read_manifest(bundle).indexes["text"].kind != "flat"
    update_bundle(root, CatalogChange(NEW, []))
    found = answer(served(root), query="zanzibar quokka submarine")
    assert set(found[:2]) == {"new-1", "new-2"}


def test_a_compaction_builds_each_index_with_the_parameters_its_manifest_records(
    tiny_pipeline_config, tiny_trained, tmp_path
):
    """HNSW's efConstruction is no part of its factory string: the export records it in the
    manifest, and a compaction builds with that, not with today's default."""
    cfg = load_config(
        tiny_pipeline_config,
        ["export.exact_threshold=10", "export.index_type=hnsw", "export.hnsw_ef_construction=23"],
    )
    root = tmp_path / "hnsw"
    bundle = build_bundle(cfg, tiny_trained, root)
    assert read_manifest(bundle).indexes["wals"].build_params == "efConstruction=23"
    compacted = compact_bundle(root)
    for name, entry in read_manifest(compacted).indexes.items():
        assert entry.kind == "hnsw" and entry.build_params == "efConstruction=23"
        index = faiss.downcast_index(faiss.read_index(str(compacted / Files.index(name))))
        assert index.hnsw.efConstruction == 23


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (CatalogChange([{"item_id": "new-1"}, {"item_id": "new-1"}], []), "twice"),
        (CatalogChange([], ["no-such-item"]), "no such item"),
    ],
)
def test_a_change_that_does_not_fit_writes_nothing(tiny_bundle, tmp_path, change, message):
    root = bundles_of(tiny_bundle, tmp_path)
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(UpdateError, match=message):
        update_bundle(root, change)
    assert sorted(p.name for p in root.iterdir()) == before


def test_the_update_command_says_what_to_fix_in_one_line(tiny_bundle, tmp_path):
    root = bundles_of(tiny_bundle, tmp_path)
    existing = tiny_bundle_item(tiny_bundle, 0)
    add = tmp_path / "add.csv"
    with add.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(NEW[0]))
        writer.writeheader()
        writer.writerow({**NEW[0], "item_id": existing})
    run = walrus("bundle", "update", "--bundles", str(root), "--add", str(add))
    assert run.returncode == 2 and "in the bundle already" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    (tmp_path / "gone.txt").write_text(existing + "\n")
    run = walrus("bundle", "update", "--bundles", str(root), "--remove", str(tmp_path / "gone.txt"))
    assert run.returncode == 0, run.stderr
    assert "-1 withdrawn" in run.stderr

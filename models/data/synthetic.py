"""Seeded synthetic interactions and catalog with latent topics.

Users mix a few topics (Dirichlet); each item has one main topic and a power-law popularity;
a user's interactions pick a topic from the user's mix, then an item of that topic in
proportion to popularity. Item text is drawn from per-topic vocabularies, so text and
interactions share the same hidden structure and both halves of the hybrid have signal.
The vocabularies are plain English (``models.data.vocabulary``: space, cooking, jazz,
mystery...), so a reader sees why "space robots" finds what it finds; a spec with more
topics than those sixteen gets pronounceable pseudo-words for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.core.attributes import Column
from models.data.vocabulary import TOPICS


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and shape of a synthetic data set."""

    n_users: int
    n_items: int
    interactions: int
    n_topics: int = 20
    popularity_exponent: float = 1.0
    user_topic_concentration: float = 0.2
    words_per_topic: int = 40


SIZES: dict[str, SyntheticSpec] = {
    "tiny": SyntheticSpec(n_users=60, n_items=80, interactions=900, n_topics=4, words_per_topic=12),
    "small": SyntheticSpec(n_users=2_000, n_items=1_000, interactions=40_000, n_topics=10),
    "medium": SyntheticSpec(n_users=100_000, n_items=20_000, interactions=5_000_000, n_topics=50),
    "large": SyntheticSpec(n_users=200_000, n_items=40_000, interactions=10_000_000, n_topics=80),
}

# Consonant-vowel syllables: pseudo-words that tokenizers split like real ones.
_SYLLABLES = tuple(c + v for c in "bdfghjklmnprstvz" for v in "aeiou")
# Words of no topic, for descriptions that read like sentences.
_COMMON = (
    "classic",
    "new",
    "complete",
    "little",
    "great",
    "modern",
    "essential",
    "hidden",
    "golden",
    "last",
    "first",
    "secret",
    "simple",
    "bold",
    "gentle",
    "wild",
)
_FORMS = ("guide", "story", "collection", "session", "journey", "handbook", "tale", "show")


def topic_vocabularies(
    rng: np.random.Generator, n_topics: int, words_per_topic: int
) -> tuple[list[str], list[list[str]]]:
    """Topic names and their words: the English topics first, pseudo-words beyond them."""
    names = list(TOPICS)[:n_topics]
    words = [list(TOPICS[name][:words_per_topic]) for name in names]
    extra = n_topics - len(names)
    if extra > 0:
        taken = {w for ws in TOPICS.values() for w in ws}
        fresh = [w for w in _words(rng, extra * (words_per_topic + 1) + 50) if w not in taken]
        for t in range(extra):
            chunk = fresh[t * (words_per_topic + 1) : (t + 1) * (words_per_topic + 1)]
            names.append(chunk[0])
            words.append(chunk[1:])
    return names, words


def _words(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct pronounceable pseudo-words (2-3 syllables)."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        word = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


@dataclass(frozen=True)
class Tastes:
    """What the generator drew the interactions from, and a simulated user acts on
    (``bench/loop.py``): each user's topic mixture (rows sum to 1), each item's topic, and
    each item's popularity weight (1 / rank ** exponent)."""

    affinity: np.ndarray  # (n_users, n_topics)
    item_topic: np.ndarray  # (n_items,)
    popularity: np.ndarray  # (n_items,)


def generate(spec: SyntheticSpec, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(interactions, catalog)``: ``generate_world`` without the hidden tastes."""
    interactions, catalog, _ = generate_world(spec, seed)
    return interactions, catalog


def generate_world(spec: SyntheticSpec, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, Tastes]:
    """Return ``(interactions, catalog, tastes)``.

    interactions: ``user_id, item_id``; catalog: ``item_id, title, description, tags`` and
    the attributes ``topic, year, price, in_stock``.

    Deterministic for a given ``(spec, seed)``. The number of interactions is close to
    ``spec.interactions`` (duplicates are dropped).
    """
    rng = np.random.default_rng(seed)
    t = spec.n_topics
    topic_names, topic_words = topic_vocabularies(rng, t, spec.words_per_topic)

    item_topic = rng.integers(0, t, size=spec.n_items)
    popularity = 1.0 / np.power(rng.permutation(spec.n_items) + 1.0, spec.popularity_exponent)

    titles, descriptions, tags = [], [], []
    title_count: dict[str, int] = {}
    for j in range(spec.n_items):
        name, words = topic_names[item_topic[j]], topic_words[item_topic[j]]
        own = rng.choice(words, size=6, replace=len(words) < 6)
        adjective, form = rng.choice(_COMMON), rng.choice(_FORMS)
        title = f"{own[0].capitalize()} {own[1]}"
        title_count[title] = title_count.get(title, 0) + 1
        if title_count[title] > 1:  # titles stay distinct, like volumes of a series
            title = f"{title}, vol. {title_count[title]}"
        titles.append(title)
        descriptions.append(
            f"A {adjective} {name} {form} of {own[2]} and {own[3]}, with {own[4]} and {own[5]}."
        )
        tags.append(", ".join(rng.choice(words, size=2, replace=False)))
    catalog = pd.DataFrame(
        {
            "item_id": [f"i{j}" for j in range(spec.n_items)],
            "title": titles,
            "description": descriptions,
            "tags": tags,
            **attribute_columns(np.random.default_rng(seed + 7919), topic_names, item_topic),
        }
    )

    affinity = rng.dirichlet(np.full(t, spec.user_topic_concentration), size=spec.n_users)
    state = rng.bit_generator.state
    # Popular items get drawn twice and dropped as duplicates: re-draw with a larger
    # over-sampling factor until the count lands within 5% of the target.
    scale = 1.0
    for _ in range(5):
        rng.bit_generator.state = state
        pairs = _sample_pairs(spec, rng, affinity, item_topic, popularity, scale)
        ratio = spec.interactions / max(len(pairs), 1)
        if abs(ratio - 1.0) < 0.05:
            break
        scale *= ratio
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in pairs // spec.n_items],
            "item_id": [f"i{j}" for j in pairs % spec.n_items],
        }
    )
    return interactions, catalog, Tastes(affinity, item_topic, popularity)


def draw_attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """A year, a price and an in-stock flag per item, from their own generator so the
    interactions and texts of a seed stay what they were."""
    return {
        "year": rng.integers(1950, 2026, size=n),
        "price": np.round(rng.lognormal(2.5, 0.6, size=n), 2),
        "in_stock": rng.random(n) < 0.8,
    }


def attribute_columns(
    rng: np.random.Generator, topic_names: list[str], item_topic: np.ndarray
) -> dict[str, list[str]]:
    """The catalog's attribute columns (configs/demo.toml declares them): the item's topic
    and ``draw_attributes``."""
    drawn = draw_attributes(rng, len(item_topic))
    return {
        "topic": [topic_names[t] for t in item_topic],
        "year": [str(y) for y in drawn["year"]],
        "price": [f"{p:.2f}" for p in drawn["price"]],
        "in_stock": ["true" if s else "false" for s in drawn["in_stock"]],
    }


def attribute_arrays(
    rng: np.random.Generator, topic_names: list[str], item_topic: np.ndarray
) -> list[Column]:
    """The same attributes as columns, for a bundle made without a catalog file."""
    drawn = draw_attributes(rng, len(item_topic))
    return [
        Column("topic", "categorical", list(topic_names), codes=item_topic.astype(np.int32)),
        Column("year", "numeric", numbers=drawn["year"].astype(np.float64)),
        Column("price", "numeric", numbers=drawn["price"].astype(np.float64)),
        Column("in_stock", "boolean", codes=drawn["in_stock"].astype(np.int8)),
    ]


def _sample_pairs(
    spec: SyntheticSpec,
    rng: np.random.Generator,
    affinity: np.ndarray,
    item_topic: np.ndarray,
    popularity: np.ndarray,
    scale: float,
) -> np.ndarray:
    """Sorted unique ``user * n_items + item`` codes of sampled interactions."""
    mean = spec.interactions / spec.n_users * scale
    counts = rng.lognormal(np.log(mean) - 0.5, 1.0, size=spec.n_users).astype(np.int64)
    counts = np.clip(counts, 2, max(2, spec.n_items // 2))
    topic_counts = np.stack([rng.multinomial(c, p) for c, p in zip(counts, affinity, strict=True)])
    users, items = [], []
    for topic in range(spec.n_topics):
        members = np.flatnonzero(item_topic == topic)
        if members.size == 0:
            continue
        cdf = np.cumsum(popularity[members])
        per_user = topic_counts[:, topic]
        draws = np.searchsorted(cdf, rng.random(int(per_user.sum())) * cdf[-1], side="right")
        users.append(np.repeat(np.arange(spec.n_users), per_user))
        items.append(members[np.minimum(draws, members.size - 1)])
    return np.unique(np.concatenate(users) * spec.n_items + np.concatenate(items))

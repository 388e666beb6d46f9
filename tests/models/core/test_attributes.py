"""Filters over item attributes, every operator against a brute-force check over the
catalog; bad filters named; the stored form round-trips and is checked."""

from __future__ import annotations

import numpy as np
import pytest

from models.core.attributes import (
    BITMAP_VALUES,
    Column,
    FilterError,
    ItemAttributes,
    from_arrays,
    pack,
    to_arrays,
    unpack,
)

N = 203  # not a multiple of 8: the packed bitmaps' padding bits must never pass
TOPICS = ["comedy", "drama", "horror", "space"]
GENRES = ["Action", "Comedy", "Drama", "Sci-Fi"]


@pytest.fixture(scope="module")
def catalog():
    """Per item, as plain Python values (None: no value), and the same as attributes."""
    rng = np.random.default_rng(3)
    topic = [None if rng.random() < 0.1 else TOPICS[rng.integers(4)] for _ in range(N)]
    genres = [sorted(set(rng.choice(GENRES, size=rng.integers(0, 3)).tolist())) for _ in range(N)]
    year = [None if rng.random() < 0.1 else int(rng.integers(1950, 2025)) for _ in range(N)]
    stock = [None if rng.random() < 0.1 else bool(rng.random() < 0.7) for _ in range(N)]
    rows = dict(topic=topic, genres=genres, year=year, in_stock=stock)
    codes = np.array([-1 if t is None else TOPICS.index(t) for t in topic], dtype=np.int32)
    indptr = np.cumsum([0] + [len(g) for g in genres])
    indices = np.array([GENRES.index(g) for gs in genres for g in gs], dtype=np.int32)
    columns = [
        Column("topic", "categorical", TOPICS, codes=codes),
        Column("genres", "tags", GENRES, indptr=indptr, indices=indices),
        Column("year", "numeric", numbers=np.array([np.nan if y is None else y for y in year])),
        Column("in_stock", "boolean", codes=np.array([-1 if s is None else int(s) for s in stock])),
    ]
    return rows, ItemAttributes(N, columns)


ORACLE = {
    "eq": lambda v, x: v is not None and v == x,
    "ne": lambda v, x: not (v is not None and v == x),
    "in": lambda v, x: v is not None and v in x,
    "not_in": lambda v, x: not (v is not None and v in x),
    "any": lambda v, x: bool(set(v) & set(x)),
    "all": lambda v, x: set(x) <= set(v),
    "none": lambda v, x: not set(v) & set(x),
    "gt": lambda v, x: v is not None and v > x,
    "gte": lambda v, x: v is not None and v >= x,
    "lt": lambda v, x: v is not None and v < x,
    "lte": lambda v, x: v is not None and v <= x,
}
CASES = [
    ("topic", "eq", "drama"),
    ("topic", "ne", "drama"),
    ("topic", "in", ["comedy", "space"]),
    ("topic", "not_in", ["horror"]),
    ("topic", "eq", "western"),  # a value the catalog never had: matches nothing
    ("genres", "any", ["Comedy", "Drama"]),
    ("genres", "all", ["Action", "Sci-Fi"]),
    ("genres", "none", ["Drama"]),
    ("year", "gt", 1990),
    ("year", "gte", 1990.0),
    ("year", "lt", 2000),
    ("year", "lte", 1975.5),
    ("in_stock", "eq", True),
    ("in_stock", "ne", True),
    ("in_stock", "in", [False]),
    ("in_stock", "not_in", [False]),
]


@pytest.mark.parametrize(("field", "op", "value"), CASES, ids=lambda c: str(c))
def test_every_operator_matches_a_brute_force_check(catalog, field, op, value):
    rows, attributes = catalog
    got = attributes.mask({field: {op: value}})
    expected = np.array([ORACLE[op](v, value) for v in rows[field]])
    np.testing.assert_array_equal(got, expected)


def test_fields_and_operators_are_anded_and_item_ids_allow_or_deny(catalog):
    rows, attributes = catalog
    spec = {
        "genres": {"any": ["Comedy", "Drama"]},
        "year": {"gte": 1990, "lt": 2000},
        "in_stock": {"eq": True},
        "topic": {"not_in": ["horror"]},
    }
    expected = np.array(
        [
            ORACLE["any"](rows["genres"][i], ["Comedy", "Drama"])
            and ORACLE["gte"](rows["year"][i], 1990)
            and ORACLE["lt"](rows["year"][i], 2000)
            and ORACLE["eq"](rows["in_stock"][i], True)
            and ORACLE["not_in"](rows["topic"][i], ["horror"])
            for i in range(N)
        ]
    )
    np.testing.assert_array_equal(attributes.mask(spec), expected)
    allow = attributes.mask({"item_id": {"in": np.array([3, 5, 202])}})
    assert np.flatnonzero(allow).tolist() == [3, 5, 202]
    deny = attributes.mask({"item_id": {"not_in": np.array([0, 202])}})
    assert deny.sum() == N - 2 and not deny[0] and not deny[202]
    assert attributes.mask(None) is None and attributes.mask({}) is None


def test_a_column_too_large_for_bitmaps_gives_the_same_masks():
    n_values = BITMAP_VALUES + 1
    codes = np.arange(50, dtype=np.int32) % n_values
    big = ItemAttributes(
        50, [Column("sku", "categorical", [f"v{i}" for i in range(n_values)], codes=codes)]
    )
    assert "sku" not in big._bits
    np.testing.assert_array_equal(big.mask({"sku": {"in": ["v3", "v7"]}}), np.isin(codes, [3, 7]))


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"colour": {"eq": "red"}}, "filter.colour"),
        ({"year": {"any": ["x"]}}, "filter.year.any"),
        ({"year": {"gte": "1990"}}, "filter.year.gte"),
        ({"year": {"gte": True}}, "filter.year.gte"),
        ({"year": {"gte": float("inf")}}, "filter.year.gte"),
        ({"topic": {"in": "drama"}}, "filter.topic.in"),
        ({"topic": {"in": []}}, "filter.topic.in"),
        ({"topic": {"eq": 3}}, "filter.topic.eq"),
        ({"in_stock": {"eq": "yes"}}, "filter.in_stock.eq"),
        ({"genres": {"eq": "Drama"}}, "filter.genres.eq"),
        ({"topic": {}}, "filter.topic"),
        ({"item_id": {"eq": "i1"}}, "filter.item_id.eq"),
    ],
)
def test_a_filter_that_does_not_fit_is_named(catalog, spec, where):
    _, attributes = catalog
    with pytest.raises(FilterError) as err:
        attributes.mask(spec)
    assert err.value.field == where


def test_packing_matches_faiss_bit_order():
    mask = np.zeros(19, dtype=bool)
    mask[[0, 9, 18]] = True
    bits = pack(mask)
    assert bits.tolist() == [1, 2, 4]  # bit i of byte i // 8, least significant first
    np.testing.assert_array_equal(unpack(bits, 19), mask)


def test_the_stored_form_round_trips_and_is_checked(catalog):
    _, attributes = catalog
    columns = list(attributes.columns.values())
    description, arrays = to_arrays(columns)
    again = ItemAttributes(N, from_arrays(description, arrays, N))
    spec = {"genres": {"any": ["Drama"]}, "topic": {"ne": "space"}, "year": {"lt": 2000}}
    np.testing.assert_array_equal(again.mask(spec), attributes.mask(spec))
    with pytest.raises(ValueError, match="expected"):
        from_arrays(description, arrays, N + 1)
    broken = dict(arrays)
    broken["attributes/0.codes.npy"] = np.full(N, 9, dtype=np.int32)
    with pytest.raises(ValueError, match="outside its values"):
        from_arrays(description, broken, N)

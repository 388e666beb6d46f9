"""Input files: formats, id maps, templates, and one clear line for every kind of bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.data import DataError, IdMap, build_dataset, read_catalog, read_interactions
from models.data.synthetic import SIZES, SyntheticSpec, generate


def write(path, text):
    path.write_text(text)
    return path


def test_csv_jsonl_parquet_read_the_same(tmp_path):
    frame = pd.DataFrame(
        {"user_id": ["a", "b", "a"], "item_id": ["x", "y", "y"], "weight": [1.0, 2.0, 3.0]}
    )
    frame.to_csv(tmp_path / "i.csv", index=False)
    frame.to_json(tmp_path / "i.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "i.parquet")
    got = [read_interactions(tmp_path / f"i.{ext}") for ext in ("csv", "jsonl", "parquet")]
    for other in got[1:]:
        pd.testing.assert_frame_equal(
            got[0][["user_id", "item_id", "weight"]], other[["user_id", "item_id", "weight"]]
        )


def test_ids_are_strings_and_round_trip(tmp_path):
    write(tmp_path / "i.csv", "user_id,item_id\n007,10\n7,10.0\n")
    frame = read_interactions(tmp_path / "i.csv")
    ds = build_dataset(frame)
    assert ds.users.ids == ["007", "7"]  # "007" and "7" are different users
    assert ds.items.ids == ["10", "10.0"]
    ds.users.save(tmp_path / "u.json")
    assert IdMap.load(tmp_path / "u.json").index("7") == 1


def test_duplicates_merge_and_threshold(tmp_path):
    write(tmp_path / "i.csv", "user_id,item_id,rating\nu,a,5\nu,a,4\nu,b,2\nv,b,4.5\n")
    frame = read_interactions(tmp_path / "i.csv", rating_threshold=4.0)
    ds = build_dataset(frame)
    assert ds.matrix.nnz == 2 and ds.weights is None
    assert set(ds.items.ids) == {"a", "b"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "file is empty"),
        ("user_id,item_id\n", "no rows"),
        ("user,item_id\nu,a\n", "missing column 'user_id'"),
        (
            "user_id,item_id,weight\nu,a,1\nu,b,nan\n",
            "line 3, column 'weight': not a finite number",
        ),
        ("user_id,item_id,weight\nu,a,1\nu,b,\n", "line 3, column 'weight'"),
        ("user_id,item_id,weight\nu,a,0\n", "line 2, column 'weight': must be > 0"),
        ("user_id,item_id\nu,a\n,b\n", "line 3, column 'user_id': empty id"),
    ],
)
def test_bad_interactions_give_one_line(tmp_path, content, message):
    path = write(tmp_path / "bad.csv", content)
    with pytest.raises(DataError) as err:
        read_interactions(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_unknown_item_names_row(tmp_path):
    write(tmp_path / "c.csv", "item_id,title\na,Alpha\n")
    write(tmp_path / "i.csv", "user_id,item_id\nu,a\nu,zzz\n")
    with pytest.raises(DataError, match=r"line 3, column 'item_id': unknown item id 'zzz'"):
        build_dataset(read_interactions(tmp_path / "i.csv"), read_catalog(tmp_path / "c.csv"))


def test_catalog_duplicates_and_missing_file(tmp_path):
    write(tmp_path / "c.csv", "item_id,title\na,A\na,B\n")
    with pytest.raises(DataError, match="line 3, column 'item_id': duplicate item id 'a'"):
        read_catalog(tmp_path / "c.csv")
    with pytest.raises(DataError, match="file not found"):
        read_catalog(tmp_path / "nope.csv")
    write(tmp_path / "x.xlsx", "x")
    with pytest.raises(DataError, match="unknown file type"):
        read_catalog(tmp_path / "x.xlsx")


def test_catalog_order_text_template_and_cold_items(tmp_path):
    write(
        tmp_path / "c.csv",
        "item_id,title,genres,tags\nb,Beta,Drama,\na,Alpha,Comedy|Drama,funny\nc,Gamma,,\n",
    )
    write(tmp_path / "i.csv", "user_id,item_id\nu,a\n")
    catalog = read_catalog(tmp_path / "c.csv")
    ds = build_dataset(read_interactions(tmp_path / "i.csv"), catalog)
    assert ds.items.ids == ["b", "a", "c"]  # catalog order; c has no interactions
    assert ds.catalog.texts == ["Beta. Drama", "Alpha. Comedy|Drama. funny", "Gamma"]
    ds2 = build_dataset(read_interactions(tmp_path / "i.csv"), catalog, "{title} ({genres})")
    assert ds2.catalog.texts[1] == "Alpha (Comedy|Drama)"
    with pytest.raises(DataError, match="text_template uses column 'plot'"):
        build_dataset(read_interactions(tmp_path / "i.csv"), catalog, "{plot}")
    assert list(ds.item_popularity) == [0, 1, 0]


def test_explicit_weights_become_weight_matrix(tmp_path):
    write(tmp_path / "i.csv", "user_id,item_id,weight\nu,a,2.5\nu,a,0.5\nv,b,1\n")
    ds = build_dataset(read_interactions(tmp_path / "i.csv"))
    assert ds.weights is not None
    assert ds.weights[0, 0] == pytest.approx(3.0)
    assert ds.matrix[0, 0] == 1.0


def test_synthetic_is_deterministic_and_structured():
    a_int, a_cat = generate(SIZES["tiny"], seed=1)
    b_int, b_cat = generate(SIZES["tiny"], seed=1)
    pd.testing.assert_frame_equal(a_int, b_int)
    pd.testing.assert_frame_equal(a_cat, b_cat)
    c_int, _ = generate(SIZES["tiny"], seed=2)
    assert not a_int.equals(c_int)
    assert not a_int.duplicated().any()
    spec = SyntheticSpec(n_users=300, n_items=200, interactions=6000, n_topics=5)
    inter, _ = generate(spec, seed=0)
    assert 0.85 * 6000 < len(inter) < 1.15 * 6000
    pop = inter["item_id"].value_counts().to_numpy()
    assert pop[:20].sum() > 3 * pop[-20:].sum()  # power-law popularity: a heavy head
    # plain English: every title word comes from one of the first topics' vocabularies, and
    # the description names that topic
    from models.data.vocabulary import TOPICS

    names = list(TOPICS)[: SIZES["tiny"].n_topics]
    for title, description in zip(a_cat["title"], a_cat["description"], strict=True):
        words = title.split(",")[0].lower().split()
        topic = next(n for n in names if set(words) <= set(TOPICS[n]))
        assert f" {topic} " in description, (title, description)


def test_movielens_loader(movielens_dir):
    from models.data.movielens import load_movielens

    interactions, catalog, queries = load_movielens(movielens_dir)
    assert len(interactions) == 100_836 and len(catalog) == 9_742 and len(queries) == 3_683
    toy = catalog[catalog["item_id"] == "1"].iloc[0]
    assert (
        toy["title"] == "Toy Story (1995)"
        and "Animation" in toy["genres"]
        and "pixar" in toy["tags"]
    )
    held = queries.index[queries["item_id"] == "1"]
    _, catalog2, _ = load_movielens(movielens_dir, exclude_tag_rows=held)
    assert catalog2[catalog2["item_id"] == "1"].iloc[0]["tags"] == ""


def test_movielens_missing_dir(tmp_path):
    from models.data.movielens import load_movielens

    with pytest.raises(DataError, match=r"ratings\.csv: not found"):
        load_movielens(tmp_path)


def test_idmap_lookup_reports_unknown():
    ids = IdMap(["a", "b"])
    found, unknown = ids.lookup(["b", "z", "a"])
    assert list(found) == [1, 0] and unknown == ["z"]
    with pytest.raises(ValueError):
        IdMap(["a", "a"])
    assert np.issubdtype(found.dtype, np.integer)

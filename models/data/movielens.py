"""MovieLens ml-latest-small (ratings.csv, movies.csv, tags.csv) in walrus' file formats.

Item text is title + genres + tags. Ratings stay explicit in ``interactions.csv``; the
``rating_threshold`` of the data config turns them into implicit positives at load time.
Tag applications become a query log (``user_id, query, item_id``): a user who tagged a movie
"twist ending" is read as having searched for that and found the movie.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from models.data.errors import DataError

FILES = ("ratings.csv", "movies.csv", "tags.csv")


def check_movielens_dir(path: str | Path) -> Path:
    """The directory if it holds the three ml-latest-small files, else ``DataError``."""
    path = Path(path)
    for name in FILES:
        if not (path / name).is_file():
            raise DataError(str(path / name), "not found: point at an ml-latest-small directory")
    return path


def load_movielens(
    path: str | Path, exclude_tag_rows: pd.Index | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return ``(interactions, catalog, queries)`` frames.

    interactions: ``user_id, item_id, rating, timestamp``; catalog: ``item_id, title, genres,
    tags, year`` (genres and year are attributes in configs/movielens.toml); queries:
    ``user_id, query, item_id, timestamp`` (one per tag application, index = row of
    tags.csv). ``exclude_tag_rows`` leaves those tag applications out of the item text, so
    held-out queries do not leak into what the model sees.
    """
    path = check_movielens_dir(path)
    ratings = pd.read_csv(path / "ratings.csv", dtype={"userId": str, "movieId": str})
    movies = pd.read_csv(path / "movies.csv", dtype={"movieId": str}, keep_default_na=False)
    tags = pd.read_csv(
        path / "tags.csv", dtype={"userId": str, "movieId": str}, keep_default_na=False
    )

    interactions = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    queries = tags.rename(columns={"userId": "user_id", "movieId": "item_id", "tag": "query"})
    queries["query"] = queries["query"].astype(str).str.strip()
    queries = queries[queries["query"] != ""]

    visible = queries if exclude_tag_rows is None else queries.drop(index=exclude_tag_rows)
    tag_text = (
        visible.assign(tag=visible["query"].str.lower())
        .drop_duplicates(["item_id", "tag"])
        .groupby("item_id")["tag"]
        .agg(", ".join)
    )
    catalog = pd.DataFrame(
        {
            "item_id": movies["movieId"],
            "title": movies["title"],
            "genres": movies["genres"]
            .str.replace("|", ", ", regex=False)
            .replace("(no genres listed)", ""),
        }
    )
    catalog["tags"] = catalog["item_id"].map(tag_text).fillna("")
    # The release year, from the title's "(1995)" (some titles have none: no value).
    catalog["year"] = catalog["title"].str.extract(r"\((\d{4})\)\s*$", expand=False).fillna("")
    return interactions, catalog, queries[["user_id", "query", "item_id", "timestamp"]]

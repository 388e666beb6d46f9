"""The ``walrus`` program as a user runs it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.support.tools import walrus


def test_train_and_eval_on_tiny(tiny_config, tmp_path):
    run = walrus("train", "wals", "-c", str(tiny_config), "--out", str(tmp_path / "wals"))
    assert run.returncode == 0, run.stderr
    for name in (
        "user_factors.npy",
        "item_factors.npy",
        "item_gramian.npy",
        "user_ids.json",
        "item_ids.json",
        "wals.json",
    ):
        assert (tmp_path / "wals" / name).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    run = walrus("eval", "-c", str(tiny_config), "--json", str(tmp_path / "e.json"))
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "e.json").read_text())["results"]
    assert {(r["split"], r["model"]) for r in results} >= {
        ("holdout", "wals"),
        ("users", "popularity"),
        ("cold_items", "wals"),
    }
    holdout = {r["model"]: r for r in results if r["split"] == "holdout"}
    assert holdout["wals"]["recall@20"] > holdout["popularity"]["recall@20"]
    assert "R@20" in run.stdout and "holdout" in run.stdout  # the table a person reads


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "wals", "-c", "nope.toml"], "config file not found"),
        (["train", "wals", "-c", "{cfg}", "--set", "wals.dim=0"], "wals.dim"),
        (["train", "wals", "-c", "{cfg}", "--set", "wals.solver=lu"], "wals.solver"),
        (
            ["train", "wals", "-c", "{cfg}", "--set", "data.interactions=/nonexistent.csv"],
            "file not found",
        ),
        (["eval", "-c", "{cfg}", "--models", "magic"], "unknown model 'magic'"),
        (["eval", "-c", "{cfg}", "--filter", "[1,"], "--filter: not JSON"),
        (["eval", "-c", "{cfg}", "--filter", "[1]"], "--filter: give a JSON object"),
        (["eval", "-c", "{cfg}", "--filter", '{{"colour": {{"eq": "red"}}}}'], "filter.colour"),
        (["data", "synthetic", "--size", "huge", "--out", "{tmp}/x"], "--size 'huge'"),
        (["data", "movielens", "--dir", "{tmp}", "--out", "{tmp}/y"], "ratings.csv: not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_config, tmp_path, args, message):
    args = [a.format(cfg=tiny_config, tmp=tmp_path) for a in args]
    run = walrus(*args)
    assert run.returncode == 2
    lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert message in lines[0]
    assert "Traceback" not in run.stderr


def test_bad_data_keeps_previous_artifact(tiny_config, tmp_path):
    out = tmp_path / "wals"
    assert walrus("train", "wals", "-c", str(tiny_config), "--out", str(out)).returncode == 0
    before = (out / "item_factors.npy").read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,weight\nu,i0,nan\n")
    run = walrus(
        "train",
        "wals",
        "-c",
        str(tiny_config),
        "--out",
        str(out),
        "--set",
        f"data.interactions={bad}",
    )
    assert run.returncode == 2 and "line 2, column 'weight'" in run.stderr
    assert (out / "item_factors.npy").read_bytes() == before


def test_data_synthetic_writes_files(tmp_path):
    run = walrus("data", "synthetic", "--size", "tiny", "--out", str(tmp_path / "d"))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "d" / "interactions.csv").stat().st_size > 0
    run = walrus("--help")
    assert run.returncode == 0 and "train" in run.stdout


def test_data_check_reads_tsv_and_reports_sizes(tmp_path):
    (tmp_path / "interactions.tsv").write_text(
        "user_id\titem_id\tweight\nu1\ti1\t2\nu1\ti2\t1\nu2\ti1\t1\n"
    )
    (tmp_path / "catalog.tsv").write_text(
        "item_id\ttitle\tshelf\tyear\tin_stock\tgenres\n"
        "i1\tSpace robots\tsf\t1999\tyes\tAction, Sci-Fi\n"
        "i2\tJazz night\tmusic\t2004\tno\tMusic\n"
        "i3\tCold one\tsf\t\tyes\tSci-Fi, Drama\n"
        "i4\tStar hymn\tsf\t2010\tno\tMusic, Sci-Fi\n"
    )
    (tmp_path / "c.toml").write_text(
        f'output_dir = "{tmp_path / "out"}"\n[data]\n'
        f'interactions = "{tmp_path / "interactions.tsv"}"\ncatalog = "{tmp_path / "catalog.tsv"}"\n'
        '[data.attributes]\nshelf = "categorical"\ngenres = "tags"\n'
    )
    run = walrus("data", "check", "-c", str(tmp_path / "c.toml"))
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "users": 2,
        "items": 4,
        "interactions": 3,
        "items_without_interactions": 2,
        "has_weights": True,
        "attributes": {
            "shelf": {"kind": "categorical", "values": 2},
            "genres": {"kind": "tags", "values": 4},
        },
        "suggested_kinds": {
            "title": "text",
            "shelf": "categorical",
            "year": "numeric",
            "in_stock": "boolean",
            "genres": "tags",
        },
    }
    (tmp_path / "interactions.tsv").write_text("user_id\titem_id\nu1\tnope\n")
    bad = walrus("data", "check", "-c", str(tmp_path / "c.toml"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "nope" in bad.stderr and len(bad.stderr.strip().splitlines()) <= 2

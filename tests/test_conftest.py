"""The suite's own rules: MovieLens tests skip on a laptop but fail in CI without the data."""

from __future__ import annotations

import pytest

from tests.support.tools import movielens_or_skip, tool_or_skip


def test_missing_movielens_skips_outside_ci(monkeypatch, tmp_path):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not set"):
        movielens_or_skip(None)
    with pytest.raises(pytest.skip.Exception, match=r"no ratings\.csv"):
        movielens_or_skip(str(tmp_path))


def test_missing_movielens_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the MovieLens tests"):
        movielens_or_skip(str(tmp_path))
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    assert movielens_or_skip(str(tmp_path)) == tmp_path


def test_a_missing_tool_skips_outside_ci_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no-such-tool is not installed \(apt-get"):
        tool_or_skip("no-such-tool", "apt-get install no-such-tool")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test"):
        tool_or_skip("no-such-tool", "apt-get install no-such-tool")
    assert tool_or_skip("sh", "").endswith("sh")

"""Compact ids: the serving map answers exactly as the dict-backed one, for every kind of
key, with no Python object per id."""

from __future__ import annotations

import numpy as np
import pytest

from models.core.ids import CompactIds, IdMap

IDS = ["u1", "u10", "u2", "007", "7", "ç", "naïve", "日本", "a b", "x" * 40, "u"]
PROBES = [*IDS, "u3", "0", "07", "u1 ", "ç0", "x" * 41, "x" * 39, "", "u\0", "日", "zz"]


def test_lookups_equal_the_dict_map_s():
    compact, oracle = CompactIds(IDS), IdMap(IDS)
    for probe in PROBES:
        assert (probe in compact) == (probe in oracle), probe
    got, unknown = compact.lookup(PROBES)
    want, want_unknown = oracle.lookup(PROBES)
    np.testing.assert_array_equal(got, want)
    assert unknown == want_unknown
    assert [compact.index(i) for i in IDS] == list(range(len(IDS)))
    assert [compact.ids[i] for i in range(len(IDS))] == IDS and compact.ids[2:4] == IDS[2:4]
    with pytest.raises(KeyError):
        compact.index("u3")


def test_many_ascii_ids_take_bytes_not_objects():
    ids = [f"u{i}" for i in range(100_000)]
    compact = CompactIds(ids)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, 120_000, size=2_000)
    keys = [f"u{p}" for p in picks]
    got, unknown = compact.lookup(keys)
    np.testing.assert_array_equal(got, picks[picks < 100_000])
    assert len(unknown) == int((picks >= 100_000).sum())
    assert compact.nbytes < 16 * len(ids)  # 7 bytes of id and an 8-byte index each
    assert compact._order.dtype == np.intp  # any other sorter is copied at every lookup


def test_duplicates_are_refused_and_empty_is_fine():
    with pytest.raises(ValueError, match="unique"):
        CompactIds(["a", "b", "a"])
    empty = CompactIds([])
    assert len(empty) == 0 and "a" not in empty and empty.lookup(["a"])[1] == ["a"]


def test_ids_starting_with_a_prefix_are_those_of_a_scan_in_byte_order():
    ids = ["u10", "u1", "u2", "b7", "u100", "ü9", "u"]
    compact = CompactIds(ids)
    for prefix in ("u1", "u", "", "ü", "x", "u100", "u1000"):
        expected = sorted((i for i in ids if i.startswith(prefix)), key=lambda i: i.encode())
        assert compact.starting_with(prefix, 100) == expected, prefix
    assert compact.starting_with("u", 2) == ["u", "u1"]
    assert compact.starting_with("u", 0) == [] and CompactIds([]).starting_with("u", 5) == []

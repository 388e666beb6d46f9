"""``service.api.decode``: a body into its public type, or ``InvalidInput`` naming the field
(the front's 422), checked without a server. The HTTP tests (tests/service/test_api.py)
check the same through uvicorn."""

from __future__ import annotations

import pytest

from service.api import InvalidInput, RecommendRequest, SimilarRequest, check, decode
from service.settings import Settings


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"k": 2.5}', "k"),
        (b'{"k": "5"}', "k"),
        (b'{"k": true}', "k"),
        (b'{"k": NaN}', "k"),
        (b'{"k": 1e999}', "k"),
        (rb'{"query": "\ud800 a"}', "query"),
        (rb'{"history": ["i1", "\udfff"]}', "history"),
        (b'{"query": "   "}', "query"),
        (b'{"user": "typo"}', "user"),
        (b'{"filter": {"year": {"lt": null}}}', "filter.year.lt"),
        (b'{"filter": {"year": {}}}', "filter.year"),
        (b'{"filter": {"item_id": {"in": [[], "i1"]}}}', "filter.item_id.in"),
        (b'{"filter": {"item_id": {"eq": "i1"}}}', "filter.item_id.eq"),
        (b'{"diversity": {"field": "topic"}}', "diversity"),
        (b'{"diversity": {"mmr": 0}}', "diversity"),
        (b"[1, 2]", "body"),
        (b"", "body"),
        (b"{not json", "body"),
    ],
)
def test_a_bad_body_names_its_field(raw, field):
    with pytest.raises(InvalidInput) as refused:
        decode(raw, RecommendRequest)
    assert refused.value.field == field, str(refused.value)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"k": 5.0, "query": "ok"}',  # JSON Schema's integer: 5.0 is one
        b'{"k": 3, "k": 4}',  # the last of duplicate keys wins, as in JSON readers
        b'\xef\xbb\xbf{"k": 2}',  # a UTF-8 byte-order mark
        '{"query": "caf\u00e9"}'.encode("utf-16"),
        b'{"filter": {"item_id": {"not_in": ["i1"]}}, "diversity": {"mmr": 0.5}}',
        b'{"diversity": {"field": "topic", "max_per_value": 2, "mmr": 0.3}}',
    ],
)
def test_a_good_body_decodes(raw):
    assert isinstance(decode(raw, RecommendRequest), RecommendRequest)


@pytest.mark.parametrize(
    "raw", [b'{"query": "caf\xe9"}', b'{"h": ' + b"[" * 5000 + b"]" * 5000 + b"}"]
)
def test_bytes_no_json_reader_takes_are_not_a_field_s_fault(raw):
    """Not UTF-8, or nested past the reader's depth: the front answers 400, not 422."""
    with pytest.raises((ValueError, RecursionError)):
        decode(raw, RecommendRequest)


def test_the_deployment_s_limits_are_checked_after_decoding():
    settings = Settings(limits={"k": 12, "offset": 10})
    check(decode(b'{"k": 12, "offset": 10}', SimilarRequest), settings)
    for raw, field in ((b'{"k": 13}', "k"), (b'{"offset": 11}', "offset")):
        with pytest.raises(InvalidInput) as refused:
            check(decode(raw, SimilarRequest), settings)
        assert refused.value.field == field

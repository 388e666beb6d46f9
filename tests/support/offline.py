"""Requests answered the offline way (what ``walrus eval`` runs: exact search, the numpy
head, the PyTorch encoder), to compare the service with."""

from __future__ import annotations

CASES = [
    {"user": 2, "query": "jazz", "k": 9, "exclude_seen": False},
    {"user": 0, "k": 8},
    {"query": "space robots", "k": 8},
    {"user": 3, "query": "a quiet family drama", "k": 10},
    {"history": ["i2", "i5", "i9"], "k": 6},
    {"user": 1, "history": ["i4"], "exclude": ["i7"], "k": 7},
    {"k": 5},
]


def offline(trained, case, encode=None):
    """What `walrus eval` computes: exact search, the numpy head; the PyTorch encoder unless
    ``encode`` gives another."""
    hybrid = trained.hybrid
    items = trained.dataset_items
    query = case.get("query")
    encode = encode or trained.encoder.encode
    request = hybrid.request(
        case["k"],
        user=case.get("user"),
        history=items.lookup(case.get("history", []))[0],
        exclude=items.lookup(case.get("exclude", []))[0],
        query_vector=encode([query])[0] if query else None,
        exclude_seen=case.get("exclude_seen", True),
    )
    rec = hybrid.recommend(request)
    return [items.ids[i] for i in rec.items], rec.scores, rec.sources


def request_body(trained, case):
    body = {"k": case["k"]}
    if "user" in case:
        body["user_id"] = trained.dataset_users.ids[case["user"]]
    for key in ("query", "history", "exclude", "exclude_seen"):
        if key in case:
            body[key] = case[key]
    return body

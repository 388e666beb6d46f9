"""Load test for the walrus service: a realistic mix of request kinds.

Weights: user only 40%, query only 25%, user + query 20%, history fold-in 15%. Queries are
drawn with Zipf-like repetition (a few popular queries, a long tail) from words of the
catalog's titles, as real query logs look. User and item ids come from the service itself
(``/v1/recommend`` with no input returns popular items; user ids are read from
``WALRUS_LOADTEST_USERS`` or default to the demo's ``u0..u1999``).

    locust -f bench/locustfile.py --headless --host http://127.0.0.1:8000 -u 8 -r 4 -t 30s
"""

from __future__ import annotations

import json
import os
import random
import urllib.request

from locust import HttpUser, between, events, task

RNG = random.Random(int(os.environ.get("WALRUS_LOADTEST_SEED", "0")))
STATE: dict[str, list[str]] = {"users": [], "items": [], "queries": []}


def zipf_choice(options: list[str], s: float = 1.1) -> str:
    """Rank r is drawn with probability proportional to 1 / r**s."""
    weights = [1.0 / (r + 1) ** s for r in range(len(options))]
    return RNG.choices(options, weights=weights, k=1)[0]


@events.test_start.add_listener
def discover(environment, **_kwargs):  # type: ignore[no-untyped-def]
    """Learn item ids and title words from the running service before the load starts."""

    host = environment.host
    n_users = int(os.environ.get("WALRUS_LOADTEST_N_USERS", "2000"))
    prefix = os.environ.get("WALRUS_LOADTEST_USER_PREFIX", "u")
    STATE["users"] = [f"{prefix}{i}" for i in range(n_users)]
    request = urllib.request.Request(
        f"{host}/v1/recommend",
        data=json.dumps({"k": 100}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    STATE["items"] = [it["item_id"] for it in body["items"]]
    words: list[str] = []
    for item in body["items"]:
        words += [w.strip("().,").lower() for w in item["title"].split() if len(w) > 3]
    words = list(dict.fromkeys(words)) or ["something"]
    STATE["queries"] = [
        " ".join(RNG.sample(words, k=min(len(words), RNG.randint(1, 3)))) for _ in range(200)
    ]


class RecommendUser(HttpUser):
    wait_time = between(0.0, 0.05)

    @task(40)
    def user_only(self) -> None:
        self.client.post(
            "/v1/recommend", json={"user_id": RNG.choice(STATE["users"]), "k": 10}, name="user"
        )

    @task(25)
    def query_only(self) -> None:
        self.client.post(
            "/v1/recommend", json={"query": zipf_choice(STATE["queries"]), "k": 10}, name="query"
        )

    @task(20)
    def user_and_query(self) -> None:
        body = {
            "user_id": RNG.choice(STATE["users"]),
            "query": zipf_choice(STATE["queries"]),
            "k": 10,
        }
        self.client.post("/v1/recommend", json=body, name="user+query")

    @task(15)
    def fold_in(self) -> None:
        history = RNG.sample(STATE["items"], k=min(5, len(STATE["items"])))
        self.client.post("/v1/recommend", json={"history": history, "k": 10}, name="history")

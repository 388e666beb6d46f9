"""POST /v1/events through real services and a real redis-server: events change the next
answer (on every replica), bad events are rejected one by one, and a Redis stopped under load
costs answers their events, never their 200."""

from __future__ import annotations

import concurrent.futures
from collections import Counter

import httpx
import pytest

from export.runtime import LoadOptions, load_bundle
from tests.support.redis import redis_or_skip
from tests.support.servers import Server, eventually, metric

pytestmark = pytest.mark.slow
UNUSED = "recent events were not used"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with redis_or_skip(tmp_path_factory.mktemp("redis")).start() as server:
        yield server


def events_on(bundle, redis_server, cli=False, **env):
    return Server(
        bundle,
        cli=cli,
        WALRUS_EVENTS__REDIS_URL=redis_server.url,
        WALRUS_EVENTS__REDIS_BREAKER_S="0.5",
        WALRUS_EVENTS__MAX_BATCH="50",
        **env,
    )


@pytest.fixture(scope="module")
def served(tiny_bundle, redis_server):
    with events_on(tiny_bundle, redis_server) as srv:
        srv.wait()
        yield srv, load_bundle(tiny_bundle, LoadOptions("cpu"))


def post(srv, path, body):
    return httpx.post(f"{srv.url}{path}", json=body, timeout=30)


def ranked(srv, **body):
    r = post(srv, "/v1/recommend", {"k": 10, **body})
    assert r.status_code == 200, r.text
    return r.json()


def ids(answer):
    return [i["item_id"] for i in answer["items"]]


def one_topic(bundle, n=5):
    """The most common topic's code and n of its items."""
    codes = bundle.attributes.columns["topic"].codes
    code = Counter(codes.tolist()).most_common(1)[0][0]
    return code, [bundle.items.ids[i] for i in range(len(codes)) if codes[i] == code][:n]


def test_a_new_user_s_five_events_give_them_that_topic(served):
    srv, bundle = served
    code, five = one_topic(bundle)
    codes = bundle.attributes.columns["topic"].codes
    user = "new-user-with-events"
    before = ranked(srv, user_id=user)
    assert any("unknown" in w for w in before["warnings"])
    events = [{"user_id": user, "item_id": item} for item in five]
    r = post(srv, "/v1/events", {"events": events})
    assert r.status_code == 202
    assert r.json() == {"accepted": 5, "attributed": 0, "rejected": []}
    after = ranked(srv, user_id=user)  # the very next answer: no wait
    assert after["warnings"] == [] and after["user_known"] is False
    assert ids(after) == ids(ranked(srv, history=five))  # events are history not sent
    assert not set(ids(after)) & set(five)  # exclude_seen covers events
    share = sum(codes[bundle.items.index(i)] == code for i in ids(after)) / 10
    share_before = sum(codes[bundle.items.index(i)] == code for i in ids(before)) / 10
    assert share >= 0.5 and share > share_before


def test_a_known_user_s_events_fold_in_with_their_training_items(served):
    srv, bundle = served
    user = bundle.users.ids[7]
    fresh = [i for i in bundle.items.ids[-40:] if i not in set(ids(ranked(srv, user_id=user)))][:3]
    assert post(srv, "/v1/events", {"events": [{"user_id": user, "item_id": i} for i in fresh]})
    after = ranked(srv, user_id=user)
    assert after["user_known"] is True
    assert ids(after) == ids(ranked(srv, user_id=user, history=fresh))


def test_bad_events_are_rejected_one_by_one_and_bad_batches_are_422(served):
    srv, bundle = served
    item = bundle.items.ids[0]
    batch = [
        {"user_id": "u-bad", "item_id": item, "weight": 2.0, "timestamp": 1_700_000_000},
        {"user_id": "u-bad", "item_id": "no-such-item"},
        {"user_id": "u-bad", "item_id": item, "weight": -1},
        {"user_id": "u-bad", "item_id": item, "type": "like"},
    ]
    r = post(srv, "/v1/events", {"events": batch})
    assert r.status_code == 202
    assert r.json()["accepted"] == 1
    assert [(x["index"], x["reason"].split()[0]) for x in r.json()["rejected"]] == [
        (1, "unknown"),
        (2, "weight"),
        (3, "unknown"),  # a type the bundle does not declare
    ]
    for body, field in (
        (
            {"events": [{"user_id": "u", "item_id": item}] * 51},
            "events",
        ),  # WALRUS_EVENTS__MAX_BATCH
        ({"events": []}, "events"),
        ({"events": [{"user_id": "u", "item_id": item, "weight": "heavy"}]}, "weight"),
        ({"events": [{"user_id": "", "item_id": item}]}, "user_id"),
        ({"events": [{"user_id": "u", "item_id": item, "type": "Click!"}]}, "type"),
        ({"events": [{"user_id": "u", "item_id": item, "position": 0}]}, "position"),
        ({"events": [{"user_id": "u", "item_id": item, "recommendation_id": ""}]}, "rec"),
    ):
        r = post(srv, "/v1/events", body)
        assert r.status_code == 422 and field in str(r.json()["detail"][0]["loc"]), r.text


def test_events_naming_an_answer_are_attributed_to_its_bundle_and_arm(served):
    srv, bundle = served
    user = "user-who-clicks"
    answer = ranked(srv, user_id=user)
    rec_id, shown = answer["recommendation_id"], ids(answer)
    assert answer["arm"] == "control" and answer["bundle_id"] == bundle.bundle_id
    similar = httpx.get(f"{srv.url}/v1/items/{shown[0]}/similar", timeout=30).json()
    assert similar["recommendation_id"] != rec_id and similar["arm"] == "control"
    ready = httpx.get(f"{srv.url}/readyz", timeout=30).json()
    assert ready["attribution"] == "ok" and ready["event_types"]["impression"] == 0.0
    before = httpx.get(f"{srv.url}/metrics", timeout=30).text
    label = f'arm="control",bundle_id="{bundle.bundle_id}"'  # the exposition sorts labels
    clicks = metric(before, f'walrus_online_events_total{{{label},type="click"}}')
    unshown = next(i for i in bundle.items.ids if i not in ids(similar) + shown[:3])
    events = [
        *({"user_id": user, "item_id": i, "type": "impression", "recommendation_id": rec_id,
           "position": p} for p, i in enumerate(shown[:3], 1)),
        {"user_id": user, "item_id": shown[1], "type": "click", "recommendation_id": rec_id},
        # Not in that answer, an id never issued, none: accepted, unattributed.
        {"user_id": user, "item_id": unshown, "type": "click",
         "recommendation_id": similar["recommendation_id"]},
        {"user_id": user, "item_id": shown[2], "type": "click",
         "recommendation_id": "0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b"},
        {"user_id": user, "item_id": shown[2], "type": "purchase"},
    ]  # fmt: skip
    r = post(srv, "/v1/events", {"events": events})
    assert r.status_code == 202 and r.json()["accepted"] == 7
    assert r.json()["attributed"] == 4  # three impressions and one click

    def counted() -> bool:  # a front rebuilds /metrics at most once a second
        text = httpx.get(f"{srv.url}/metrics", timeout=30).text
        return (
            metric(text, f'walrus_online_events_total{{{label},type="click"}}') == clicks + 1
            and metric(text, 'walrus_online_events_total{arm="",bundle_id="",type="click"}') >= 2
        )

    eventually(counted, 5, "the attributed click in /metrics")
    # Impressions are exposures, not interactions: the user's next answer folds in the
    # clicks and the purchase only.
    interactions = [shown[1], unshown, shown[2], shown[2]]
    assert ids(ranked(srv, user_id=user)) == ids(ranked(srv, history=interactions))


def test_redis_stopped_under_load_costs_events_not_answers(served, redis_server):
    srv, bundle = served
    _, five = one_topic(bundle)
    user = "user-through-an-outage"
    post(srv, "/v1/events", {"events": [{"user_id": user, "item_id": i} for i in five]})
    with_events = ids(ranked(srv, user_id=user))
    with httpx.Client(base_url=srv.url, timeout=30) as client:

        def load() -> list[tuple[int, list[str]]]:
            out = []
            for _ in range(40):
                r = client.post("/v1/recommend", json={"user_id": user, "k": 10})
                out.append((r.status_code, r.json().get("warnings", [])))
            return out

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = [pool.submit(load) for _ in range(2)]
            redis_server.stop()
            answers = [a for f in running for a in f.result()]
        assert {status for status, _ in answers} == {200}
        down = ranked(srv, user_id=user)
        assert any(UNUSED in w for w in down["warnings"])
        r = client.post("/v1/events", json={"events": [{"user_id": user, "item_id": five[0]}]})
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["events"].startswith("unavailable")
        assert ready.json()["degraded"]
        unavailable = 'walrus_events_total{outcome="unavailable"}'
        eventually(lambda: unavailable in client.get("/metrics").text, 5, "counted in /metrics")
        redis_server.start()
        eventually(lambda: client.get("/readyz").json()["events"] == "ok", 10, "breaker closes")
        again = ranked(srv, user_id=user)
        assert again["warnings"] == [] and ids(again) == with_events  # nothing acknowledged lost


def test_every_replica_sees_the_events_posted_through_any(served, tiny_bundle, redis_server):
    """A second service (`walrus serve`: two fronts, its own engine) on the same Redis."""
    srv, bundle = served
    with events_on(tiny_bundle, redis_server, cli=True, WALRUS_FRONT__WORKERS="2") as other:
        other.wait()
        _, five = one_topic(bundle)
        user = "user-seen-everywhere"
        r = post(other, "/v1/events", {"events": [{"user_id": user, "item_id": i} for i in five]})
        assert r.status_code == 202
        expected = ids(ranked(srv, history=five))
        assert ids(ranked(srv, user_id=user)) == expected
        for _ in range(4):  # whichever front answers
            assert ids(ranked(other, user_id=user)) == expected


def test_without_redis_there_is_no_events_route(client):
    r = client.post("/v1/events", json={"events": [{"user_id": "u", "item_id": "i"}]})
    assert r.status_code == 404
    assert client.get("/readyz").json()["events"] == "off"

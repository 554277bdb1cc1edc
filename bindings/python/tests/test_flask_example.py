"""The Flask example (examples/flask_app.py): a burst of requests, one paid call."""

import pathlib
import sys
import threading

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

from flask_app import PaidQuoteApi, create_app  # noqa: E402

from herdguard import Cache  # noqa: E402


def burst(app, path, n):
    results = []
    gate = threading.Barrier(n)

    def request():
        client = app.test_client()
        gate.wait()
        r = client.get(path)
        results.append((r.status_code, r.get_json()))

    threads = [threading.Thread(target=request) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(results) == n
    return results


def test_a_burst_of_requests_makes_one_paid_call():
    api = PaidQuoteApi(latency=0.2)
    app = create_app(api, Cache(ttl=30, codec="json"))
    results = burst(app, "/quote/acme", 50)
    assert api.calls == 1
    assert {status for status, _ in results} == {200}
    assert len({body["at"] for _, body in results}) == 1


def test_an_outage_is_one_call_and_a_502_for_every_request():
    api = PaidQuoteApi(latency=0.2)
    api.down = True
    app = create_app(api, Cache(ttl=30, codec="json", negative_ttl=5))
    results = burst(app, "/quote/acme", 30)
    assert api.calls == 1
    assert results == [(502, {"error": "quote API: 503 Service Unavailable"})] * 30
    # Negatively cached: the next request does not bill another call.
    assert app.test_client().get("/quote/acme").status_code == 502
    assert api.calls == 1


def test_with_redis_two_app_processes_share_the_call(redis_url):
    # Two apps stand in for two worker processes (two caches on one Redis).
    api = PaidQuoteApi(latency=0.2)
    apps = [create_app(api, Cache(ttl=30, codec="json", redis=redis_url)) for _ in range(2)]
    results = []
    threads = [threading.Thread(target=lambda a=a: results.extend(burst(a, "/quote/x", 20))) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert api.calls == 1
    assert len(results) == 40 and {s for s, _ in results} == {200}

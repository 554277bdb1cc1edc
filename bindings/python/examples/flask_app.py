"""A Flask view calling a paid API, guarded by herdguard: a burst of requests
for a cold or expired quote makes one API call, and an API outage is one
failed call answered to every waiting request.

    pip install flask herdguard
    HERDGUARD_REDIS=redis://127.0.0.1:6379/ flask --app flask_app run

With HERDGUARD_REDIS set, every worker process (gunicorn -w 8, or Rust
services on the same Redis) shares the one call per key.
"""

import json
import os
import time

from flask import Flask, jsonify

from herdguard import Cache, HerdguardError


class PaidQuoteApi:
    """Stands in for the metered HTTP API: 300 ms a call, billed per call."""

    def __init__(self, latency=0.3):
        self.latency = latency
        self.calls = 0
        self.down = False

    def quote(self, symbol):
        self.calls += 1
        time.sleep(self.latency)
        if self.down:
            raise ConnectionError("quote API: 503 Service Unavailable")
        return {"symbol": symbol, "price": 100 + len(symbol), "at": time.time()}


def create_app(api=None, cache=None):
    app = Flask(__name__)
    api = api or PaidQuoteApi()
    # Created in the worker process (after a fork), never at import in a master.
    cache = cache or Cache(
        ttl=30,
        ttl_jitter=0.1,
        stale_if_error=300,
        codec="json",
        redis=os.environ.get("HERDGUARD_REDIS"),
    )

    @cache.cached(key="quote:{symbol}")
    def quote(symbol):
        return api.quote(symbol)

    @app.get("/quote/<symbol>")
    def quote_view(symbol):
        try:
            return jsonify(quote(symbol.upper()))
        except ConnectionError as e:  # the API's own exception, in every waiter
            return jsonify({"error": str(e)}), 502
        except HerdguardError as e:
            return jsonify({"error": str(e)}), 503

    app.extensions["quote_api"] = api
    app.extensions["herdguard"] = cache
    return app


if __name__ == "__main__":
    print(json.dumps(create_app().test_client().get("/quote/abc").get_json()))

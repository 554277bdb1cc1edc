"""One Python process of a test fleet (the Python twin of the Rust
herdguard-redis-worker): connects a Cache to Redis, prints `ready`, then for
each stdin line

    go KEY          runs --callers threads of get_or_load(KEY) at once and
                    prints {"key", "loads", "values", "errors"} as JSON;
    invalidate KEY  invalidates KEY and prints {"invalidated": KEY}.

The loader takes --loader-ms and returns b"py-PID" (or --value)."""

import argparse
import json
import os
import sys
import threading
import time

from herdguard import Cache


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--loader-ms", type=int, default=200)
    parser.add_argument("--codec", default="bytes")
    parser.add_argument("--value", default=f"py-{os.getpid()}")
    args = parser.parse_args()

    cache = Cache(ttl=60, redis=args.url, codec=args.codec)
    value = args.value.encode() if args.codec == "bytes" else args.value
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, key = line.strip().partition(" ")
        if command == "invalidate":
            cache.invalidate(key)
            print(json.dumps({"invalidated": key}), flush=True)
            continue
        if command != "go":
            print(json.dumps({"error": f"unknown command {line!r}"}), flush=True)
            continue
        loads = []
        values = []
        errors = []
        gate = threading.Barrier(args.callers)

        def loader():
            loads.append(1)
            time.sleep(args.loader_ms / 1000)
            return value

        def caller():
            gate.wait()
            try:
                got = cache.get_or_load(key, loader)
                values.append(got.decode() if isinstance(got, bytes) else got)
            except Exception as e:  # reported, and the test fails on it
                errors.append(repr(e))

        threads = [threading.Thread(target=caller) for _ in range(args.callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(
            json.dumps({"key": key, "loads": len(loads), "values": sorted(set(values)), "errors": errors}),
            flush=True,
        )


if __name__ == "__main__":
    main()

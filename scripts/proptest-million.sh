#!/usr/bin/env bash
# The property tests of herdguard-http's parsers (Cache-Control, Vary, HTTP-date,
# request-target normaliser) with 10^6 generated inputs per property; CI runs
# proptest's default 256. Usage: scripts/proptest-million.sh [cases, default 1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
CASES="${1:-1000000}"
echo "proptest: $CASES cases per property (release build)" >&2
time PROPTEST_CASES="$CASES" cargo test --release --locked -p herdguard-http --test properties -- --test-threads 2

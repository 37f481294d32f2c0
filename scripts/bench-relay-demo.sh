#!/usr/bin/env bash
# relay-demo benchmark (DESIGN §10, issue 5). Not a test: prints figures for
# docs/benchmarks/relay-demo.md.
#
#   scripts/bench-relay-demo.sh                 # 20,000 memories per user (100,000 total)
#   PER_USER=2000 DURATION=10s scripts/bench-relay-demo.sh   # quick run
#
# Steps, all on this machine, loopback only, bounded in time:
#   1. index:  build the 5 per-tenant HNSW graphs in-process; build time, recall@10 vs exact
#              search, ANN vs exact search latency.
#   2. serve:  start `relay-demo serve --seed` with the same corpus; time to ready, RSS.
#   3. load:   32 concurrent SSE query streams for $DURATION (Rust client, real SSE parser):
#              throughput, query latency and TTFV p50/p95/p99; the same in JSON mode.
#   4. anchor: `hey` at the same concurrency against /healthz of the same process (the HTTP
#              floor of this machine at that moment) and against the JSON query endpoint, so
#              the query figures can be read as a ratio to the anchor measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."

PER_USER=${PER_USER:-20000}
QUERIES=${QUERIES:-200}
CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-20s}
PORT=${PORT:-18480}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
export RELAY_JWT_SECRET=${RELAY_JWT_SECRET:-bench-secret}

echo "== machine: $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo build --release -p relay-demo --quiet
cargo bench -p relay-demo --bench relay_load --no-run --quiet 2>/dev/null
BENCH=$(cargo bench -p relay-demo --bench relay_load --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*relay_load[^"]*"' | tail -1 | cut -d'"' -f4)
BIN="$CARGO_TARGET_DIR/release/relay-demo"

echo "== 1. index: $PER_USER memories per user"
"$BENCH" index --per-user "$PER_USER" --queries "$QUERIES"

echo "== 2. serve --seed --seed-per-user $PER_USER"
LOG=$(mktemp)
started=$(date +%s.%N)
"$BIN" serve --profile fast --seed --seed-per-user "$PER_USER" --listen "127.0.0.1:$PORT" --version-label bench \
  2>"$LOG" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 1800); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.2
done
ready=$(date +%s.%N)
grep -o 'seed data loaded.*' "$LOG" | sed 's/\x1b\[[0-9;]*m//g' || true
printf 'ready after %.1f s\n' "$(echo "$ready - $started" | bc)"
rss() { awk '/^(VmRSS|VmHWM)/ {printf "%s %d MiB  ", $1, $2/1024}' "/proc/$SERVER/status"; echo; }
echo -n "server memory after seeding: "; rss

echo "== 3. load: $CONCURRENCY concurrent streams for $DURATION"
"$BENCH" load --url "http://127.0.0.1:$PORT" --concurrency "$CONCURRENCY" --duration 3s >/dev/null  # warm-up
"$BENCH" load --url "http://127.0.0.1:$PORT" --concurrency "$CONCURRENCY" --duration "$DURATION"
"$BENCH" load --url "http://127.0.0.1:$PORT" --concurrency "$CONCURRENCY" --duration "$DURATION" --json
echo -n "server memory after load: "; rss

echo "== 4. anchor: hey -c $CONCURRENCY -z $DURATION"
TOKEN=$("$BIN" tokens | head -1 | cut -d= -f2-)
echo "-- hey GET /healthz (anchor)"
hey -c "$CONCURRENCY" -z "$DURATION" "http://127.0.0.1:$PORT/healthz" \
  | grep -E 'Requests/sec|Average|95% in|99% in|\[2'
echo "-- hey POST /api/v1/memory/query (JSON mode)"
hey -c "$CONCURRENCY" -z "$DURATION" -m POST -T application/json \
  -H "Authorization: Bearer $TOKEN" -H "Accept: application/json" \
  -d '{"query":"when is the trip to Lisbon","user_id":"user_1","top_k":24,"timeout_ms":5000}' \
  "http://127.0.0.1:$PORT/api/v1/memory/query" \
  | grep -E 'Requests/sec|Average|95% in|99% in|\[2|\[5'
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^(memory_rerank_skipped_total|memory_chunks_row_count|sse_total|sse_complete_total)'

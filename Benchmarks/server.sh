#!/usr/bin/env bash
# Server benchmarks: end-to-end noop throughput from an NDJSON upload to
# `completed`, and GET /v1/batches/{id} latency with wrk while a
# 1,000,000-item batch runs. Prints a Markdown table; asserts nothing.
#
#   swift build -c release --product tranche
#   Benchmarks/server.sh [ITEMS]     (TRANCHE_BIN=path picks another binary)
set -euo pipefail
cd "$(dirname "$0")/.."
items=${1:-1000000}
bin=${TRANCHE_BIN:-.build/release/tranche}
work=$(mktemp -d)
server=
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }

python3 - "$items" > "$work/items.ndjson" <<'PY'
import sys
w = sys.stdout.write
for i in range(int(sys.argv[1])):
    w('{"id":%d,"email":"user%d@example.com"}\n' % (i, i))
PY

$bin serve --database "$work/bench.db" --port 18090 > "$work/serve.log" 2>&1 &
server=$!
until curl -sf localhost:18090/healthz > /dev/null; do sleep 0.2; done

now() { date +%s.%N; }
id=$(curl -s -X POST localhost:18090/v1/batches -H 'Content-Type: application/json' -d '{"type":"noop","options":{"chunk_size":1000}}' | jq -r .id)
start=$(now)
curl -s -X POST "localhost:18090/v1/batches/$id/items?start_seq=0" -H 'Content-Type: application/x-ndjson' \
    --data-binary @"$work/items.ndjson" > /dev/null
uploaded=$(now)
curl -s -X POST "localhost:18090/v1/batches/$id/seal" > /dev/null
until [ "$(curl -s "localhost:18090/v1/batches/$id" | jq -r .status)" = completed ]; do sleep 0.05; done
done_at=$(now)
rss=$(grep VmHWM "/proc/$server/status" | awk '{print int($2/1024)}')

# A long-running batch to read while it runs.
slow=$(curl -s -X POST localhost:18090/v1/batches \
    -H 'Content-Type: application/json' -d '{"type":"sleep","context":{"ms":1},"options":{"chunk_size":1000,"concurrency":16}}' | jq -r .id)
curl -s -X POST "localhost:18090/v1/batches/$slow/items?start_seq=0" -H 'Content-Type: application/x-ndjson' \
    --data-binary @"$work/items.ndjson" > /dev/null
curl -s -X POST "localhost:18090/v1/batches/$slow/seal" > /dev/null
wrk -t1 -c4 -d15s --latency "http://127.0.0.1:18090/v1/batches/$slow" > "$work/wrk.txt"
p99=$(awk '/^ +99%/ {print $2}' "$work/wrk.txt")
p50=$(awk '/^ +50%/ {print $2}' "$work/wrk.txt")
rps=$(awk '/^Requests\/sec/ {print int($2)}' "$work/wrk.txt")

python3 - "$items" "$start" "$uploaded" "$done_at" "$rss" "$p50" "$p99" "$rps" <<'PY'
import sys
items, start, uploaded, done, rss, p50, p99, rps = sys.argv[1:]
items = int(items); start, uploaded, done = float(start), float(uploaded), float(done)
print("| measurement | result |")
print("|---|---|")
print(f"| NDJSON upload of {items:,} noop items to `completed`, durable | {items / (done - start):,.0f} items/s ({done - start:.2f} s; upload alone {uploaded - start:.2f} s), server peak RSS {rss} MiB |")
print(f"| `GET /v1/batches/{{id}}` under a running {items:,}-item batch, wrk 1 thread 4 connections 15 s | {int(rps):,} requests/s, p50 {p50}, p99 {p99} |")
PY

#!/usr/bin/env bash
# Pace benchmark: a 400-item `tranche run --url` batch at concurrency 32
# against a loopback API that allows 20 requests a second (at most 20 in
# any one-second window) and answers 429 above that. Runs it adaptive
# (the default for --url) and fixed at a rate that guesses too high
# (50/s), and prints a Markdown table: throughput, share of the allowance
# reached, requests refused, dead items, one row per run. Asserts nothing.
#
#   swift build --product tranche
#   Benchmarks/pace.sh [ITEMS] [RUNS]     (TRANCHE_BIN=path picks another binary)
set -euo pipefail
cd "$(dirname "$0")/.."
items=${1:-400}
runs=${2:-1}
bin=$(realpath "${TRANCHE_BIN:-.build/debug/tranche}")
work=$(mktemp -d)
api=
trap 'kill $api 2>/dev/null || true; rm -rf "$work"' EXIT

python3 -c "import sys; [print('{\"n\":%d}' % i) for i in range(int(sys.argv[1]))]" "$items" > "$work/items.ndjson"

# The API: 20 requests in any one-second window, 429 above; counts both.
cat > "$work/api.py" <<'PY'
import collections, http.server, json, sys, threading, time
lock = threading.Lock()
window = collections.deque()
counts = {"ok": 0, "refused": 0, "first": None, "last_ok": None}
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_GET(self):
        body = json.dumps(counts).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        now = time.monotonic()
        with lock:
            while window and now - window[0] >= 1.0: window.popleft()
            allowed = len(window) < 20
            if allowed: window.append(now)
            counts["ok" if allowed else "refused"] += 1
            if counts["first"] is None: counts["first"] = now
            if allowed: counts["last_ok"] = now
        self.send_response(200 if allowed else 429)
        self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{}")
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY

run() { # name, extra flags...
    local name=$1; shift
    python3 "$work/api.py" > "$work/port" &
    api=$!
    until [ -s "$work/port" ]; do sleep 0.05; done
    local port; port=$(cat "$work/port")
    local start end
    start=$(date +%s.%N)
    (cd "$work" && "$bin" run --input items.ndjson --url "http://127.0.0.1:$port/item" \
        --concurrency 32 --max-attempts 20 --quiet --json --state "$name.tranche.db" "$@" > "$name.json" || true)
    end=$(date +%s.%N)
    curl -s "http://127.0.0.1:$port/" > "$work/$name.counts"
    kill $api; wait $api 2>/dev/null || true; rm -f "$work/port" "$work/$name".tranche.db*
    python3 - "$name" "$items" "$start" "$end" "$work/$name.counts" "$work/$name.json" "$*" <<'PY'
import json, sys
name, items, start, end, counts, summary, flags = sys.argv[1:]
items, elapsed = int(items), float(end) - float(start)
counts = json.load(open(counts))
requests = counts["ok"] + counts["refused"]
try:
    report = json.load(open(summary))
    dead = report.get("counts", report).get("dead", "?")
except Exception:
    dead = "?"
rate = counts["ok"] / elapsed
active = counts["ok"] / max(1e-9, counts["last_ok"] - counts["first"]) if counts["last_ok"] else 0
print(f"| {name} (`{flags}`) | {elapsed:.1f} s | {rate:.1f}/s ({rate / 20:.0%} of 20/s) | "
      f"{active:.1f}/s ({active / 20:.0%}) | "
      f"{counts['refused']} of {requests} ({counts['refused'] / max(1, requests):.1%}) | {dead} |")
PY
}

echo "| run | time | succeeded calls over the whole command | from the first call to the last success | refused (429) | dead items |"
echo "|---|---|---|---|---|---|"
for _ in $(seq "$runs"); do run adaptive --pace adaptive; done
for _ in $(seq "$runs"); do run fixed --pace fixed --rate 50/s; done

#!/usr/bin/env bash
# REST benchmark: tensorserve vs KServe's Python ModelServer computing the same function, same wrk, one run.
#
# Needs wrk (Debian) and a Python with kserve (set KSERVE_PYTHON, default python3).
# Usage: benches/rest_load.sh [SECONDS] [CONNECTIONS]   (wrk -t2; 8 connections for the image payload)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-64}
PY=${KSERVE_PYTHON:-python3}
PORT_TS=${PORT_TS:-18501}
PORT_KS=${PORT_KS:-18080}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
cargo build --release --bin tensorserve >&2
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo '{"instances": [[2.0]]}' > "$WORK/small.json"
python3 -c "
import json, random
random.seed(0)
img = [[[[round(random.random(), 4) for _ in range(3)] for _ in range(224)] for _ in range(224)]]
json.dump({'instances': img}, open('$WORK/image.json', 'w'))"
for f in small image; do
  cat > "$WORK/$f.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local fh = io.open("$WORK/$f.json", "rb")
wrk.body = fh:read("*a")
fh:close()
LUA
done

RUST_LOG=warn target/release/tensorserve --port 0 --rest_api_port "$PORT_TS" --grpc_bind_address 127.0.0.1 --model_base_path examples/models/half_plus_two --model_name half_plus_two &
"$PY" benches/kserve_peer.py "$PORT_KS" >/dev/null 2>&1 &
for _ in $(seq 1 150); do
  curl -sf -o /dev/null "http://127.0.0.1:$PORT_TS/v1/models/half_plus_two" \
    && curl -sf -o /dev/null "http://127.0.0.1:$PORT_KS/v1/models/half_plus_two" && break
  sleep 0.2
done
# Both must compute the same answer before they are timed.
curl -sf -d @"$WORK/small.json" "http://127.0.0.1:$PORT_TS/v1/models/half_plus_two:predict"; echo
curl -sf -H "Content-Type: application/json" -d @"$WORK/small.json" "http://127.0.0.1:$PORT_KS/v1/models/half_plus_two:predict"; echo

declare -A RPS
for payload in small image; do
  for server in tensorserve kserve; do
    port=$PORT_TS; [ "$server" = kserve ] && port=$PORT_KS
    conns=$CONNS; [ "$payload" = image ] && conns=8
    out=$(wrk -t2 -c"$conns" -d"${SECS}s" --latency -s "$WORK/$payload.lua" "http://127.0.0.1:$port/v1/models/half_plus_two:predict")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $4}')
    printf '%-6s %-12s req/s=%-10s p50=%-8s p99=%-8s non-2xx=%s\n' "$payload" "$server" "$rps" "$p50" "$p99" "${non2xx:-0}"
    RPS[$payload-$server]=$rps
  done
  awk -v a="${RPS[$payload-tensorserve]}" -v b="${RPS[$payload-kserve]}" -v p="$payload" 'BEGIN {printf "%-6s ratio tensorserve/kserve = %.1fx\n", p, a / b}'
done
